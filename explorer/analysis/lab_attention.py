"""The attention lab's computations: scaled dot-product attention step by step, why the
scores are divided by sqrt(d_k), the three masks, and multi-head attention split into heads
and back (Vaswani et al. 2017, sections 3.2.1-3.2.3).

Every number comes from `explorer.nn.attention`, the code that runs the real models: the
weights and outputs from its `scaled_dot_product_attention`, the masks from its
`causal_mask` / `local_window_mask` / `padding_mask`, a head split from an `Attention`
module's own projections. The intermediate steps (raw scores, scaled, masked) are the same
products that function fuses into one call, shown one at a time.

Shapes: n queries, m keys, d d_k (d_head), D d_model, h heads, g key/value heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from explorer.nn.attention import (
    Attention,
    additive_mask,
    attention_pattern,
    causal_mask,
    local_window_mask,
    padding_mask,
    repeat_kv,
    scaled_dot_product_attention,
)

MASKS = ("none", "padding", "causal", "local window")
# Which family uses which mask (the tutorials' three families, and sliding-window decoders).
MASK_USES = {
    "padding": "Every family when sequences of different lengths share a batch; an encoder "
               "(BERT, MiniLM, T5's encoder) needs nothing else: every token sees every "
               "other real token.",
    "causal": "Decoders (GPT-2, Llama, SmolLM2) and T5's decoder: a token sees itself and "
              "the tokens before it, never the future it is trained to predict.",
    "local window": "Sliding-window models (Mistral, Longformer's local heads): a token sees "
                    "only tokens within the window, so cost grows with n, not n².",
}


# --------------------------------------------------------------------------- one attention


@dataclass(frozen=True)
class AttentionSteps:
    """Every tensor of softmax(q kᵀ · scale + mask) v for one head."""

    q: torch.Tensor  # [n, d]
    k: torch.Tensor  # [m, d]
    v: torch.Tensor  # [m, d]
    scores: torch.Tensor  # [n, m] q kᵀ
    scaled: torch.Tensor  # [n, m] q kᵀ · scale
    masked: torch.Tensor  # [n, m] scaled + mask (-inf where a key is hidden)
    weights: torch.Tensor  # [n, m] softmax of masked; rows sum to 1
    out: torch.Tensor  # [n, d] weights @ v
    scale: float
    allowed: torch.Tensor | None  # [n, m] bool, True where query i may see key j


def attention_steps(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    allowed: torch.Tensor | None = None, scale: float | None = None
                    ) -> AttentionSteps:
    """Scaled dot-product attention of q [n, d] over k, v [m, d] with a bool mask [n, m]."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.T
    scaled = scores * scale
    masked = scaled if allowed is None else scaled + additive_mask(allowed, scaled.dtype)
    out, weights = scaled_dot_product_attention(q[None, None], k[None, None], v[None, None],
                                                mask=allowed, scale=scale)
    return AttentionSteps(q, k, v, scores, scaled, masked, weights[0, 0], out[0, 0], scale,
                          allowed)


def random_qkv(n: int, d: int, seed: int, m: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [n, d], k and v [m, d] drawn from N(0, 1) with a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    m = n if m is None else m
    return (torch.randn(n, d, generator=gen), torch.randn(m, d, generator=gen),
            torch.randn(m, d, generator=gen))


def mask_pattern(kind: str, n: int, padding: int = 0, window: int = 1) -> torch.Tensor | None:
    """Bool [n, n], True where query i sees key j, for a kind in `MASKS` ("none": None).

    ``padding``: how many of the n positions at the end are padding (no query sees them; a
    padding query still sees the real tokens, whose rows are what matters). ``window``: a
    local window's reach, |i - j| <= window (`explorer.nn.attention.local_window_mask`).
    """
    if kind == "none":
        return None
    if kind == "padding":
        real = torch.ones(1, n, dtype=torch.long)
        if padding:
            real[0, n - min(padding, n - 1):] = 0  # at least one real token stays
        return padding_mask(real)[0, 0].expand(n, n).clone()
    if kind == "causal":
        return causal_mask(n)
    if kind == "local window":
        return local_window_mask(n, window)
    raise ValueError(f"unknown mask {kind!r}; expected one of {MASKS}")


# --------------------------------------------------------------------------- why sqrt(d_k)


def softmax_stats(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(largest weight, entropy in nats) of each row of attention weights [..., m]."""
    logs = torch.where(weights > 0, weights.log(), torch.zeros_like(weights))
    return weights.max(-1).values, -(weights * logs).sum(-1)


@dataclass(frozen=True)
class ScalingCurves:
    """Mean largest weight and entropy of softmax(q·k) rows over random q, k, per d_k."""

    d_k: list[int]
    max_weight: dict[str, list[float]]  # "scaled by 1/sqrt(d_k)" / "not scaled" -> per d_k
    entropy: dict[str, list[float]]
    score_std: dict[str, list[float]]  # spread of the scores the softmax sees
    n_keys: int


SCALED, UNSCALED = "scaled by 1/√d_k", "not scaled"


def scaling_curves(d_values: list[int], n_keys: int = 16, n_queries: int = 64,
                   seed: int = 0) -> ScalingCurves:
    """For each d_k, ``n_queries`` random queries over ``n_keys`` random keys (entries
    N(0, 1), so q·k has variance d_k): the softmax with and without the 1/sqrt(d_k)."""
    out: dict[str, dict[str, list[float]]] = {
        stat: {SCALED: [], UNSCALED: []} for stat in ("max", "entropy", "std")}
    for d in d_values:
        q, k, _ = random_qkv(n_queries, d, seed + d, m=n_keys)
        for name, scale in ((SCALED, 1.0 / math.sqrt(d)), (UNSCALED, 1.0)):
            weights = attention_pattern(q[None], k[None], scale=scale)[0]
            top, entropy = softmax_stats(weights)
            out["max"][name].append(float(top.mean()))
            out["entropy"][name].append(float(entropy.mean()))
            out["std"][name].append(float((q @ k.T * scale).std()))
    return ScalingCurves(list(d_values), out["max"], out["entropy"], out["std"], n_keys)


# --------------------------------------------------------------------------- multi-head


@dataclass(frozen=True)
class HeadSplit:
    """One `Attention` module's forward taken apart: d_model into heads and back."""

    x: torch.Tensor  # [n, D] input
    q_flat: torch.Tensor  # [n, h·d] x W_qᵀ, before the split
    q: torch.Tensor  # [h, n, d]
    k: torch.Tensor  # [g, n, d]
    v: torch.Tensor  # [g, n, d]
    pattern: torch.Tensor  # [h, n, n]
    z: torch.Tensor  # [h, n, d] each head's weighted sum of values
    concat: torch.Tensor  # [n, h·d] heads side by side again
    out: torch.Tensor  # [n, D] concat W_oᵀ


@torch.no_grad()
def split_heads(attn: Attention, x: torch.Tensor, causal: bool = True) -> HeadSplit:
    """Run ``attn`` on x [n, D] step by step with its own weights (no positions: the lab's
    tiny model has none inside attention). ``out`` equals ``attn(x)``."""
    q, k, v = attn.project(x[None])  # [1, h, n, d], [1, g, n, d]
    n_rep = attn.n_heads // attn.n_kv_heads
    mask = causal_mask(x.shape[0]) if causal else None
    z, pattern = scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep),
                                              mask=mask, scale=attn.scale)
    concat = rearrange(z, "1 h n d -> n (h d)")
    return HeadSplit(x, attn.q(x), q[0], k[0], v[0], pattern[0], z[0], concat, attn.o(concat))
