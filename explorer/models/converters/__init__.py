"""Weight converters, one per architecture family, in a registry keyed by family name.

`converter_for(hf_config)` picks the converter whose ``model_types`` include the
checkpoint's ``model_type``; an unknown architecture gets an error naming the supported
ones. `convert(hf_config, tensors)` returns our `ModelConfig` and state dict.
"""

from __future__ import annotations

from explorer.config import ModelConfig
from explorer.models.converters.base import CheckpointError, Converter, Tensors
from explorer.models.converters.bert import BERT
from explorer.models.converters.clip import CLIP
from explorer.models.converters.gpt2 import GPT2
from explorer.models.converters.llama import LLAMA
from explorer.models.converters.t5 import T5
from explorer.models.converters.vit import VIT

CONVERTERS: dict[str, Converter] = {c.family: c for c in (LLAMA, GPT2, BERT, T5, VIT, CLIP)}
MODEL_TYPES: dict[str, str] = {t: c.family for c in CONVERTERS.values() for t in c.model_types}


class UnsupportedArchitecture(CheckpointError):
    """A checkpoint of an architecture no converter handles."""


def supported_architectures() -> dict[str, str]:
    """{family: description} of every registered converter (for pickers and errors)."""
    return {family: c.description for family, c in CONVERTERS.items()}


def converter_for(hf_config: dict) -> Converter:
    """The converter registered for ``hf_config["model_type"]``."""
    model_type = str(hf_config.get("model_type", "")).lower()
    if model_type not in MODEL_TYPES:
        arch = hf_config.get("architectures") or model_type or "unknown"
        supported = ", ".join(f"{f} ({', '.join(c.model_types)})" for f, c in CONVERTERS.items())
        raise UnsupportedArchitecture(
            f"architecture {arch!r} (model_type {model_type!r}) is not supported; "
            f"supported families: {supported}"
        )
    return CONVERTERS[MODEL_TYPES[model_type]]


def convert(hf_config: dict, tensors: Tensors) -> tuple[ModelConfig, Tensors]:
    """(ModelConfig, our state dict) from a transformers config dict and its raw tensors."""
    converter = converter_for(hf_config)
    cfg = converter.config(hf_config, frozenset(tensors))
    return cfg, converter.weights(cfg, tensors)


__all__ = [
    "CONVERTERS",
    "CheckpointError",
    "Converter",
    "UnsupportedArchitecture",
    "convert",
    "converter_for",
    "supported_architectures",
]
