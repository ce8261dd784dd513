"""One prompt's attention, analysed once and read by every view: `AttentionRun`.

`analyse_attention` runs the model once, keeps each layer's residual stream ``resid_pre``
(small: ``[L, N, D]``), recomputes each layer's pattern from it with ``model.layer_pattern``
(one layer's Q.K) and scores every head on the way (:data:`HEAD_SCORES`, Clark et al. 2019;
Olsson et al. 2022). Every pattern is kept only while they fit in :data:`KEEP_ALL_BYTES`;
otherwise views ask :meth:`AttentionRun.layer` and get a recomputed, LRU-cached layer. Attention
rollout (Abnar & Zuidema 2020) is computed on first request, layer by layer, and kept
block-pooled to at most :data:`ROLLOUT_CELLS` per side. `induction_test` ranks heads on a
repeated random token sequence (Olsson et al. 2022).

Stacks: decoder-only and encoder-only models have one, ``"self"``; encoder-decoder models have
``"encoder"``, ``"decoder"`` (self-attention) and ``"cross"`` (decoder queries, encoder keys,
captured during the forward). Shapes: ``L`` layers, ``H`` heads, ``Q`` queries, ``K`` keys,
``N`` positions, ``D`` d_model.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from explorer.analysis.attention import (
    HEAD_SCORES,
    attention_rollout,
    induction_score,
    pool_pattern,
    repeated_random_tokens,
)

logger = logging.getLogger(__name__)

KEEP_ALL_BYTES = 64 * 2**20  # keep every pattern of a run while they fit in this
LAYER_CACHE_BYTES = 48 * 2**20  # recomputed layers kept per run (at least one)
ROLLOUT_CELLS = 256  # rollout kept pooled to at most this many cells per side
# Kept patterns are stored in half precision (weights in [0, 1]: ~1e-3 relative error, and
# scores are computed from float32 first); a layer is returned as float32.
STORED_DTYPE = torch.float16


@dataclass(frozen=True)
class StackSpec:
    """One kind of attention in a model: where its activations are and what it attends to."""

    label: str
    prefix: str  # activation-name prefix ("" or "encoder." / "decoder.")
    queries: str  # which token sequence gives the queries: "source" or "target"
    keys: str
    cross: bool = False


# Stacks each model kind has, in display order.
STACKS_BY_KIND: dict[str, dict[str, StackSpec]] = {
    "decoder": {"self": StackSpec("Self-attention (causal)", "", "source", "source")},
    "encoder": {"self": StackSpec("Self-attention (bidirectional)", "", "source", "source")},
    "encoder-decoder": {
        "encoder": StackSpec("Encoder self-attention", "encoder.", "source", "source"),
        "decoder": StackSpec("Decoder self-attention (causal)", "decoder.", "target", "target"),
        "cross": StackSpec("Decoder cross-attention (decoder queries → encoder keys)",
                           "decoder.", "target", "source", cross=True),
    },
}


@dataclass
class Tokens:
    """A token sequence: ids ``[N]``, raw pieces, and which positions are special tokens."""

    ids: Tensor
    pieces: list[str]
    special: Tensor  # bool [N]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class StackRun:
    """One stack's data: residual streams, maybe every pattern, and head scores ``[L, H]``."""

    name: str
    spec: StackSpec
    queries: Tokens
    keys: Tokens
    n_layers: int
    n_heads: int
    resid_pre: Tensor | None = None  # [L, 1, N, D] on the model's device (self-attention)
    patterns: Tensor | None = None  # [L, H, Q, K] CPU, STORED_DTYPE, when small enough
    scores: dict[str, Tensor] = field(default_factory=dict)  # name -> [L, H]


def _square_scores(pattern: Tensor, token_ids: Tensor) -> dict[str, Tensor]:
    """Every head score of one layer ``[H, Q, K] -> {name: [H]}``; NaN where undefined."""
    scores = {}
    for name, score in HEAD_SCORES.items():
        try:
            scores[name] = score.compute(pattern, token_ids)
        except ValueError:  # e.g. one token, or a non-square (cross-attention) pattern
            scores[name] = torch.full(pattern.shape[:1], math.nan)
    return scores


def _stack_module(model: nn.Module, spec: StackSpec) -> nn.Module:
    """The module whose ``layer_pattern`` recomputes this stack's self-attention."""
    return getattr(model, spec.prefix.rstrip(".")) if spec.prefix else model


@dataclass(frozen=True)
class Rollout:
    """Attention rollout after each layer ``values [L, Nb, Nb]``; ``starts`` is the first
    position of each block (every position when ``exact``)."""

    values: Tensor
    starts: list[int]
    exact: bool
    residual_weight: float


class AttentionRun:
    """A prompt's attention, shared read-only between sessions (thread safe lazy parts).

    ``stacks`` maps a stack name to its :class:`StackRun`. :meth:`layer` gives one layer's
    pattern ``[H, Q, K]``; :meth:`rollout` the rollout ``[L, Qb, Kb]`` and its block starts.
    """

    def __init__(self, model: nn.Module, stacks: dict[str, StackRun], seconds: float = 0.0):
        self.model = model
        self.stacks = stacks
        self.seconds = seconds
        self._lock = threading.Lock()
        self._layers: OrderedDict[tuple[str, int], Tensor] = OrderedDict()
        self._rollouts: dict[str, Rollout] = {}

    def _compute_layer(self, stack: StackRun, layer: int) -> Tensor:
        module = _stack_module(self.model, stack.spec)
        pattern = module.layer_pattern(layer, stack.resid_pre[layer])  # [1, H, N, N]
        return pattern[0].float().cpu()

    def layer(self, stack_name: str, layer: int) -> Tensor:
        """Layer ``layer``'s pattern ``[H, Q, K]`` (float32, CPU); rows sum to 1."""
        stack = self.stacks[stack_name]
        if not 0 <= layer < stack.n_layers:
            raise IndexError(f"layer {layer} out of range 0..{stack.n_layers - 1}")
        if stack.patterns is not None:
            return stack.patterns[layer].float()
        key = (stack_name, layer)
        with self._lock:
            if key in self._layers:
                self._layers.move_to_end(key)
                return self._layers[key]
        pattern = self._compute_layer(stack, layer)
        with self._lock:
            self._layers[key] = pattern
            total = sum(p.numel() * 4 for p in self._layers.values())
            while len(self._layers) > 1 and total > LAYER_CACHE_BYTES:
                _, dropped = self._layers.popitem(last=False)
                total -= dropped.numel() * 4
        return pattern

    def rollout(self, stack_name: str = "self", residual_weight: float = 0.5) -> Rollout:
        """Rollout after every layer, pooled to at most :data:`ROLLOUT_CELLS` per side.

        Up to ``ROLLOUT_CELLS`` positions it is exact; past that each layer's mixed pattern
        is block-pooled *before* the product (an approximation that keeps memory and time
        bounded, flagged by ``exact=False``). Computed once per stack, one layer at a time.
        """
        stack = self.stacks[stack_name]
        if stack.spec.cross:
            raise ValueError("rollout is defined for self-attention stacks only")
        with self._lock:
            if stack_name in self._rollouts:
                return self._rollouts[stack_name]
        n = len(stack.queries)
        exact = n <= ROLLOUT_CELLS
        current, by_layer, starts = None, [], list(range(n))
        for layer in range(stack.n_layers):
            step = attention_rollout(self.layer(stack_name, layer)[None], residual_weight)[0]
            if not exact:
                step, starts, _ = pool_pattern(step, ROLLOUT_CELLS)  # [Nb, Nb]
            current = step if current is None else step @ current
            by_layer.append(current)
        result = Rollout(torch.stack(by_layer), starts, exact, residual_weight)
        with self._lock:
            self._rollouts[stack_name] = result
        return result

    def nbytes(self) -> int:
        """Bytes held: residual streams, stored patterns, cached layers and rollouts."""
        total = 0
        for stack in self.stacks.values():
            for t in (stack.resid_pre, stack.patterns):
                total += 0 if t is None else t.numel() * t.element_size()
        total += sum(p.numel() * 4 for p in self._layers.values())
        total += sum(r.values.numel() * 4 for r in self._rollouts.values())
        return total


def _forward(model: nn.Module, kind: str, source: Tensor, target: Tensor | None):
    """Run once, keeping resid_pre (and cross patterns): -> the activation cache."""
    if kind == "encoder-decoder":
        names = ["encoder.blocks.*.resid_pre", "decoder.blocks.*.resid_pre",
                 "decoder.blocks.*.cross_attn.pattern"]
        _, cache = model.run_with_cache(source, target, names=names)
    else:
        _, cache = model.run_with_cache(source, names=["blocks.*.resid_pre"])
    return cache


def analyse_attention(
    model: nn.Module,
    kind: str,
    n_heads: int,
    source: Tokens,
    target: Tokens | None = None,
    keep_all_bytes: int = KEEP_ALL_BYTES,
) -> AttentionRun:
    """Run ``model`` once on ``source`` (and ``target`` for encoder-decoder models) and score
    every head of every stack. ``source.ids`` is ``[N]``; ids go to the model's device."""
    start = time.perf_counter()
    if kind not in STACKS_BY_KIND:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(STACKS_BY_KIND)}")
    if kind == "encoder-decoder" and target is None:
        raise ValueError("an encoder-decoder model needs target (decoder) tokens")
    device = next(model.parameters()).device
    sequences = {"source": source, "target": target}
    cache = _forward(model, kind, source.ids[None].to(device),
                     None if target is None else target.ids[None].to(device))
    stacks: dict[str, StackRun] = {}
    for name, spec in STACKS_BY_KIND[kind].items():
        queries, keys = sequences[spec.queries], sequences[spec.keys]
        suffix = "cross_attn.pattern" if spec.cross else "resid_pre"
        captured = cache.layer_names(suffix, spec.prefix)
        stack = StackRun(name, spec, queries, keys, len(captured), n_heads)
        if spec.cross:
            stack.patterns = torch.cat([cache[k].float().cpu() for k in captured])
        else:
            stack.resid_pre = torch.stack([cache[k] for k in captured])
        stacks[name] = stack
    run = AttentionRun(model, stacks)
    for stack in stacks.values():
        per_layer_bytes = stack.n_heads * len(stack.queries) * len(stack.keys) * 2
        keep = stack.patterns is None and per_layer_bytes * stack.n_layers <= keep_all_bytes
        kept, rows = [], {score: [] for score in HEAD_SCORES}
        for layer in range(stack.n_layers):
            pattern = (stack.patterns[layer] if stack.patterns is not None
                       else run._compute_layer(stack, layer))
            for score, values in _square_scores(pattern, stack.queries.ids).items():
                rows[score].append(values)
            if keep:
                kept.append(pattern.to(STORED_DTYPE))
        stack.scores = {score: torch.stack(values) for score, values in rows.items()}
        if keep:
            stack.patterns = torch.stack(kept).to(STORED_DTYPE)
    run.seconds = time.perf_counter() - start
    logger.info("analysed attention of %d tokens in %.2f s (%.1f MB held)", len(source),
                run.seconds, run.nbytes() / 2**20)
    return run


@dataclass(frozen=True)
class InductionResult:
    """Induction scores ``[L, H]`` on a repeated random sequence, and the ranking."""

    scores: Tensor
    half_len: int
    prefix_len: int
    ranking: list[tuple[int, int, float]]  # (layer, head, score), best first


def induction_test(
    model: nn.Module,
    kind: str,
    vocab_size: int,
    bos_id: int | None = None,
    exclude_ids: Sequence[int] = (),
    half_len: int = 50,
    seed: int = 0,
) -> InductionResult:
    """Rank heads by induction score (Olsson et al. 2022) on ``[BOS] + r + r`` for ``half_len``
    random tokens ``r``. Decoder models score self-attention; encoder-decoder models get the
    sequence on both sides and score the decoder's self-attention."""
    ids = repeated_random_tokens(vocab_size, half_len, seed, bos_id, exclude_ids)[0]
    prefix_len = 0 if bos_id is None else 1
    stack_name = "decoder" if kind == "encoder-decoder" else "self"
    device = next(model.parameters()).device
    cache = _forward(model, kind, ids[None].to(device), ids[None].to(device))
    spec = STACKS_BY_KIND[kind][stack_name]
    module = _stack_module(model, spec)
    rows = []
    for name in cache.layer_names("resid_pre", spec.prefix):
        layer = int(name.removeprefix(spec.prefix).split(".")[1])
        pattern = module.layer_pattern(layer, cache[name])[0].float().cpu()
        rows.append(induction_score(pattern, half_len, prefix_len))
    scores = torch.stack(rows)  # [L, H]
    order = torch.argsort(scores.flatten(), descending=True).tolist()
    n_heads = scores.shape[1]
    ranking = [(i // n_heads, i % n_heads, float(scores.flatten()[i])) for i in order]
    return InductionResult(scores, half_len, prefix_len, ranking)
