"""Low-rank adaptation (Hu et al. 2021): W x + (alpha / r) B A x with A [r, in], B [out, r].

`LoRALinear` is the tutorials' ``LinearWithLoRA``: it wraps an existing ``nn.Linear``,
freezes it, and trains only A and B. B starts at zero, so a fresh adapter changes nothing.
`merge` folds B A into the wrapped weight (no extra cost at inference); `unmerge` undoes it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``rank`` update scaled by alpha / rank."""

    def __init__(self, linear: nn.Linear, rank: int = 4, alpha: float = 32.0) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"rank must be positive, got {rank}")
        self.linear = linear
        self.linear.requires_grad_(False)
        self.scaling = alpha / rank
        factory = {"device": linear.weight.device, "dtype": linear.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, linear.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(linear.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False

    @property
    def delta_weight(self) -> torch.Tensor:
        """[out, in]: the update (alpha / r) B A this adapter adds to the weight."""
        return self.scaling * self.lora_B @ self.lora_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        if self.merged:
            return out
        return out + self.scaling * (x @ self.lora_A.T) @ self.lora_B.T

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into the wrapped weight; forward then costs one matmul."""
        if not self.merged:
            self.linear.weight += self.delta_weight
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update again, restoring the original weight."""
        if self.merged:
            self.linear.weight -= self.delta_weight
            self.merged = False
