"""Packed suffix runs: many patched runs of a decoder in one short forward.

Causal attention means a patch at position p cannot change any position before p, and two
prompts agree at every position before their first different token s. So a patched run of
a decoder-only model only has to recompute positions ``start = max(p, s)`` to N-1; the
positions before are the corrupted run's, keys and values included.

`PackedRuns` lays such suffixes end to end in one sequence of one batch row. Projections,
MLPs and norms act position by position, so they see one matrix of ``sum(N - start)`` rows
instead of ``runs x N``; attention gets a mask in which the packed row (run r, position j)
sees the corrupted run's keys before r's start and r's own keys up to j. One layer's 20
residual patches on a 20-token prompt are 210 rows instead of 400; an IOI pair that differs
only at position 15 needs 5 runs of 5 rows or fewer.

Shapes: ``R`` runs, ``M`` packed rows, ``N`` positions, ``L`` layers, ``g`` key/value heads,
``d`` head size, ``D`` d_model, ``V`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from explorer.nn.attention import combine_masks
from explorer.nn.capture import Capture
from explorer.nn.kv_cache import KVCache


def supports(model: nn.Module, stack: str, position: int) -> bool:
    """Whether ``model``'s patched runs can be packed: a decoder-only model read at its last
    position, with rotary, absolute or ALiBi positions (and any sliding window)."""
    return (not stack and model.cfg.kind == "decoder" and model.causal and position == -1
            and model.rel_bias is None)


def first_difference(clean_ids: Tensor, corrupt_ids: Tensor) -> int:
    """The first position where the two prompts ``[1, N]`` differ (N when they never do)."""
    different = (clean_ids[0] != corrupt_ids[0]).nonzero()
    return int(different[0]) if len(different) else clean_ids.shape[1]


@dataclass(frozen=True)
class PackedRuns:
    """Runs recomputing positions ``starts[r]``..N-1, laid end to end: packed row i is
    position ``positions[i]`` of run ``run[i]``; run r's rows begin at ``offsets[r]``."""

    n: int
    starts: Tensor  # [R]
    positions: Tensor  # [M]
    run: Tensor  # [M]
    offsets: Tensor  # [R]

    @classmethod
    def of(cls, starts: Sequence[int], n: int, device: torch.device | None = None
           ) -> PackedRuns:
        starts_t = torch.tensor(list(starts), dtype=torch.long, device=device)
        if len(starts_t) == 0 or int(starts_t.min()) < 0 or int(starts_t.max()) >= n:
            raise ValueError(f"every run starts at a position in 0..{n - 1}: {list(starts)}")
        lengths = n - starts_t
        run = torch.repeat_interleave(torch.arange(len(starts_t), device=device), lengths)
        offsets = lengths.cumsum(0) - lengths
        positions = starts_t[run] + torch.arange(len(run), device=device) - offsets[run]
        return cls(n, starts_t, positions, run, offsets)

    @property
    def rows(self) -> int:
        return len(self.positions)

    def rows_of(self, r: int) -> slice:
        """Run r's packed rows (positions ``starts[r]``..N-1)."""
        start = int(self.offsets[r])
        return slice(start, start + self.n - int(self.starts[r]))

    def row_at(self, r: int, position: int) -> int:
        """The packed row of run r at ``position`` (>= its start)."""
        return int(self.offsets[r]) + position - int(self.starts[r])

    def attention(self, model: nn.Module, dtype: torch.dtype) -> dict:
        """Self-attention inputs of the packed rows (queries) over the corrupted run's N
        keys followed by the M packed keys: rope at each row's own position, and a mask
        allowing the corrupted keys before the row's run starts and the run's own keys up to
        the row's position (within the sliding window; with ALiBi's distance bias)."""
        pos, run = self.positions, self.run
        key_pos = torch.cat((torch.arange(self.n, device=pos.device), pos))
        before_start = key_pos[None, : self.n] < self.starts[run][:, None]  # [M, N]
        own = (run[None, :] == run[:, None]) & (pos[None, :] <= pos[:, None])  # [M, M]
        allowed = torch.cat((before_start, own), dim=1)
        distance = pos[:, None] - key_pos[None, :]  # >= 0 wherever allowed
        if model.cfg.window is not None:
            allowed &= distance <= model.cfg.window
        bias = None
        if model.alibi_slopes is not None:
            bias = -(model.alibi_slopes[:, None, None] * distance.abs())[None].to(dtype)
        rope = None
        if model.rotary is not None:
            cos, sin = model.rotary(pos, dtype)
            rope = (cos, sin, cos, sin)
        return {"rope": rope, "mask": combine_masks(allowed, bias), "is_causal": False}


def rerun(model: nn.Module, packed: PackedRuns, first: int, resid_pre: Tensor, keys: Tensor,
          values: Tensor, capture: Capture) -> Tensor:
    """Logits ``[R, V]`` at the last position of every packed run.

    The runs enter block ``first`` with the corrupted run's ``resid_pre`` ``[1, N, D]``
    there, and read its keys and values ``[L, 1, g, N, d]`` (every layer's) before their
    starts; ``capture``'s edits patch the packed activations (rows as in ``packed``)."""
    cache = KVCache(model.cfg, packed.n + packed.rows, 1, resid_pre.device, resid_pre.dtype)
    cache.k[first:, :, :, : packed.n] = keys[first:]
    cache.v[first:, :, :, : packed.n] = values[first:]
    cache.length = packed.n
    x = resid_pre[:, packed.positions]
    out = model.run_blocks(x, kv_cache=cache, start_layer=first, capture=capture,
                           attention=packed.attention(model, x.dtype))
    return model.head(out[0, packed.offsets + packed.n - 1 - packed.starts])
