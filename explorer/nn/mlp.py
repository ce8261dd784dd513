"""Feed-forward sub-layers: plain, gated and sparse mixture-of-experts.

- `MLP`: down(act(up(x))), the position-wise feed-forward of Vaswani et al. 2017 (ReLU) and
  GPT-2/BERT (GELU).
- `GatedMLP`: down(act(gate(x)) * up(x)), GLU variants (Shazeer 2020): SwiGLU (Llama),
  GeGLU (T5 v1.1).
- `SparseMoE`: a router picks the top-k of several expert MLPs per token and mixes their
  outputs with renormalised router probabilities (Shazeer et al. 2017; the tutorials'
  ``SparseMoE``). Its routing weights can be captured.

Shapes: b batch, n positions, D d_model, F d_mlp, E experts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from explorer.config import ModelConfig

if TYPE_CHECKING:
    from explorer.nn.capture import Capture

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # CLIP's sigmoid approximation
}


class MLP(nn.Module):
    """up [F, D] -> activation -> down [D, F]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.act = ACTIVATIONS[cfg.activation]
        self.up = nn.Linear(cfg.d_model, cfg.d_mlp, bias=cfg.mlp_bias)
        self.down = nn.Linear(cfg.d_mlp, cfg.d_model, bias=cfg.mlp_bias)

    def forward(
        self, x: torch.Tensor, capture: Capture | None = None, prefix: str = ""
    ) -> torch.Tensor:
        hidden = self.act(self.up(x))  # [b, n, F]
        if capture is not None:
            hidden = capture.through(prefix + "post", hidden)
        return self.down(hidden)


class GatedMLP(nn.Module):
    """gate and up [F, D], down [D, F]: down(act(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.act = ACTIVATIONS[cfg.activation]
        self.gate = nn.Linear(cfg.d_model, cfg.d_mlp, bias=cfg.mlp_bias)
        self.up = nn.Linear(cfg.d_model, cfg.d_mlp, bias=cfg.mlp_bias)
        self.down = nn.Linear(cfg.d_mlp, cfg.d_model, bias=cfg.mlp_bias)

    def forward(
        self, x: torch.Tensor, capture: Capture | None = None, prefix: str = ""
    ) -> torch.Tensor:
        hidden = self.act(self.gate(x)) * self.up(x)  # [b, n, F]
        if capture is not None:
            hidden = capture.through(prefix + "post", hidden)
        return self.down(hidden)


class SparseMoE(nn.Module):
    """``n_experts`` MLPs and a linear router; each token runs through its top-k experts."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.top_k = cfg.experts_top_k
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=cfg.mlp_bias)
        self.experts = nn.ModuleList(MLP(cfg) for _ in range(cfg.n_experts))

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router probabilities [..., E], chosen experts [..., k] and their weights [..., k].

        The weights are the chosen probabilities renormalised to sum to 1 per token. The
        softmax runs in at least float32 (float64 stays float64).
        """
        logits = self.router(x)
        softmax_dtype = torch.promote_types(logits.dtype, torch.float32)
        probs = torch.softmax(logits, dim=-1, dtype=softmax_dtype)
        top_probs, top_experts = probs.topk(self.top_k, dim=-1)
        weights = top_probs / top_probs.sum(-1, keepdim=True)
        return probs.to(x.dtype), top_experts, weights.to(x.dtype)

    def forward(
        self, x: torch.Tensor, capture: Capture | None = None, prefix: str = ""
    ) -> torch.Tensor:
        probs, top_experts, weights = self.route(x)
        if capture is not None:
            capture.save(prefix + "router_probs", probs)
            capture.save(prefix + "experts", top_experts)
            capture.save(prefix + "expert_weights", weights)
        flat_x = x.reshape(-1, x.shape[-1])  # [b*n, D]
        flat_experts = top_experts.reshape(-1, self.top_k)
        flat_weights = weights.reshape(-1, self.top_k)
        out = torch.zeros_like(flat_x)
        for e, expert in enumerate(self.experts):
            token_idx, slot = (flat_experts == e).nonzero(as_tuple=True)
            if token_idx.numel():
                contribution = expert(flat_x[token_idx]) * flat_weights[token_idx, slot, None]
                out.index_add_(0, token_idx, contribution)
        return out.reshape(x.shape)


MLPS = {"gelu": MLP, "relu": MLP, "swiglu": GatedMLP, "geglu": GatedMLP, "moe": SparseMoE}


def build_mlp(cfg: ModelConfig) -> nn.Module:
    """The feed-forward sub-layer ``cfg.mlp`` names."""
    return MLPS[cfg.mlp](cfg)
