"""What every weight converter shares: the `Converter` record and shape-checked tensor access.

A converter turns a checkpoint written for transformers (its ``config.json`` as a dict and
its raw tensors keyed by transformers' names) into our `ModelConfig` and a state dict keyed
by our parameter names (listed in `explorer.nn.model`). Every tensor it takes is checked
against the shape the config implies, so a mismatched checkpoint fails loudly, naming the
tensor, instead of producing a silently wrong model (the habit of nanoGPT's
``from_pretrained``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from explorer.config import ModelConfig

Tensors = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint whose config or tensors do not describe a model we can build."""


@dataclass(frozen=True)
class Converter:
    """One architecture family: which ``model_type`` values it reads and how.

    ``config(hf_config, tensor_names) -> ModelConfig`` (the names tell optional heads
    apart); ``weights(cfg, tensors) -> our state dict``. When
    ``cfg.tied_embeddings`` the returned state dict has no ``head.unembed.weight``: the
    loader ties it to ``embed.tokens.weight``.
    """

    family: str
    model_types: tuple[str, ...]
    description: str
    config: Callable[[dict, frozenset[str]], ModelConfig]
    weights: Callable[[ModelConfig, Tensors], Tensors]


class TensorSource:
    """Checked access to a checkpoint's tensors under an optional name prefix.

    ``take(name, *shape)`` returns the tensor and asserts its shape; ``leftover()`` lists
    the tensors nobody took, so converters can say what they ignored.
    """

    def __init__(self, tensors: Tensors, prefixes: tuple[str, ...] = ("",)) -> None:
        self.tensors = tensors
        self.prefix = next(
            (p for p in prefixes if p and any(k.startswith(p) for k in tensors)), ""
        )
        self.taken: set[str] = set()

    def has(self, name: str) -> bool:
        return self.prefix + name in self.tensors or name in self.tensors

    def key(self, name: str) -> str:
        return self.prefix + name if self.prefix + name in self.tensors else name

    def take(self, name: str, *shape: int) -> torch.Tensor:
        key = self.key(name)
        if key not in self.tensors:
            raise CheckpointError(f"checkpoint is missing tensor {self.prefix + name!r}")
        tensor = self.tensors[key]
        if tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"tensor {key!r} has shape {tuple(tensor.shape)}, expected {shape}"
            )
        self.taken.add(key)
        return tensor

    def leftover(self) -> list[str]:
        return sorted(set(self.tensors) - self.taken)


def hf_rope_base(hf: dict, default: float = 10000.0) -> float:
    """RoPE base from either transformers 4 (``rope_theta``) or 5 (``rope_parameters``)."""
    params = hf.get("rope_parameters") or {}
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(hf.get("rope_theta", default))


def check_rope_scaling(hf: dict) -> None:
    """We implement plain RoPE only; refuse scaled variants instead of running them wrong."""
    scaling = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind not in ("default", None):
        raise CheckpointError(f"RoPE scaling {kind!r} is not supported (only plain RoPE)")


def require(hf: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in hf]
    if missing:
        raise CheckpointError(f"config.json is missing {missing}")


# transformers' activation names -> ours (explorer.nn.mlp.ACTIVATIONS)
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "quick_gelu": "quick_gelu",
}


def hf_activation(name: str) -> str:
    if name not in HF_ACTIVATIONS:
        raise CheckpointError(
            f"activation {name!r} is not supported; supported: {sorted(HF_ACTIVATIONS)}"
        )
    return HF_ACTIVATIONS[name]
