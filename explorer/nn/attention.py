"""Scaled dot-product attention (Vaswani et al. 2017) and the multi-head attention module.

Dimension letters used in shapes: b batch, h query heads, g key/value heads (grouped-query
attention, Ainslie et al. 2023), n query positions, m key positions, d d_head, D d_model.

`scaled_dot_product_attention` is the explicit math, used whenever someone wants to see the
pattern. When nobody does, `Attention` calls torch's fused kernel instead; both give the
same output (tests/unit/test_nn_attention.py checks it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from explorer.config import ModelConfig

if TYPE_CHECKING:
    from explorer.nn.capture import Capture
    from explorer.nn.kv_cache import LayerKV


def attention_pattern(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask): the pattern [b, h, n, m] for q [b, h, n, d], k [b, h, m, d].

    ``mask`` broadcasts to [b, h, n, m] and follows torch's convention: a bool mask is True
    where attention is allowed, a float mask is added to the scores. ``scale`` defaults to
    1/sqrt(d) (T5 passes 1.0). The softmax runs in at least float32 (float64 stays float64).
    A query the mask forbids every key (a left-padding position) gets a row of zeros, not
    NaN, as torch's fused kernel does; every other row sums to 1.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    *batch, n, d = q.shape
    m = k.shape[-2]
    q3, k3 = q.reshape(-1, n, d), k.reshape(-1, m, d).transpose(1, 2)
    # One GEMM computes scale * q k^T + bias (baddbmm's alpha and beta), so neither the
    # scaling nor the mask costs another pass over the n x m scores (eager attention makes
    # three: the product, the scaling and the mask).
    if mask is None:
        scores = torch.baddbmm(q3.new_empty(()), q3, k3, beta=0.0, alpha=scale)
    else:
        bias = additive_mask(mask, q.dtype).expand(*batch, n, m).reshape(-1, n, m)
        scores = torch.baddbmm(bias, q3, k3, alpha=scale)
    scores = scores.view(*batch, n, m)
    softmax_dtype = torch.promote_types(scores.dtype, torch.float32)
    pattern = torch.softmax(scores, dim=-1, dtype=softmax_dtype)
    # A fully masked row's softmax is NaN in every column; make it zero. Looking at the
    # first column finds such rows in O(n) instead of a pass over the n x m mask.
    if mask is not None and pattern[..., :1].isnan().any():
        pattern = pattern.nan_to_num(nan=0.0)
    return pattern.to(q.dtype)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + mask) v, returning the output and the pattern.

    q: [b, h, n, d]; k, v: [b, h, m, d]; mask and scale as in `attention_pattern`.
    Returns out [b, h, n, d] and pattern [b, h, n, m] whose rows sum to 1.
    """
    pattern = attention_pattern(q, k, mask, scale)
    return torch.matmul(pattern, v), pattern


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A mask as a bias added to the scores: a bool mask (True = allowed) becomes 0 / -inf,
    a float mask is already one."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        mask.logical_not(), float("-inf"))


def causal_mask(n: int, m: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Bool [n, m], True where query i may see key j: j <= i + (m - n).

    With ``m > n`` the queries are the last n of m positions (decoding with a KV cache).
    """
    m = n if m is None else m
    q_pos = torch.arange(m - n, m, device=device)[:, None]
    return torch.arange(m, device=device)[None, :] <= q_pos


def local_window_mask(
    n: int,
    window: int,
    causal: bool = False,
    m: int | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Bool [n, m], True where |i - j| <= window (and j <= i when causal).

    The tutorials' ``local_attention`` loops over queries and slices a window of keys
    around each; this is the same set of allowed keys as one mask, so the window is just
    another mask for the ordinary attention. Queries are the last n of m positions.
    """
    m = n if m is None else m
    q_pos = torch.arange(m - n, m, device=device)[:, None]
    distance = q_pos - torch.arange(m, device=device)[None, :]
    allowed = distance.abs() <= window
    return allowed & (distance >= 0) if causal else allowed


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Bool [b, 1, 1, m] from a HF-style [b, m] mask of 1 (real token) and 0 (padding)."""
    return rearrange(attention_mask.bool(), "b m -> b 1 1 m")


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Combine bool masks (logical and) and float biases (sum) into one additive bias.

    Returns None when every mask is None, a bool mask when all given masks are bool, and
    otherwise a float tensor with -inf where any bool mask forbids attention.
    """
    given = [m for m in masks if m is not None]
    if not given:
        return None
    bools = [m for m in given if m.dtype == torch.bool]
    floats = [m for m in given if m.dtype != torch.bool]
    allowed = None
    for m in bools:
        allowed = m if allowed is None else allowed & m
    if not floats:
        return allowed
    bias = floats[0]
    for f in floats[1:]:
        bias = bias + f
    if allowed is not None:
        bias = bias.masked_fill(~allowed, float("-inf"))
    return bias


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[b, g, m, d] -> [b, g * n_rep, m, d]; query head h reads key/value head h // n_rep."""
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + d/2) of x [b, h, n, d] by the angles in cos, sin [n, d]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # rotate_half
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Multi-head, grouped-query or cross attention with q/k/v/o projections.

    Parameters: q [h*d, D], k and v [g*d, D], o [D, h*d] (``nn.Linear`` layout), with
    optional biases. Position information arrives from outside: rotary angles (``rope``)
    and an additive/bool ``mask`` (causal, padding, window, ALiBi, relative bias), so one
    module serves every positional scheme.
    """

    def __init__(self, cfg: ModelConfig, cross: bool = False) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.d_head = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
        self.cross = cross
        self.scale = None if cfg.attn_scale else 1.0
        self.q = nn.Linear(cfg.d_model, cfg.n_heads * cfg.d_head, bias=cfg.qkv_bias)
        self.k = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.d_head, bias=cfg.qkv_bias)
        self.v = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.d_head, bias=cfg.qkv_bias)
        self.o = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model, bias=cfg.out_bias)

    def project(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [b, h, n, d], k and v [b, g, m, d] for inputs x [b, n, D] (context [b, m, D]).

        ``rope`` is (cos_q, sin_q, cos_k, sin_k), each [n or m, d].
        """
        source = x if context is None else context
        q = rearrange(self.q(x), "b n (h d) -> b h n d", d=self.d_head)
        k = rearrange(self.k(source), "b m (g d) -> b g m d", d=self.d_head)
        v = rearrange(self.v(source), "b m (g d) -> b g m d", d=self.d_head)
        if rope is not None:
            cos_q, sin_q, cos_k, sin_k = rope
            q, k = apply_rotary(q, cos_q, sin_q), apply_rotary(k, cos_k, sin_k)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        *,
        context: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, ...] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        kv: LayerKV | None = None,
        capture: Capture | None = None,
        prefix: str = "",
    ) -> torch.Tensor:
        """x [b, n, D] -> [b, n, D].

        ``is_causal`` says the mask is exactly causal, so the fused kernel can apply it
        itself; ``mask`` may then still carry it explicitly for the pattern path.

        ``kv`` (one layer of a KVCache) receives the new keys/values and supplies the past
        ones; for cross-attention it keeps the first call's context keys/values and reuses
        them (the encoder output is fixed while decoding). ``capture`` records
        ``{prefix}pattern`` (and q/k/v/z when asked).
        """
        edit = capture.edit if capture is not None else None
        if self.cross and kv is not None and kv.cross is not None:
            # The encoder output does not change while decoding: its keys/values are reused
            # (edited, if asked, on the first step that computed them).
            q = rearrange(self.q(x), "b n (h d) -> b h n d", d=self.d_head)
            q = edit(prefix + "q", q) if edit else q
            k, v = kv.cross
        else:
            q, k, v = self.project(x, context, rope)
            if edit:  # before the cache, so later steps read the edited keys/values
                q, k, v = (edit(prefix + name, t) for name, t in zip("qkv", (q, k, v),
                                                                      strict=True))
            if kv is not None and self.cross:
                kv.cross = (k, v)
            elif kv is not None:
                k, v = kv.append(k, v)
        n_rep = self.n_heads // self.n_kv_heads
        want_pattern = capture is not None and capture.touches(prefix + "pattern")
        if capture is not None:
            capture.save(prefix + "q", q)
            capture.save(prefix + "k", k)
            capture.save(prefix + "v", v)
        if want_pattern:
            if is_causal and mask is None:
                mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
            pattern = capture.through(prefix + "pattern",
                                      attention_pattern(q, repeat_kv(k, n_rep), mask, self.scale))
            z = torch.matmul(pattern, repeat_kv(v, n_rep))
        else:
            z = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if is_causal else mask, is_causal=is_causal,
                scale=self.scale, enable_gqa=n_rep > 1,
            )
        if capture is not None:
            z = capture.through(prefix + "z", z)
        return self.o(rearrange(z, "b h n d -> b n (h d)"))

    def pattern(
        self,
        x: torch.Tensor,
        *,
        context: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, ...] | None = None,
        mask: torch.Tensor | None = None,
        capture: Capture | None = None,
        prefix: str = "",
    ) -> torch.Tensor:
        """Only the attention pattern [b, h, n, m] for (already normalised) inputs.

        Lets a view recompute one layer's pattern from a stored residual stream instead of
        keeping every layer's n x m matrices in memory. ``capture``'s edits of
        ``{prefix}q``, ``k`` and ``pattern`` apply as in the forward.
        """
        q, k, _ = self.project(x, context, rope)
        if capture is not None:
            q, k = capture.edit(prefix + "q", q), capture.edit(prefix + "k", k)
        pattern = attention_pattern(q, repeat_kv(k, self.n_heads // self.n_kv_heads), mask,
                                    self.scale)
        return pattern if capture is None else capture.edit(prefix + "pattern", pattern)
