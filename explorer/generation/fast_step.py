"""A lean one-token decode step over the KV cache for pre-norm decoders.

One decode step must read every weight once, so its speed is bound by memory bandwidth
(Pope et al. 2022, "Efficiently Scaling Transformer Inference"); at one token the Python
and dispatch overhead of the general `Transformer.forward` (capture checks, masks built per
call, einops, a module call per sub-layer) costs a noticeable share of a step. This module
runs the same math for a single new token with the model's own parameters and kernels
(`apply_rotary`, the norms' formulas, the MLP activations) and as few tensor ops as
possible, and returns the attention row of every layer for free when asked: the softmax it
computes is the pattern of the one query.

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
from explorer.nn.positional import alibi_bias

Kernel = Callable[[torch.Tensor], torch.Tensor]


def _rms_kernel(norm: RMSNorm) -> Kernel:
    """The `RMSNorm` formula for one vector: x * rsqrt(x.x / D + eps) * weight, with the
    statistics in float32 or wider (a dot product: fewer ops than pow + mean)."""
    weight, eps, d = norm.weight, norm.eps, norm.weight.shape[0]

    def run(x: torch.Tensor) -> torch.Tensor:
        x32 = x if x.dtype in (torch.float32, torch.float64) else x.float()
        inv_rms = torch.dot(x32, x32).div_(d).add_(eps).rsqrt_()
        normed = x32 * inv_rms
        if normed.dtype != x.dtype:
            return weight * normed.to(x.dtype)
        return normed.mul_(weight)

    return run


def _layer_norm_kernel(norm: LayerNorm) -> Kernel:
    weight, bias, eps, d = norm.weight, norm.bias, norm.eps, norm.weight.shape[0]

    def run(x: torch.Tensor) -> torch.Tensor:
        stats = torch.promote_types(x.dtype, torch.float32)
        b = None if bias is None else bias.to(stats)
        return F.layer_norm(x.to(stats), (d,), weight.to(stats), b, eps).to(x.dtype)

    return run


NORM_KERNELS: dict[type, Callable[[nn.Module], Kernel]] = {
    RMSNorm: _rms_kernel,
    LayerNorm: _layer_norm_kernel,
}


# torch.mv/addmv are the fastest float32 matrix-vector kernels on CPU; for half types
# F.linear (oneDNN) is about twice as fast as mv here.
FULL_PRECISION = (torch.float32, torch.float64)


def _linear(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """linear(x) for one vector x [in] -> [out] (a matrix-vector product)."""
    if x.dtype not in FULL_PRECISION:
        return F.linear(x, linear.weight, linear.bias)
    out = torch.mv(linear.weight, x)
    return out if linear.bias is None else out + linear.bias


def _add_linear(residual: torch.Tensor, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """residual + linear(x) for vectors, the sum done by the matrix-vector kernel."""
    if x.dtype not in FULL_PRECISION:
        return residual + F.linear(x, linear.weight, linear.bias)
    if linear.bias is not None:
        residual = residual + linear.bias
    return torch.addmv(residual, linear.weight, x)


# MLP kernels take (residual x, normed input a) and return x + mlp(a).
Residual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _gated_kernel(mlp: GatedMLP) -> Residual:
    gate, up, down, act = mlp.gate, mlp.up, mlp.down, mlp.act
    return lambda x, a: _add_linear(x, act(_linear(a, gate)).mul_(_linear(a, up)), down)


def _plain_kernel(mlp: MLP) -> Residual:
    up, down, act = mlp.up, mlp.down, mlp.act
    return lambda x, a: _add_linear(x, act(_linear(a, up)), down)


MLP_KERNELS: dict[type, Callable[[nn.Module], Residual]] = {
    GatedMLP: _gated_kernel,
    MLP: _plain_kernel,
}
POSITIONS = ("rope", "learned", "sinusoidal", "alibi")


@dataclass(frozen=True)
class _Layer:
    ln1: Kernel
    ln2: Kernel
    mlp: Residual
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear


def _plain_linears(*modules: nn.Module) -> bool:
    return all(type(m) is nn.Linear for m in modules)


class FastDecoder:
    """Runs one token at a time through ``model`` and ``cache`` (see module docstring)."""

    def __init__(self, model: nn.Module, cache: KVCache, layers: list[_Layer]) -> None:
        cfg = model.cfg
        self.model, self.cache, self.layers = model, cache, layers
        self.kv = [(cache.k[i, 0], cache.v[i, 0]) for i in range(len(layers))]  # [g, max, d]
        final = model.final_norm
        kernel = NORM_KERNELS.get(type(final))
        self.final_norm = final if final is None or kernel is None else kernel(final)
        head = model.head
        plain_head = (head.transform is None and head.scale == 1.0
                      and type(head.unembed) is nn.Linear)
        self.unembed = head.unembed if plain_head else None
        self.h, self.g, self.d = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
        self.scale = 1.0 / math.sqrt(cfg.d_head) if cfg.attn_scale else 1.0

    @classmethod
    def build(cls, model: nn.Module, cache: KVCache) -> FastDecoder | None:
        """A decoder for ``model``, or None when its architecture needs the general path."""
        cfg = getattr(model, "cfg", None)
        if (cfg is None or cfg.kind != "decoder" or cfg.norm_position != "pre"
                or cfg.window is not None or cfg.positional not in POSITIONS
                or cache.k.shape[1] != 1 or getattr(model, "head", None) is None):
            return None
        layers = []
        for block in model.blocks:
            attn, mlp = block.attn, block.mlp
            kernels = (NORM_KERNELS.get(type(block.ln1)), NORM_KERNELS.get(type(block.ln2)),
                       MLP_KERNELS.get(type(mlp)))
            if (None in kernels or block.cross_attn is not None
                    or not _plain_linears(attn.q, attn.k, attn.v, attn.o)
                    or not _plain_linears(*(getattr(mlp, n) for n in ("gate", "up", "down")
                                            if hasattr(mlp, n)))):
                return None
            layers.append(_Layer(kernels[0](block.ln1), kernels[1](block.ln2),
                                 kernels[2](mlp), attn.q, attn.k, attn.v, attn.o))
        return cls(model, cache, layers)

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
        p = cache.length
        m = p + 1
        if m > min(cache.max_len, model.cfg.n_ctx):
            raise ValueError(f"{m} positions exceed the cache ({cache.max_len}) or context")
        x = model.embed(token_id, torch.tensor([p], device=token_id.device))[0, 0]  # [D]
        dtype = x.dtype
        rot_q, rot_k, bias = self._positional(p, x.device, dtype)
        patterns = []
        for layer, (keys, values) in zip(self.layers, self.kv, strict=True):
            a = layer.ln1(x)
            q = _linear(a, layer.q).view(h, d)
            k = _linear(a, layer.k).view(g, d)
            if rot_k is not None:
                q, k = q @ rot_q, k @ rot_k
            else:
                q = q * self.scale
            keys[:, p] = k
            values[:, p] = _linear(a, layer.v).view(g, d)
            scores = torch.matmul(q.view(g, h // g, d), keys[:, :m].transpose(1, 2))  # [g,r,m]
            if bias is not None:
                scores = scores + bias
            pattern = torch.softmax(scores, dim=-1, dtype=torch.float32)
            if dtype != torch.float32:
                pattern = pattern.to(dtype)
            if capture_attention:
                patterns.append(pattern)
            z = torch.matmul(pattern, values[:, :m]).view(h * d)
            x = _add_linear(x, z, layer.o)
            a = layer.ln2(x)
            x = layer.mlp(x, a)
        cache.advance(1)
        if self.final_norm is not None:
            x = self.final_norm(x)
        logits = (model.head(x) if self.unembed is None else _linear(x, self.unembed)).float()
        if not capture_attention:
            return logits, None
        return logits, torch.stack(patterns).view(len(self.layers), h, m).float()
