"""Probing how a model uses position: a layer's real queries and keys, and forwards with the
positional information switched off or every position shifted.

- `layer_qk`: one layer's queries and keys for a stored ``resid_pre``, before and after the
  rotary embedding (Su et al. 2021), with the mask and scale the layer's attention uses, so
  that ``softmax(scale * q k^T + mask)`` is the layer's pattern (`Stack.layer_pattern`).
- `probe_forward`: the self-attention stack (a decoder's or an encoder's) on token ids with
  absolute positions, rotary angles, ALiBi / relative biases and local windows either all on
  (optionally every position moved by ``shift``) or all off, and the causal mask on or off.
  With everything off and no causal mask, self-attention is permutation-equivariant
  (Vaswani et al. 2017 add positions for exactly this reason); shifting positions leaves
  offset-only schemes (RoPE, ALiBi, T5's bias: Su et al. 2021, Press et al. 2022, Raffel et
  al. 2020) unchanged and changes absolute ones.

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
    local_window_mask,
    repeat_kv,
)
from explorer.nn.capture import ActivationCache, Capture, NameFilter
from explorer.nn.model import EncoderDecoderTransformer, Stack
from explorer.nn.positional import alibi_bias


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


def _embed(model: nn.Module, ids: Tensor, positions: Tensor | None) -> Tensor:
    """The first residual stream [1, n, D], with absolute positions only when ``positions``
    is given (`explorer.nn.model.Embeddings` without its capture)."""
    embed = model.embed
    x = embed.tokens(ids)
    if positions is not None and embed.positions is not None:
        x = x + embed.positions(positions).to(x.dtype)
    if embed.token_types is not None:
        x = x + embed.token_types(torch.zeros_like(ids))
    return x if embed.norm is None else embed.norm(x)


@torch.no_grad()
def probe_forward(
    model: nn.Module,
    ids: Tensor,
    *,
    positions: bool = True,
    causal: bool | None = None,
    shift: int = 0,
    names: NameFilter = ("blocks.*.resid_post", "blocks.*.attn.pattern"),
) -> ActivationCache:
    """Run the self-attention stack on ids [1, n]; returns the captured activations (names
    relative to the stack: ``blocks.{i}.resid_post``, ``blocks.{i}.attn.pattern``...).

    ``positions`` False drops every positional signal: absolute embeddings, rotary angles,
    ALiBi or relative biases and the local window. ``causal`` None keeps the stack's own
    masking; False lets every token see every other (a causal mask tells a token how many
    came before it, so it is positional information too). ``shift`` moves every position
    by that many (queries and keys alike).
    """
    stack = self_attention_stack(model)
    cfg = stack.cfg
    n = ids.shape[1]
    if model.embed.positions is not None and shift + n > cfg.n_ctx:
        raise ValueError(f"positions {shift}..{shift + n - 1} exceed the table of {cfg.n_ctx}")
    device = ids.device
    where = torch.arange(shift, shift + n, device=device)
    x = _embed(model, ids, where if positions else None)
    rope, bias, window = None, None, None
    if positions:
        if stack.rotary is not None:
            cos, sin = stack.rotary(where, x.dtype)
            rope = (cos, sin, cos, sin)
        if stack.alibi_slopes is not None:
            bias = alibi_bias(stack.alibi_slopes, n).to(x.dtype)
        elif stack.rel_bias is not None:
            bias = stack.rel_bias(n).to(x.dtype)
        if cfg.window is not None:
            window = local_window_mask(n, cfg.window, stack.causal, device=device)
    causal = stack.causal if causal is None else causal
    mask = combine_masks(causal_mask(n, device=device) if causal and n > 1 else None, window,
                         bias)
    capture = Capture(names)
    for i, block in enumerate(stack.blocks):
        x = block(x, rope=rope, mask=mask, capture=capture, prefix=f"blocks.{i}.")
    return capture.cache
