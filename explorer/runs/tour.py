"""One forward pass taken apart, for the guided tour: every intermediate value of one token.

The tour calls the loaded model's own modules one at a time (its embedding tables, norms,
q/k/v/o projections, rotary tables, masks, feed-forward layers, final norm and head) on the
inputs the shared :class:`~explorer.runs.PromptRun` kept, so each number it shows is one the
real forward computes (tests/unit/test_tour_trace.py checks them against ``run_with_cache``).
Nothing here is a separate toy implementation. Vaswani et al. 2017 (attention, residuals,
feed-forward), Su et al. 2021 (RoPE), Ainslie et al. 2023 (grouped-query attention), Ba et
al. 2016 / Zhang & Sennrich 2019 (LayerNorm / RMSNorm), Shazeer 2020 (GLU variants).

Shapes: N positions of the stream, M key positions (N, or the encoder's for
cross-attention), D d_model, H query heads, G key/value heads, d d_head, F d_mlp, V d_vocab.
Vectors of one position are ``[D]``; tensors come back float32 on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from explorer.nn.attention import additive_mask, apply_rotary, repeat_kv
from explorer.runs.prompt_run import PromptRun


def _cpu(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().float().cpu()


def _param(module: nn.Module) -> Tensor:
    return next(module.parameters())


@dataclass
class EmbeddingTrace:
    """The first residual stream ``out [N, D]``: token rows ``tokens [N, D]`` of the
    embedding table, plus absolute ``positions`` and BERT's ``token_types`` where the model
    has them, summed (``summed``) and then normed (BERT's ``embed.norm``)."""

    ids: Tensor
    tokens: Tensor
    positions: Tensor | None
    token_types: Tensor | None
    summed: Tensor
    out: Tensor


@torch.no_grad()
def trace_embeddings(model: nn.Module, ids: Tensor) -> EmbeddingTrace:
    """The model's ``embed`` module taken apart for token ids ``[N]``."""
    embed = model.embed
    param = _param(embed)
    ids_dev = ids.to(param.device)[None]
    positions = torch.arange(ids.shape[0], device=param.device)
    tokens = embed.tokens(ids_dev)
    pos = embed.positions(positions).to(tokens.dtype)[None] if embed.positions is not None \
        else None
    types = embed.token_types(torch.zeros_like(ids_dev)) if embed.token_types is not None \
        else None
    summed = tokens + (0 if pos is None else pos) + (0 if types is None else types)
    out = embed(ids_dev, positions)
    return EmbeddingTrace(ids.cpu(), _cpu(tokens[0]), _cpu(None if pos is None else pos[0]),
                          _cpu(None if types is None else types[0]), _cpu(summed[0]),
                          _cpu(out[0]))


@dataclass
class AttentionTrace:
    """One attention sub-layer seen from the query at ``position``, for every head.

    ``reads [D]`` is what the sub-layer reads at the query (after ln1 in a pre-norm block);
    ``q_raw/q [H, d]`` the query before and after the rotary rotation (the same tensor
    without RoPE); ``k_raw/k, v [G, M, d]``; ``scores [H, M]`` = q.k, ``scaled`` = scores *
    ``scale``, ``bias [H, M]`` what the model adds (0, -inf for masked keys, a position
    bias), ``masked`` = scaled + bias, ``pattern`` its softmax (rows sum to 1), ``z [H, d]``
    the weighted sums of values, ``concat [H*d]`` the heads side by side, ``out [D]`` the
    output projection: what the sub-layer writes into the residual stream."""

    position: int
    reads: Tensor
    q_raw: Tensor
    q: Tensor
    k_raw: Tensor
    k: Tensor
    v: Tensor
    scores: Tensor
    scale: float
    scaled: Tensor
    position_bias: Tensor | None
    bias: Tensor
    masked: Tensor
    pattern: Tensor
    z: Tensor
    concat: Tensor
    out: Tensor

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.q.shape[0] // self.k.shape[0]


def _position_bias(stack: nn.Module, n: int, dtype: torch.dtype) -> Tensor | None:
    """[1, H, n, n] bias the stack adds to self-attention scores for positions (T5's
    relative buckets or ALiBi), or None when positions act elsewhere."""
    from explorer.nn.positional import alibi_bias

    if getattr(stack, "rel_bias", None) is not None:
        return stack.rel_bias(n, n).to(dtype)
    if getattr(stack, "alibi_slopes", None) is not None:
        return alibi_bias(stack.alibi_slopes, n, n).to(dtype)
    return None


@torch.no_grad()
def trace_attention(attn: nn.Module, reads: Tensor, position: int, *,
                    rope: tuple[Tensor, ...] | None = None, mask: Tensor | None = None,
                    position_bias: Tensor | None = None,
                    context: Tensor | None = None) -> AttentionTrace:
    """``attn`` (an `explorer.nn.Attention`) on ``reads [1, N, D]``, followed for the query at
    ``position``. ``rope``/``mask`` are what the stack gives every layer; ``context [1, M, D]``
    makes it cross-attention (keys and values from the context)."""
    q_raw, k_raw, v = attn.project(reads, context)  # [1, H, N, d], [1, G, M, d] x 2
    q, k = q_raw, k_raw
    if rope is not None:
        cos_q, sin_q, cos_k, sin_k = rope
        q, k = apply_rotary(q_raw, cos_q, sin_q), apply_rotary(k_raw, cos_k, sin_k)
    n_rep = attn.n_heads // attn.n_kv_heads
    q_t = q[0, :, position]  # [H, d]
    keys, values = repeat_kv(k, n_rep)[0], repeat_kv(v, n_rep)[0]  # [H, M, d]
    scores = torch.einsum("hd,hmd->hm", q_t.float(), keys.float())
    scale = 1.0 / math.sqrt(attn.d_head) if attn.scale is None else float(attn.scale)
    scaled = scores * scale
    m = keys.shape[1]
    bias = torch.zeros(attn.n_heads, m)
    if mask is not None:
        full = additive_mask(mask, torch.float32).expand(1, attn.n_heads, -1, m)
        bias = full[0, :, position if full.shape[2] > 1 else 0].cpu()
    masked = scaled.cpu() + bias
    pattern = torch.softmax(masked, dim=-1).nan_to_num(nan=0.0)
    z = torch.einsum("hm,hmd->hd", pattern.to(values.device, values.dtype), values)
    concat = rearrange(z, "h d -> (h d)")
    out = attn.o(concat)
    pb = None if position_bias is None else position_bias[0, :, position].float().cpu()
    return AttentionTrace(position, _cpu(reads[0, position]), _cpu(q_raw[0, :, position]),
                          _cpu(q_t), _cpu(k_raw[0]), _cpu(k[0]), _cpu(v[0]), _cpu(scores),
                          scale, _cpu(scaled), pb, bias, masked, pattern, _cpu(z),
                          _cpu(concat), _cpu(out))


@dataclass
class MLPTrace:
    """The feed-forward at one position: ``reads [D]`` (after ln2 in a pre-norm block),
    ``pre [F]`` the first projection (``gate`` in a gated MLP, ``up`` otherwise), ``act``
    the activation of it, ``up [F]`` the gated MLP's second projection (None otherwise),
    ``hidden [F]`` what ``down`` reads (act, or act * up), ``out [D]`` what it writes.
    A mixture of experts keeps only ``reads`` and ``out``."""

    reads: Tensor
    pre: Tensor | None
    act: Tensor | None
    up: Tensor | None
    hidden: Tensor | None
    out: Tensor


@torch.no_grad()
def trace_mlp(mlp: nn.Module, reads: Tensor) -> MLPTrace:
    """The block's own feed-forward module on ``reads [D]``, one projection at a time."""
    if not hasattr(mlp, "down"):  # mixture of experts: the router decides; shown whole
        return MLPTrace(_cpu(reads), None, None, None, None, _cpu(mlp(reads[None, None])[0, 0]))
    gated = hasattr(mlp, "gate")
    pre = mlp.gate(reads) if gated else mlp.up(reads)
    act = mlp.act(pre)
    up = mlp.up(reads) if gated else None
    hidden = act * up if gated else act
    return MLPTrace(_cpu(reads), _cpu(pre), _cpu(act), _cpu(up), _cpu(hidden),
                    _cpu(mlp.down(hidden)))


@dataclass
class BlockTrace:
    """Block ``layer`` at ``position``: the residual entering it, each sub-layer, the residual
    after each (``resid_mid``, T5's ``resid_cross``, ``resid_post``; all ``[D]``), and for a
    pre-norm block the normed inputs the sub-layers read (inside their traces)."""

    layer: int
    position: int
    pre_norm: bool
    resid_pre: Tensor
    attn: AttentionTrace
    resid_mid: Tensor
    cross: AttentionTrace | None
    resid_cross: Tensor | None
    mlp: MLPTrace
    resid_post: Tensor


def _add(block: nn.Module, norm: nn.Module, x: Tensor, out: Tensor) -> Tensor:
    """The block's residual connection: x + out (pre-norm) or norm(x + out) (post-norm)."""
    return x + out if block.pre_norm else norm(x + out)


@torch.no_grad()
def trace_block(stack: nn.Module, layer: int, resid_pre: Tensor, position: int,
                context: Tensor | None = None) -> BlockTrace:
    """Block ``layer`` of ``stack`` (a `Stack`: the model, or T5's encoder/decoder) on the
    residual ``resid_pre [N, D]`` that enters it, followed at ``position``; ``context
    [M, D]`` is the encoder output a decoder block's cross-attention reads."""
    block = stack.blocks[layer]
    param = _param(block)
    x = resid_pre.to(param.device, param.dtype)[None]  # [1, N, D]
    n = x.shape[1]
    inputs = stack.attention_inputs(n, 0, x.device, x.dtype, explicit_mask=True)
    attn = trace_attention(block.attn, block.attention_input(x), position, rope=inputs["rope"],
                           mask=inputs["mask"], position_bias=_position_bias(stack, n, x.dtype))
    x_t = x[0, position]
    resid = _add(block, block.ln1, x_t, attn.out.to(x.device, x.dtype))
    resid_mid, cross, resid_cross = resid, None, None
    if block.cross_attn is not None and context is not None:
        mem = context.to(param.device, param.dtype)[None]
        reads = (block.ln_cross(resid) if block.pre_norm else resid)[None, None]
        cross = trace_attention(block.cross_attn, reads, 0, context=mem)
        cross.position = position
        resid = resid_cross = _add(block, block.ln_cross, resid, cross.out.to(x.device, x.dtype))
    mlp = trace_mlp(block.mlp, block.ln2(resid) if block.pre_norm else resid)
    resid_post = _add(block, block.ln2, resid, mlp.out.to(x.device, x.dtype))
    return BlockTrace(layer, position, block.pre_norm, _cpu(x_t), attn, _cpu(resid_mid), cross,
                      _cpu(resid_cross), mlp, _cpu(resid_post))


@dataclass
class OutputTrace:
    """The last residual ``resid [D]`` at one position to probabilities: the final norm
    (``normed``; the residual itself where the model has none), BERT's masked-LM transform
    (``transformed``: dense, activation, norm; None elsewhere), the unembedding's input
    (``unembed_in``: T5 scales it by ``scale``), ``logits [V]`` and ``probs [V]``."""

    resid: Tensor
    normed: Tensor
    transformed: Tensor | None
    scale: float
    unembed_in: Tensor
    logits: Tensor
    probs: Tensor


@torch.no_grad()
def trace_output(model: nn.Module, final_norm: nn.Module | None, resid: Tensor) -> OutputTrace:
    """``final_norm`` (the stack's, or None) then the model's ``head`` on ``resid [D]``."""
    head = model.head
    param = _param(head)
    x = resid.to(param.device, param.dtype)
    normed = final_norm(x) if final_norm is not None else x
    transformed = head.norm(head.act(head.transform(normed))) if head.transform is not None \
        else None
    unembed_in = (normed if transformed is None else transformed) * head.scale
    logits = head.unembed(unembed_in)
    probs = torch.softmax(logits.float(), dim=-1)
    return OutputTrace(_cpu(x), _cpu(normed), _cpu(transformed), float(head.scale),
                       _cpu(unembed_in), _cpu(logits), _cpu(probs))


@dataclass
class StackTrace:
    """One residual stream through the tour: its embeddings, block ``layer`` taken apart at
    ``position``, and the stack's output (after its final norm) ``final [N, D]``."""

    stream: str
    position: int
    embeddings: EmbeddingTrace
    block: BlockTrace
    final: Tensor


@torch.no_grad()
def trace_stack(run: PromptRun, stream_name: str, position: int, layer: int = 0,
                context: Tensor | None = None) -> StackTrace:
    """The tour of one stream of ``run`` (memoised in the run): block ``layer`` reads the
    run's kept residual stream, so only that block is recomputed."""
    stream = run.streams[stream_name]
    if not 0 <= position < len(stream.tokens):
        raise IndexError(f"position {position} outside 0..{len(stream.tokens) - 1}")
    stack = run.module_of(stream_name)

    def compute() -> StackTrace:
        embeddings = trace_embeddings(run.model, stream.tokens.ids)
        block = trace_block(stack, layer, stream.boundaries[layer], position, context)
        last = stream.boundaries[-1].to(_param(stack).device, _param(stack).dtype)
        final = stack.final_norm(last) if stack.final_norm is not None else last
        return StackTrace(stream_name, position, embeddings, block, _cpu(final))

    return run.derive(("tour", stream_name, position, layer), compute)


def encoder_memory(run: PromptRun) -> Tensor:
    """T5's encoder output ``[M, D]`` (its final norm applied): what cross-attention reads."""
    return trace_stack(run, "encoder", 0).final


def output_of(run: PromptRun, stream_name: str, position: int) -> OutputTrace:
    """The head at ``position`` of the stream the model unembeds (memoised in the run)."""
    stream = run.streams[stream_name]
    stack = run.module_of(stream_name)
    return run.derive(("tour-output", stream_name, position), lambda: trace_output(
        run.model, stack.final_norm, stream.boundaries[-1][position]))


@dataclass
class SamplingTrace:
    """How ``temperature``, ``top_k`` and ``top_p`` reshape next-token probabilities (each
    ``[V]``): the model's own ``probs``, ``tempered`` (softmax of logits / T), ``after_top_k``
    and ``after_top_p`` (renormalised over the tokens each filter keeps; the last is what a
    sample is drawn from, as `explorer.generation.sampling.sampling_distribution` does)."""

    probs: Tensor
    tempered: Tensor
    after_top_k: Tensor
    after_top_p: Tensor


def trace_sampling(logits: Tensor, temperature: float, top_k: int | None,
                   top_p: float | None) -> SamplingTrace:
    """The sampling filters of `explorer.generation.sampling`, one at a time, on ``logits
    [V]`` (``temperature`` > 0; the order transformers applies them in)."""
    from explorer.generation.sampling import apply_temperature, top_k_filter, top_p_filter

    logits = logits.float()
    tempered = apply_temperature(logits, temperature)
    top_k_logits = top_k_filter(tempered, top_k)
    top_p_logits = top_p_filter(top_k_logits, top_p)
    return SamplingTrace(*(torch.softmax(t, dim=-1)
                           for t in (logits, tempered, top_k_logits, top_p_logits)))
