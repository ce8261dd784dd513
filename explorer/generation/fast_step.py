"""A lean one-token decode step over the KV cache for pre-norm decoders.

One decode step must read every weight once, so its speed is bound by memory bandwidth
(Pope et al. 2022, "Efficiently Scaling Transformer Inference"); at one token the Python
and dispatch overhead of the general `Transformer.forward` (capture checks, masks built per
call, einops, a module call per sub-layer) costs a noticeable share of a step. This module
runs the same math for a single new token with the model's own parameters and as few tensor
ops as possible: q, k, v (and gate, up) come from one matrix-vector product over their
packed rows (`explorer.nn.packing`); RMSNorm's 1/rms rides in that product's alpha; RoPE is
one [d, d] rotation matrix per step (the attention scale folded into q's); the cache views
of every layer are made once per step. Half types (bfloat16, float16) multiply with weights
reordered into oneDNN's blocked layout and attend in float32, where this CPU is faster.
It returns the attention row of every layer for free when asked: the softmax it computes
is the pattern of the one query.

It handles pre-norm decoders with RoPE, learned, sinusoidal or ALiBi positions and plain or
gated MLPs built from plain ``nn.Linear`` (Llama/SmolLM2, GPT-2, Qwen2...). Anything else
(post-norm, local windows, T5 relative bias, MoE, LoRA-wrapped layers) returns None from
`FastDecoder.build` and generation uses ``model.forward``. Tests check both against full
recomputation at every step.

Shapes (batch 1, one query): D d_model, h heads, g kv heads, r = h // g, d d_head,
m context positions, V d_vocab, L layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from explorer.nn.attention import apply_rotary
from explorer.nn.kv_cache import KVCache
from explorer.nn.mlp import MLP, GatedMLP
from explorer.nn.norms import LayerNorm, RMSNorm
from explorer.nn.packing import packed
from explorer.nn.positional import alibi_bias

# A norm kernel maps the residual x [D] to (a, alpha): the next projections compute
# alpha * W a. On the CPU in full precision RMSNorm's 1/rms leaves the vector as a Python
# number that the matrix-vector kernel applies for free (alpha), saving four tensor ops a
# norm; elsewhere the norm runs whole and alpha is 1.
NormKernel = Callable[[torch.Tensor], tuple[torch.Tensor, float]]
FULL_PRECISION = (torch.float32, torch.float64)


def _scalar_path(weight: torch.Tensor) -> bool:
    """On the CPU in full precision torch.addmv is the fastest matrix-vector product, and it
    takes alpha and a residual to add for free."""
    return weight.device.type == "cpu" and weight.dtype in FULL_PRECISION


def _rms_kernel(norm: RMSNorm) -> NormKernel:
    weight, eps, d = norm.weight, norm.eps, norm.weight.shape[0]
    if not _scalar_path(weight):
        return lambda x: (norm(x), 1.0)
    # x / rms(x) * w == (x * w) / rms(x): the division moves into the product's alpha.
    return lambda x: (x * weight, 1.0 / math.sqrt(float(torch.dot(x, x)) / d + eps))


def _whole_kernel(norm: nn.Module) -> NormKernel:
    return lambda x: (norm(x), 1.0)


NORM_KERNELS: dict[type, Callable[[nn.Module], NormKernel]] = {
    RMSNorm: _rms_kernel,
    LayerNorm: _whole_kernel,
}
POSITIONS = ("rope", "learned", "sinusoidal", "alibi")
NOTHING = {t: torch.zeros((), dtype=t) for t in FULL_PRECISION}  # addmv's input at beta 0

# (a [in], alpha) -> alpha * W a + b [out]; (x [out], z [in]) -> x + W z + b.
MatVec = Callable[[torch.Tensor, float], torch.Tensor]
AddMatVec = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _onednn_packed(weight: torch.Tensor) -> torch.Tensor | None:
    """The weight reordered into oneDNN's blocked layout for one-row inputs, for half types
    on the CPU: bfloat16 matrix-vector products then run 1.1-1.3x faster than float32 ones
    here (F.linear on the plain layout is slower than float32). A copy, made per decoder."""
    if weight.device.type != "cpu" or weight.dtype not in (torch.bfloat16, torch.float16):
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, 1)
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return None


def _matvec(weight: torch.Tensor, bias: torch.Tensor | None) -> MatVec:
    if _scalar_path(weight):
        if bias is None:
            nothing = NOTHING[weight.dtype]
            return lambda a, alpha: torch.addmv(nothing, weight, a, beta=0, alpha=alpha)
        return lambda a, alpha: torch.addmv(bias, weight, a, alpha=alpha)
    # Off the scalar path the norm kernels apply the whole norm, so alpha is 1 (a norm whose
    # weight kept another dtype than the linears' could still hand over a scale: apply it).
    blocked = _onednn_packed(weight)
    if blocked is not None:
        return lambda a, alpha: torch.ops.mkldnn._linear_pointwise(
            a if alpha == 1.0 else a * alpha, blocked, bias, "none", [], "")
    return lambda a, alpha: F.linear(a if alpha == 1.0 else a * alpha, weight, bias)


def _add_matvec(linear: nn.Linear) -> AddMatVec:
    weight, bias = linear.weight, linear.bias
    if _scalar_path(weight):
        if bias is None:
            return lambda x, z: torch.addmv(x, weight, z)
        return lambda x, z: torch.addmv(x, weight, z).add_(bias)
    matvec = _matvec(weight, bias)
    return lambda x, z: x + matvec(z, 1.0)


def _rows(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One [sum of outputs, in] weight (and bias) for linears that read the same input: views
    when the model is packed (`explorer.nn.packing`), else concatenated copies."""
    views = packed(*linears)
    if views is not None:
        return views
    weight = torch.cat([lin.weight for lin in linears])
    biases = [lin.bias for lin in linears]
    if all(b is None for b in biases):
        return weight, None
    return weight, torch.cat([b if b is not None else lin.weight.new_zeros(lin.out_features)
                              for b, lin in zip(biases, linears, strict=True)])


@dataclass(frozen=True)
class _Layer:
    ln1: NormKernel
    ln2: NormKernel
    qkv: MatVec  # -> [(h + 2g) d]
    o: AddMatVec
    mlp_in: MatVec  # -> [2F] (gate and up) or [F] (up)
    gated: bool
    act: Callable[[torch.Tensor], torch.Tensor]
    down: AddMatVec


def _plain_linears(*modules: nn.Module) -> bool:
    return all(type(m) is nn.Linear for m in modules)


def _layer(block: nn.Module) -> _Layer | None:
    attn, mlp = block.attn, block.mlp
    ln1, ln2 = NORM_KERNELS.get(type(block.ln1)), NORM_KERNELS.get(type(block.ln2))
    gated = type(mlp) is GatedMLP
    if (ln1 is None or ln2 is None or block.cross_attn is not None
            or type(mlp) not in (GatedMLP, MLP)
            or not _plain_linears(attn.q, attn.k, attn.v, attn.o, mlp.up, mlp.down)
            or (gated and not _plain_linears(mlp.gate))):
        return None
    mlp_in = _rows(mlp.gate, mlp.up) if gated else (mlp.up.weight, mlp.up.bias)
    return _Layer(ln1(block.ln1), ln2(block.ln2), _matvec(*_rows(attn.q, attn.k, attn.v)),
                  _add_matvec(attn.o), _matvec(*mlp_in), gated, mlp.act, _add_matvec(mlp.down))


class FastDecoder:
    """Runs one token at a time through ``model`` and ``cache`` (see module docstring)."""

    def __init__(self, model: nn.Module, cache: KVCache, layers: list[_Layer]) -> None:
        cfg = model.cfg
        self.model, self.cache, self.layers = model, cache, layers
        self.keys, self.values = cache.k[:, 0], cache.v[:, 0]  # [L, g, max, d]
        final = model.final_norm
        self.final_norm = (None if final is None
                           else NORM_KERNELS.get(type(final), _whole_kernel)(final))
        head = model.head
        plain_head = (head.transform is None and head.scale == 1.0
                      and type(head.unembed) is nn.Linear)
        self.unembed = (_matvec(head.unembed.weight, head.unembed.bias) if plain_head
                        else None)
        self.h, self.g, self.d = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
        self.d_mlp = cfg.d_mlp
        self.scale = 1.0 / math.sqrt(cfg.d_head) if cfg.attn_scale else 1.0

    @classmethod
    def build(cls, model: nn.Module, cache: KVCache) -> FastDecoder | None:
        """A decoder for ``model``, or None when its architecture needs the general path."""
        cfg = getattr(model, "cfg", None)
        if (cfg is None or cfg.kind != "decoder" or cfg.norm_position != "pre"
                or cfg.window is not None or cfg.positional not in POSITIONS
                or cache.k.shape[1] != 1 or getattr(model, "head", None) is None):
            return None
        layers = [_layer(block) for block in model.blocks]
        return None if None in layers else cls(model, cache, layers)

    def _positional(self, p: int, device: torch.device, dtype: torch.dtype):
        """Per-step position terms shared by every layer: the rotations of q and k [d, d]
        (RoPE, with the attention scale folded into q's) and the ALiBi bias [g, r, m]."""
        model, d, scale = self.model, self.d, self.scale
        rot_q = rot_k = bias = None
        if model.rotary is not None:
            cos, sin = model.rotary(torch.tensor([p], device=device), dtype)  # [1, d]
            # apply_rotary is linear in x, so rotating the identity gives its matrix:
            # x @ R == apply_rotary(x) (Su et al. 2021, Eq. 13's R_theta,m as a matrix)
            rot_k = apply_rotary(torch.eye(d, device=device, dtype=dtype), cos, sin)
            rot_q = rot_k * scale
        if model.alibi_slopes is not None:
            bias = alibi_bias(model.alibi_slopes, 1, p + 1).to(dtype)  # [1, h, 1, m]
            bias = bias.view(self.g, self.h // self.g, p + 1)
        return rot_q, rot_k, bias

    def step(
        self, token_id: torch.Tensor, capture_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """token_id [1, 1] at position cache.length -> (logits [V], attention [L, h, m])."""
        model, cache = self.model, self.cache
        h, g, d = self.h, self.g, self.d
        r, hg = h // g, h + g
        p = cache.length
        m = p + 1
        if m > min(cache.max_len, model.cfg.n_ctx):
            raise ValueError(f"{m} positions exceed the cache ({cache.max_len}) or context")
        x = model.embed(token_id, torch.tensor([p], device=token_id.device))[0, 0]  # [D]
        dtype = x.dtype
        # Attention runs in float32 or wider: the scores, softmax and the small q, k products.
        upcast = dtype not in FULL_PRECISION
        math_dtype = torch.promote_types(dtype, torch.float32)
        rot_q, rot_k, bias = self._positional(p, x.device, math_dtype)
        # Every layer's slot for this position and its filled prefix, as views made once.
        new_keys = self.keys[:, :, p].unbind(0)  # L x [g, d]
        new_values = self.values[:, :, p].unbind(0)
        keys_t = self.keys[:, :, :m].transpose(-1, -2).unbind(0)  # L x [g, d, m]
        values = self.values[:, :, :m].unbind(0)  # L x [g, m, d]
        patterns = []
        for i, layer in enumerate(self.layers):
            a, alpha = layer.ln1(x)
            qkv = layer.qkv(a, alpha).view(hg + g, d)
            if upcast:  # bfloat16/float16 products this small are slow on the CPU
                qkv = qkv.float()
            if rot_k is None:
                q, k = qkv[:h] * self.scale, qkv[h:hg]
            else:  # RoPE: q rotated and scaled, k rotated
                q, k = torch.mm(qkv[:h], rot_q), torch.mm(qkv[h:hg], rot_k)
            new_keys[i].copy_(k)
            new_values[i].copy_(qkv[hg:])
            keys, vals = keys_t[i], values[i]  # now including this position
            if upcast:
                keys, vals = keys.float(), vals.float()
            scores = torch.bmm(q.view(g, r, d), keys)  # [g, r, m]
            if bias is not None:
                scores += bias
            pattern = torch.softmax(scores, dim=-1)
            if capture_attention:
                patterns.append(pattern)
            z = torch.bmm(pattern, vals).view(h * d)
            x = layer.o(x, z.to(dtype) if upcast else z)
            a, alpha = layer.ln2(x)
            hidden = layer.mlp_in(a, alpha)
            if layer.gated:
                gate, up = hidden.view(2, self.d_mlp).unbind(0)
                hidden = layer.act(gate).mul_(up)
            else:
                hidden = layer.act(hidden)
            x = layer.down(x, hidden)
        cache.advance(1)
        if self.unembed is None:
            x = x if self.final_norm is None else model.final_norm(x)
            logits = model.head(x)
        else:
            logits = self.unembed(*((x, 1.0) if self.final_norm is None else self.final_norm(x)))
        logits = logits.float()
        if not capture_attention:
            return logits, None
        return logits, torch.stack(patterns).view(len(self.layers), h, m).float()
