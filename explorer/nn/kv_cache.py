"""A preallocated key/value cache for incremental decoding.

Keys and values of every layer live in two tensors [L, b, g, max_len, d] allocated once;
each step writes its new positions in place and attention reads the filled prefix, so the
prefix is never re-run and nothing is re-allocated while generating.
"""

from __future__ import annotations

import torch

from explorer.config import ModelConfig


class LayerKV:
    """One layer's view of a `KVCache`: appends new keys/values, returns all so far, and
    holds the layer's cross-attention keys/values (the encoder output's, the same at every
    step of an encoder-decoder's generation)."""

    def __init__(self, cache: KVCache, layer: int) -> None:
        self.cache, self.layer = cache, layer

    @property
    def cross(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.cache.cross[self.layer]

    @cross.setter
    def cross(self, kv: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.cache.cross[self.layer] = kv

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v [b, g, n, d] at positions length..length+n -> all keys/values [b, g, m, d]."""
        start, end = self.cache.length, self.cache.length + k.shape[-2]
        if end > self.cache.max_len:
            raise ValueError(f"KV cache full: {end} positions > max_len {self.cache.max_len}")
        self.cache.k[self.layer, :, :, start:end] = k
        self.cache.v[self.layer, :, :, start:end] = v
        return self.cache.k[self.layer, :, :, :end], self.cache.v[self.layer, :, :, :end]


class KVCache:
    """Keys and values of ``n_layers`` layers for up to ``max_len`` positions."""

    def __init__(
        self,
        cfg: ModelConfig,
        max_len: int,
        batch: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (cfg.n_layers, batch, cfg.n_kv_heads, max_len, cfg.d_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0
        # Cross-attention keys/values [b, g, m, d] per layer, set by the first decoder step.
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * cfg.n_layers

    def layer(self, i: int) -> LayerKV:
        return LayerKV(self, i)

    def advance(self, n: int) -> None:
        """Mark n more positions as filled (called once per forward, after every layer)."""
        self.length += n

    def truncate(self, length: int) -> None:
        """Forget positions from ``length`` on (e.g. to re-run a regenerated suffix)."""
        self.length = min(self.length, length)
