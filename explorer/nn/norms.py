"""Normalisation layers: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019).

RMSNorm drops LayerNorm's mean subtraction and bias (Llama, T5). Both compute their
statistics in at least float32 (half precision is upcast, float64 stays float64), as the
reference implementations do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from explorer.config import ModelConfig


def _stats_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs, the input's own dtype for float32/float64."""
    return torch.promote_types(x.dtype, torch.float32)


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dimension."""

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _stats_dtype(x)
        out = F.layer_norm(x.to(dtype), x.shape[-1:], self.weight.to(dtype),
                           None if self.bias is None else self.bias.to(dtype), self.eps)
        return out.to(x.dtype)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension."""

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(_stats_dtype(x))
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


NORMS = {
    "layernorm": lambda cfg: LayerNorm(cfg.d_model, cfg.norm_eps, bias=cfg.norm_bias),
    "rmsnorm": lambda cfg: RMSNorm(cfg.d_model, cfg.norm_eps),
}


def build_norm(cfg: ModelConfig) -> nn.Module:
    """The norm ``cfg.norm`` names, sized and configured from ``cfg``."""
    return NORMS[cfg.norm](cfg)
