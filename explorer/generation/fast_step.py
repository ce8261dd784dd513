"""A lean one-token decode step over the KV cache for pre-norm decoders.

One decode step must read every weight once, so its speed is bound by memory bandwidth
(Pope et al. 2022, "Efficiently Scaling Transformer Inference"); at one token the Python
and dispatch overhead of the general `Transformer.forward` (capture checks, masks built per
call, einops, a module call per sub-layer) costs a noticeable share of a step. This module
runs the same math for a single new token with the model's own parameters and as few tensor
ops as possible: q, k, v (and gate, up) come from one matrix-vector product over their
packed rows (`explorer.nn.packing`); RMSNorm's 1/rms rides in that product's alpha; RoPE is
one [d, d] rotation matrix per step (the attention scale folded into q's) and writes the
rotated key straight into the cache; the cache views of every layer are made once per step.
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
    """torch.addmv (alpha, fused residual add) is the fastest CPU matrix-vector product in
    full precision; for half types F.linear (oneDNN) is about twice as fast as mv here."""
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


def _project(weight: torch.Tensor, bias: torch.Tensor | None, a: torch.Tensor,
             alpha: float) -> torch.Tensor:
    """alpha * weight a + bias for one vector a [in] -> [out]."""
    if not _scalar_path(weight):
        return F.linear(a, weight, bias)  # alpha is 1 off the scalar path
    if bias is None:
        return torch.addmv(NOTHING[weight.dtype], weight, a, beta=0, alpha=alpha)
    return torch.addmv(bias, weight, a, alpha=alpha)


def _add_project(residual: torch.Tensor, linear: nn.Linear, z: torch.Tensor) -> torch.Tensor:
    """residual + linear(z) for vectors, the sum done by the matrix-vector kernel."""
    if not _scalar_path(linear.weight):
        return residual + F.linear(z, linear.weight, linear.bias)
    out = torch.addmv(residual, linear.weight, z)
    return out if linear.bias is None else out.add_(linear.bias)


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
    qkv: torch.Tensor  # [(h + 2g) d, D]
    qkv_bias: torch.Tensor | None
    o: nn.Linear
    mlp_in: torch.Tensor  # [2F, D] (gate and up) or [F, D] (up)
    mlp_in_bias: torch.Tensor | None
    gated: bool
    act: Callable[[torch.Tensor], torch.Tensor]
    down: nn.Linear


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
    qkv, qkv_bias = _rows(attn.q, attn.k, attn.v)
    mlp_in, mlp_in_bias = _rows(mlp.gate, mlp.up) if gated else (mlp.up.weight, mlp.up.bias)
    return _Layer(ln1(block.ln1), ln2(block.ln2), qkv, qkv_bias, attn.o, mlp_in, mlp_in_bias,
                  gated, mlp.act, mlp.down)


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
        self.unembed = head.unembed if plain_head else None
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
        rot_q, rot_k, bias = self._positional(p, x.device, dtype)
        # Every layer's slot for this position and its filled prefix, as views made once.
        new_keys = self.keys[:, :, p].unbind(0)  # L x [g, d]
        new_values = self.values[:, :, p].unbind(0)
        keys_t = self.keys[:, :, :m].transpose(-1, -2).unbind(0)  # L x [g, d, m]
        values = self.values[:, :, :m].unbind(0)  # L x [g, m, d]
        patterns = []
        for i, layer in enumerate(self.layers):
            a, alpha = layer.ln1(x)
            qkv = _project(layer.qkv, layer.qkv_bias, a, alpha).view(hg + g, d)
            if rot_k is not None:  # RoPE: q rotated and scaled, k rotated into the cache
                q = torch.mm(qkv[:h], rot_q)
                torch.mm(qkv[h:hg], rot_k, out=new_keys[i])
            else:
                q = qkv[:h] * self.scale
                new_keys[i].copy_(qkv[h:hg])
            new_values[i].copy_(qkv[hg:])
            scores = torch.bmm(q.view(g, r, d), keys_t[i])  # [g, r, m]
            if bias is not None:
                scores += bias
            if dtype in FULL_PRECISION:
                pattern = torch.softmax(scores, dim=-1)
            else:
                pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)
            if capture_attention:
                patterns.append(pattern)
            x = _add_project(x, layer.o, torch.bmm(pattern, values[i]).view(h * d))
            a, alpha = layer.ln2(x)
            hidden = _project(layer.mlp_in, layer.mlp_in_bias, a, alpha)
            if layer.gated:
                gate, up = hidden.view(2, self.d_mlp).unbind(0)
                hidden = layer.act(gate).mul_(up)
            else:
                hidden = layer.act(hidden)
            x = _add_project(x, layer.down, hidden)
        cache.advance(1)
        if self.unembed is None:
            x = x if self.final_norm is None else model.final_norm(x)
            logits = model.head(x)
        elif self.final_norm is None:
            logits = _project(self.unembed.weight, self.unembed.bias, x, 1.0)
        else:
            logits = _project(self.unembed.weight, self.unembed.bias, *self.final_norm(x))
        logits = logits.float()
        if not capture_attention:
            return logits, None
        return logits, torch.stack(patterns).view(len(self.layers), h, m).float()
