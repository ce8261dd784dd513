"""Where each token is: the five positional schemes the explorer supports.

- sinusoidal: fixed sin/cos table added to the embeddings (Vaswani et al. 2017).
- learned: a trained [n_ctx, d_model] table added to the embeddings (GPT-2, BERT).
- rope: rotary position embedding of queries and keys (Su et al. 2021), in the
  ``rotate_half`` convention of Llama/transformers, with a configurable base.
- alibi: a per-head linear distance penalty on the scores (Press et al. 2022).
- relative: T5's learned bias per bucketed relative distance (Raffel et al. 2020).

The first two act on the residual stream; the other three act inside attention. Shapes:
n query positions, m key positions, h heads, d d_head, D d_model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The fixed tables below are computed on the CPU even inside a ``torch.device("meta")``
# context (where loaders build models before assigning weights): they are derived from the
# config, not loaded, and torch's meta ``arange`` imports its compiler stack on first use
# (over 1 s once per process). ``model.to(device)`` moves them like any buffer.
CPU = torch.device("cpu")


def sinusoidal_table(n_ctx: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """[n_ctx, d_model]: PE[p, 2i] = sin(p / base^(2i/D)), PE[p, 2i+1] = cos(same)."""
    position = torch.arange(n_ctx, dtype=torch.float64, device=CPU)[:, None]
    inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64, device=CPU) / d_model)
    table = torch.zeros(n_ctx, d_model, dtype=torch.float64, device=CPU)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table.float()


class SinusoidalPositions(nn.Module):
    """Adds nothing trainable: looks up rows of `sinusoidal_table`."""

    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(n_ctx, d_model), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


class LearnedPositions(nn.Embedding):
    """A trained table of absolute positions, [n_ctx, d_model] (``weight``)."""


def rope_inv_freq(d_head: int, base: float = 10000.0) -> torch.Tensor:
    """[d_head / 2] rotation speeds base^(-2i/d)."""
    return 1.0 / base ** (torch.arange(0, d_head, 2, dtype=torch.float32, device=CPU) / d_head)


class Rotary(nn.Module):
    """Cos/sin tables for rotary embeddings: rotation angle of pair i at position p is p * f_i.

    Pairs are (i, i + d/2) (the ``rotate_half`` convention), so cos and sin are [n, d]
    with the d/2 frequencies repeated twice. Applied by `explorer.nn.attention.apply_rotary`.
    """

    def __init__(self, d_head: int, base: float = 10000.0) -> None:
        super().__init__()
        self.d_head, self.base = d_head, base
        self.register_buffer("inv_freq", rope_inv_freq(d_head, base), persistent=False)

    def forward(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [n] -> cos, sin [n, d], computed in float32 then cast to ``dtype``."""
        inv_freq = self.inv_freq
        if inv_freq.dtype not in (torch.float32, torch.float64):
            # model.to(bfloat16) also casts this buffer; rounded speeds give wrong angles
            inv_freq = rope_inv_freq(self.d_head, self.base).to(inv_freq.device)
        angles = positions.to(inv_freq.dtype)[:, None] * inv_freq[None, :]  # [n, d/2]
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """[h] head slopes: the geometric sequence 2^(-8/h), 2^(-16/h), ... (Press et al. 2022).

    For a head count that is not a power of two, the slopes of the next lower power of two
    are followed by every other slope of the next higher one, as in the paper's code.
    """

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two_slopes(n_heads))
    lower = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two_slopes(2 * lower)[0::2][: n_heads - lower]
    return torch.tensor(power_of_two_slopes(lower) + extra)


def alibi_bias(slopes: torch.Tensor, n: int, m: int | None = None) -> torch.Tensor:
    """[1, h, n, m] additive bias -slope * |i - j| (queries are the last n of m positions)."""
    m = n if m is None else m
    q_pos = torch.arange(m - n, m, device=slopes.device)[:, None]
    distance = (q_pos - torch.arange(m, device=slopes.device)[None, :]).abs()
    return -(slopes[:, None, None] * distance)[None]


def relative_position_bucket(
    relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's bucket of each relative position (key - query): exact when near, log-spaced far.

    Half the buckets (all, when causal) cover distances 0..num_buckets/2 exactly; the rest
    cover up to ``max_distance`` logarithmically; anything further shares the last bucket.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    far = max_exact + (
        torch.log(distance.float().clamp(min=1) / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).long()
    far = torch.clamp(far, max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, far)


class RelativePositionBias(nn.Module):
    """T5 relative attention bias: an embedding [num_buckets, h] looked up per (i, j)."""

    def __init__(self, n_heads: int, num_buckets: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.bidirectional, self.num_buckets, self.max_distance = (
            bidirectional, num_buckets, max_distance,
        )
        self.weight = nn.Parameter(torch.zeros(num_buckets, n_heads))

    def forward(self, n: int, m: int | None = None) -> torch.Tensor:
        """[1, h, n, m] bias for the last n of m positions."""
        m = n if m is None else m
        q_pos = torch.arange(m - n, m, device=self.weight.device)[:, None]
        k_pos = torch.arange(m, device=self.weight.device)[None, :]
        buckets = relative_position_bucket(
            k_pos - q_pos, self.bidirectional, self.num_buckets, self.max_distance
        )
        return self.weight[buckets].permute(2, 0, 1)[None]  # [n, m, h] -> [1, h, n, m]
