"""Transformer Explorer: our own transformer implementation, its loaders and analyses."""

from explorer.config import ModelConfig
from explorer.device import available_devices, pick_device
from explorer.export import SavedRun, load_run, save_run
from explorer.generation import GenerationStep, chat_ids, generate
from explorer.models import EMBEDDED_MODELS, LoadedModel, load
from explorer.runs import logit_lens

__all__ = [
    "EMBEDDED_MODELS",
    "GenerationStep",
    "LoadedModel",
    "ModelConfig",
    "SavedRun",
    "available_devices",
    "chat_ids",
    "generate",
    "load",
    "load_run",
    "logit_lens",
    "pick_device",
    "save_run",
]
