"""Transformer Explorer: our own transformer implementation, its loaders and analyses."""

from explorer.config import ModelConfig
from explorer.device import available_devices, pick_device
from explorer.models import EMBEDDED_MODELS, LoadedModel, load

__all__ = [
    "EMBEDDED_MODELS",
    "LoadedModel",
    "ModelConfig",
    "available_devices",
    "load",
    "pick_device",
]

from explorer.generation import GenerationStep, chat_ids, generate

__all__ += ["GenerationStep", "chat_ids", "generate"]
