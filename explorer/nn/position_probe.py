"""Probing how a model uses position: a layer's real queries and keys, and forwards with the
positional information switched off or every position shifted.

- `layer_qk`: one layer's queries and keys for a stored ``resid_pre``, before and after the
  rotary embedding (Su et al. 2021), with the mask and scale the layer's attention uses, so
  that ``softmax(scale * q k^T + mask)`` is the layer's pattern (`Stack.layer_pattern`).
- `probe_forward`: the self-attention stack (a decoder's or an encoder's) on token ids with
  any positions per batch row (absolute embeddings, rotary angles, ALiBi / relative biases
  and local windows all follow them) and the causal mask on or off. With every token at one
  position and no causal mask, self-attention is permutation-equivariant (Vaswani et al.
  2017 add positions for exactly this reason); shifting positions leaves offset-only schemes
  (RoPE, ALiBi, T5's bias: Su et al. 2021, Press et al. 2022, Raffel et al. 2020) unchanged
  and changes absolute ones. One batch holds several variants: one forward for a check.

These only call the model's modules; nothing is left registered on the shared model. Shapes:
b batch (1 here), n positions, D d_model, h query heads, d d_head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from explorer.nn.attention import (
    additive_mask,
    apply_rotary,
    causal_mask,
    combine_masks,
    repeat_kv,
)
from explorer.nn.capture import ActivationCache, Capture, NameFilter
from explorer.nn.model import EncoderDecoderTransformer, Stack
from explorer.nn.positional import relative_position_bucket


def self_attention_stack(model: nn.Module) -> Stack:
    """The stack whose self-attention reads the prompt: the model, or an encoder-decoder's
    encoder."""
    return model.encoder if isinstance(model, EncoderDecoderTransformer) else model


@dataclass(frozen=True)
class LayerQK:
    """One layer's queries and keys for a prompt (key heads repeated to the query heads)."""

    q: Tensor  # [h, n, d] as attention uses them (rotated under RoPE)
    k: Tensor  # [h, n, d]
    q_raw: Tensor  # [h, n, d] before the rotary embedding (equal to q without RoPE)
    k_raw: Tensor  # [h, n, d]
    bias: Tensor | None  # [h or 1, n, n] additive mask (-inf where a key is hidden), or None
    scale: float

    def scores(self) -> Tensor:
        """[h, n, n] pre-softmax scores scale * q k^T + bias."""
        scores = self.scale * (self.q @ self.k.transpose(-1, -2))
        return scores if self.bias is None else scores + self.bias

    def pattern(self) -> Tensor:
        """[h, n, n] the attention pattern (softmax of `scores`, in at least float32)."""
        scores = self.scores()
        return torch.softmax(scores, -1, dtype=torch.promote_types(scores.dtype, torch.float32))


@torch.no_grad()
def layer_qk(stack: Stack, layer: int, resid_pre: Tensor) -> LayerQK:
    """Queries and keys of ``stack.blocks[layer]`` for resid_pre [1, n, D], as `Attention` makes
    them: the block's attention input, the q/k projections, then the rotary angles of
    positions 0..n-1 (the mask and the rotary angles come from `Stack.attention_inputs`)."""
    n = resid_pre.shape[1]
    inputs = stack.attention_inputs(n, 0, resid_pre.device, resid_pre.dtype, explicit_mask=True)
    block = stack.blocks[layer]
    attn = block.attn
    q_raw, k_raw, _ = attn.project(block.attention_input(resid_pre))  # [1, h, n, d], [1, g, n, d]
    k_raw = repeat_kv(k_raw, attn.n_heads // attn.n_kv_heads)
    q, k = q_raw, k_raw
    if inputs["rope"] is not None:
        cos_q, sin_q, cos_k, sin_k = inputs["rope"]
        q, k = apply_rotary(q_raw, cos_q, sin_q), apply_rotary(k_raw, cos_k, sin_k)
    mask = inputs["mask"]
    bias = None
    if mask is not None:
        bias = additive_mask(mask, q.dtype)
        bias = bias.reshape(-1, n, n)  # [n, n] or [1, h, n, n] -> [1 or h, n, n]
    scale = attn.scale if attn.scale is not None else 1.0 / math.sqrt(attn.d_head)
    return LayerQK(q[0], k[0], q_raw[0], k_raw[0], bias, scale)


def _embed(model: nn.Module, ids: Tensor, positions: Tensor) -> Tensor:
    """The first residual stream [b, n, D] for ids [b, n] at positions [b, n]
    (`explorer.nn.model.Embeddings` with a position per row, without its capture)."""
    embed = model.embed
    x = embed.tokens(ids)
    if embed.positions is not None:
        x = x + embed.positions(positions).to(x.dtype)
    if embed.token_types is not None:
        x = x + embed.token_types(torch.zeros_like(ids))
    return x if embed.norm is None else embed.norm(x)


def _position_masks(stack: Stack, positions: Tensor, dtype: torch.dtype) -> Tensor | None:
    """ALiBi or relative bias [b, h, n, n] and local window [b, 1, n, n] of positions [b, n]:
    what `Stack.attention_inputs` builds for 0..n-1, here for any positions per row."""
    offset = positions[:, None, :] - positions[:, :, None]  # [b, n, n] key - query
    bias, window = None, None
    if stack.alibi_slopes is not None:
        bias = -(stack.alibi_slopes[None, :, None, None] * offset.abs()[:, None]).to(dtype)
    elif stack.rel_bias is not None:
        rel = stack.rel_bias
        buckets = relative_position_bucket(offset, rel.bidirectional, rel.num_buckets,
                                           rel.max_distance)
        bias = rel.weight[buckets].permute(0, 3, 1, 2).to(dtype)  # [b, n, n, h] -> [b, h, n, n]
    if stack.cfg.window is not None:
        window = (offset.abs() <= stack.cfg.window)[:, None]
        if stack.causal:
            window = window & (offset <= 0)[:, None]
    return combine_masks(window, bias)


@torch.no_grad()
def probe_forward(
    model: nn.Module,
    ids: Tensor,
    *,
    positions: Tensor | None = None,
    causal: bool | None = None,
    names: NameFilter = ("blocks.*.resid_post", "blocks.*.attn.pattern"),
) -> ActivationCache:
    """Run the self-attention stack on ids [b, n] with each row at its own ``positions``
    [b, n] (default 0..n-1); returns the captured activations, named relative to the stack
    (``blocks.{i}.resid_post``, ``blocks.{i}.attn.pattern``...).

    Every positional signal follows ``positions``: absolute embeddings, rotary angles, ALiBi
    or relative biases and the local window. All tokens at one position (zeros) carry no
    positional information at all: rotations by 0, one bias for every pair, the same table
    row added to every token. Positions 0..n-1 plus k shift the prompt by k. ``causal`` None
    keeps the stack's own masking; False lets every token see every other (a causal mask
    tells a token how many came before it, so it is positional information too).
    """
    stack = self_attention_stack(model)
    cfg = stack.cfg
    b, n = ids.shape
    if positions is None:
        positions = torch.arange(n, device=ids.device)
    positions = positions.to(ids.device, torch.long).expand(b, n)
    if model.embed.positions is not None and int(positions.max()) >= cfg.n_ctx:
        raise ValueError(f"position {int(positions.max())} exceeds the table of {cfg.n_ctx}")
    x = _embed(model, ids, positions)
    rope = None
    if stack.rotary is not None:
        cos, sin = stack.rotary(positions.flatten(), x.dtype)  # [b * n, d]
        cos, sin = cos.view(b, 1, n, -1), sin.view(b, 1, n, -1)
        rope = (cos, sin, cos, sin)
    causal = stack.causal if causal is None else causal
    mask = combine_masks(causal_mask(n, device=ids.device) if causal and n > 1 else None,
                         _position_masks(stack, positions, x.dtype))
    capture = Capture(names)
    for i, block in enumerate(stack.blocks):
        x = block(x, rope=rope, mask=mask, capture=capture, prefix=f"blocks.{i}.")
    return capture.cache
