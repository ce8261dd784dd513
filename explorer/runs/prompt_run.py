"""One prompt, run once, read by every view: :class:`PromptRun`.

``run_prompt`` runs the model once and keeps what is small: the tokens and the residual
stream at every boundary of every stack (:class:`ResidualStream`: after the embeddings and
after each block, plus what each attention sub-layer added, so ``resid_mid`` is there too).
Everything else is derived on request and memoised in one byte-bounded :class:`LRUMemo`: a
layer's attention pattern (recomputed from its ``resid_pre``: one layer's Q.K), head scores
(Clark et al. 2019; Olsson et al. 2022), attention rollout (Abnar & Zuidema 2020), logit-lens
windows (nostalgebraist 2020), direct logit attribution and geometry (`explorer.analysis`).

Memory (``ARCHITECTURE.md``): a 1,024-token SmolLM2 run keeps its 31 boundaries in float32
(70 MiB), the attention sub-layers' outputs in float16 once they pass
:data:`EXACT_SUBLAYER_BYTES` (34 MiB), and at most :data:`DERIVED_BYTES` of derived views.

Stacks: decoder-only and encoder-only models have one attention stack, ``"self"``, on the
stream ``"main"``; encoder-decoder models have ``"encoder"``, ``"decoder"`` and ``"cross"``
on the streams ``"encoder"`` and ``"decoder"``. Shapes: ``L`` layers, ``H`` heads, ``Q``
queries, ``K`` keys, ``N`` positions, ``D`` d_model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from explorer.analysis.attention import HEAD_SCORES, attention_rollout, pool_pattern
from explorer.nn.capture import Edit
from explorer.runs.memo import LRUMemo

logger = logging.getLogger(__name__)

DERIVED_BYTES = 40 * 2**20  # patterns, lens windows, geometry... kept per run
EXACT_SUBLAYER_BYTES = 32 * 2**20  # past this, sub-layer outputs are kept in float16
ROLLOUT_CELLS = 256  # rollout kept pooled to at most this many cells per side


@dataclass(frozen=True)
class StackSpec:
    """One kind of attention in a model: where its activations are and what it attends to."""

    label: str
    stream: str  # the residual stream whose resid_pre feeds the queries
    queries: str  # which token sequence gives the queries: "source" or "target"
    keys: str
    cross: bool = False


# Stacks each model kind has, in display order.
STACKS_BY_KIND: dict[str, dict[str, StackSpec]] = {
    "decoder": {"self": StackSpec("Self-attention (causal)", "main", "source", "source")},
    "encoder": {"self": StackSpec("Self-attention (bidirectional)", "main", "source", "source")},
    "encoder-decoder": {
        "encoder": StackSpec("Encoder self-attention", "encoder", "source", "source"),
        "decoder": StackSpec("Decoder self-attention (causal)", "decoder", "target", "target"),
        "cross": StackSpec("Decoder cross-attention (decoder queries → encoder keys)",
                           "decoder", "target", "source", cross=True),
    },
}
# Residual streams each kind has: name -> (activation prefix, token sequence, sub-layers).
STREAMS_BY_KIND: dict[str, dict[str, tuple[str, str, tuple[str, ...]]]] = {
    "decoder": {"main": ("", "source", ("attn",))},
    "encoder": {"main": ("", "source", ("attn",))},
    "encoder-decoder": {"encoder": ("encoder.", "source", ("attn",)),
                        "decoder": ("decoder.", "target", ("attn", "cross"))},
}
SUBLAYER_RESIDUAL = {"attn": "resid_mid", "cross": "resid_cross"}
SUBLAYER_LABEL = {"attn": "attn", "cross": "cross-attn"}


@dataclass
class Tokens:
    """A token sequence: ids ``[N]``, raw pieces, and which positions are special tokens."""

    ids: Tensor
    pieces: list[str]
    special: Tensor  # bool [N]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class Row:
    """One readable point of a residual stream: after the embeddings (``layer`` -1), after
    a block (``sublayer`` None), or inside block ``layer`` after a sub-layer."""

    layer: int
    sublayer: str | None = None

    @property
    def label(self) -> str:
        if self.layer < 0:
            return "embeddings"
        if self.sublayer is None:
            return f"L{self.layer}"
        return f"L{self.layer} {SUBLAYER_LABEL[self.sublayer]}"


@dataclass
class ResidualStream:
    """One stack's residual stream: ``boundaries [L + 1, N, D]`` (after the embeddings,
    then after each block; before any final norm) and ``sublayers[name] [L, N, D]``, what
    each attention sub-layer added (``resid_mid - resid_pre``; ``"cross"`` in T5's decoder),
    float16 on long prompts."""

    name: str
    prefix: str
    tokens: Tokens
    boundaries: Tensor
    sublayers: dict[str, Tensor]
    pre_norm: bool

    @property
    def n_layers(self) -> int:
        return self.boundaries.shape[0] - 1

    def rows(self, sublayers: bool = False, stride: int = 1) -> list[Row]:
        """The embeddings, every ``stride``-th block (the last always) and, with
        ``sublayers``, the points after each attention sub-layer of the kept blocks."""
        kept = [layer for layer in range(self.n_layers)
                if layer % stride == stride - 1 or layer == self.n_layers - 1]
        rows = [Row(-1)]
        for layer in kept:
            if sublayers:
                rows += [Row(layer, name) for name in self.sublayers]
            rows.append(Row(layer))
        return rows

    def residual(self, row: Row) -> Tensor:
        """The stream at ``row``: ``[N, D]`` float32."""
        if row.sublayer is None:
            return self.boundaries[row.layer + 1].float()
        x = self.boundaries[row.layer].float()
        for name, added in self.sublayers.items():
            x = x + added[row.layer].float()
            if name == row.sublayer:
                return x
        raise KeyError(f"no sub-layer {row.sublayer!r} in {list(self.sublayers)}")

    def components(self, positions: list[int]) -> tuple[list[str], Tensor]:
        """(labels, parts ``[P, C, D]``) at ``positions`` that sum to the final boundary:
        the embeddings, then each layer's sub-layers and MLP. Pre-norm streams only
        (post-norm blocks renormalise the sum, so no part reaches the output additively)."""
        if not self.pre_norm:
            raise ValueError("a post-norm stack's output is not a sum of its parts")
        at = self.boundaries[:, positions].float()  # [L + 1, C, D]
        labels, parts = ["embeddings"], [at[0]]
        for layer in range(self.n_layers):
            written = torch.zeros_like(at[0])
            for name, added in self.sublayers.items():
                labels.append(f"L{layer} {SUBLAYER_LABEL[name]}")
                parts.append(added[layer, positions].float())
                written = written + parts[-1]
            labels.append(f"L{layer} mlp")
            parts.append(at[layer + 1] - at[layer] - written)
        return labels, torch.stack(parts)

    def nbytes(self) -> int:
        tensors = [self.boundaries, *self.sublayers.values()]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class StackRun:
    """One attention stack: its tokens, sizes, and the captured patterns of cross-attention
    (``[L, H, Q, K]``; self-attention patterns are recomputed from the stream)."""

    name: str
    spec: StackSpec
    queries: Tokens
    keys: Tokens
    n_layers: int
    n_heads: int
    captured: Tensor | None = None


@dataclass(frozen=True)
class Rollout:
    """Attention rollout after each layer ``values [L, Nb, Nb]``; ``starts`` is the first
    position of each block (every position when ``exact``)."""

    values: Tensor
    starts: list[int]
    exact: bool
    residual_weight: float


def _square_scores(pattern: Tensor, token_ids: Tensor) -> dict[str, Tensor]:
    """Every head score of one layer ``[H, Q, K] -> {name: [H]}``; NaN where undefined."""
    scores = {}
    for name, score in HEAD_SCORES.items():
        try:
            scores[name] = score.compute(pattern, token_ids)
        except ValueError:  # e.g. one token, or a non-square (cross-attention) pattern
            scores[name] = torch.full(pattern.shape[:1], math.nan)
    return scores


class PromptRun:
    """One forward of one prompt, shared read-only by every view and session.

    ``streams`` maps a stream name to its :class:`ResidualStream`, ``stacks`` a stack name to
    its :class:`StackRun`; ``memo`` holds what views derived (thread safe). The lens and
    attribution methods live in `explorer.runs.lens_views`; this class keeps attention.
    """

    def __init__(self, model: nn.Module, kind: str, streams: dict[str, ResidualStream],
                 stacks: dict[str, StackRun], seconds: float = 0.0,
                 derived_bytes: int = DERIVED_BYTES,
                 edits: Mapping[str, Edit] | None = None) -> None:
        self.model, self.kind = model, kind
        self.streams, self.stacks = streams, stacks
        self.seconds = seconds
        self.edits = dict(edits or {})  # what the forward replaced (an intervention's run)
        self.memo = LRUMemo(max_entries=256, max_bytes=derived_bytes)

    def module_of(self, stream: str) -> nn.Module:
        """The stack module (``Stack``) that runs ``stream``'s blocks."""
        return self.model if stream == "main" else getattr(self.model, stream)

    def derive(self, key: tuple, compute):
        """A derived value, computed once and kept within the run's byte budget."""
        return self.memo.get(key, compute)

    # ------------------------------------------------------------------ attention

    def layer(self, stack_name: str, layer: int) -> Tensor:
        """Layer ``layer``'s pattern ``[H, Q, K]`` (float32, CPU); rows sum to 1."""
        stack = self.stacks[stack_name]
        if not 0 <= layer < stack.n_layers:
            raise IndexError(f"layer {layer} out of range 0..{stack.n_layers - 1}")
        if stack.captured is not None:
            return stack.captured[layer]
        stream = self.streams[stack.spec.stream]

        def compute() -> Tensor:
            resid = stream.boundaries[layer][None]  # [1, N, D]
            return self.module_of(stream.name).layer_pattern(
                layer, resid, edits=self._pattern_edits(stream.prefix, layer))[0].float().cpu()

        return self.derive(("pattern", stack_name, layer), compute)

    def _pattern_edits(self, prefix: str, layer: int) -> dict[str, Edit] | None:
        """The run's edits that act inside ``layer``'s pattern (its q, k or pattern), named
        relative to the stack; the others are already in the stored residual stream."""
        inside = {f"{prefix}blocks.{layer}.attn.{name}" for name in ("q", "k", "pattern")}
        edits = {name[len(prefix):]: edit for name, edit in self.edits.items()
                 if name in inside}
        return edits or None

    def scores(self, stack_name: str) -> dict[str, Tensor]:
        """Every head score of every layer: ``{name: [L, H]}`` (computed once)."""
        stack = self.stacks[stack_name]

        def compute() -> dict[str, Tensor]:
            rows: dict[str, list[Tensor]] = {name: [] for name in HEAD_SCORES}
            for layer in range(stack.n_layers):
                for name, values in _square_scores(self.layer(stack_name, layer),
                                                   stack.queries.ids).items():
                    rows[name].append(values)
            return {name: torch.stack(values) for name, values in rows.items()}

        return self.derive(("scores", stack_name), compute)

    def rollout(self, stack_name: str = "self", residual_weight: float = 0.5) -> Rollout:
        """Rollout after every layer, pooled to at most :data:`ROLLOUT_CELLS` per side.

        Up to ``ROLLOUT_CELLS`` positions it is exact; past that each layer's mixed pattern
        is block-pooled *before* the product (an approximation that keeps memory and time
        bounded, flagged by ``exact=False``). Computed once per stack, one layer at a time.
        """
        stack = self.stacks[stack_name]
        if stack.spec.cross:
            raise ValueError("rollout is defined for self-attention stacks only")

        def compute() -> Rollout:
            n = len(stack.queries)
            exact = n <= ROLLOUT_CELLS
            current, by_layer, starts = None, [], list(range(n))
            for layer in range(stack.n_layers):
                step = attention_rollout(self.layer(stack_name, layer)[None],
                                         residual_weight)[0]
                if not exact:
                    step, starts, _ = pool_pattern(step, ROLLOUT_CELLS)  # [Nb, Nb]
                current = step if current is None else step @ current
                by_layer.append(current)
            return Rollout(torch.stack(by_layer), starts, exact, residual_weight)

        return self.derive(("rollout", stack_name, residual_weight), compute)

    # ------------------------------------------------------------------ size

    def nbytes(self) -> int:
        """Bytes held: residual streams, captured cross patterns and derived views."""
        total = sum(stream.nbytes() for stream in self.streams.values())
        total += sum(s.captured.numel() * s.captured.element_size()
                     for s in self.stacks.values() if s.captured is not None)
        return total + self.memo.nbytes()


def _capture_names(kind: str) -> list[str]:
    names = ["embed"]
    for prefix, _, sublayers in STREAMS_BY_KIND[kind].values():
        names += [f"{prefix}blocks.*.resid_pre", f"{prefix}blocks.*.resid_post"]
        names += [f"{prefix}blocks.*.{SUBLAYER_RESIDUAL[s]}" for s in sublayers]
    if kind == "encoder-decoder":
        names.append("decoder.blocks.*.cross_attn.pattern")
    return names


def forward(model: nn.Module, kind: str, source: Tensor, target: Tensor | None,
            edits: Mapping[str, Edit] | None = None):
    """One forward keeping the residual stream (and cross patterns), with ``edits`` applied:
    -> activation cache.

    Decoder-only and encoder-only models skip the unembedding of every position but the
    last (the lens unembeds only what a view shows)."""
    names = _capture_names(kind)
    if kind == "encoder-decoder":
        _, cache = model.run_with_cache(source, target, names=names, edits=edits)
    else:
        _, cache = model.run_with_cache(source, names=names, edits=edits, last_only=True)
    return cache


def _stream(cache, name: str, prefix: str, tokens: Tokens, sublayers: tuple[str, ...],
            pre_norm: bool) -> ResidualStream:
    pres = cache.layer_names("resid_pre", prefix)
    last = cache.layer_names("resid_post", prefix)[-1]
    boundaries = torch.stack([cache[k][0] for k in [*pres, last]]).float()  # [L+1, N, D]
    added = {}
    for sub in sublayers:
        mids = cache.layer_names(SUBLAYER_RESIDUAL[sub], prefix)
        # what the sub-layer read: resid_pre for attention, resid_mid for cross-attention
        before = cache.layer_names(SUBLAYER_RESIDUAL["attn"], prefix) if sub == "cross" else pres
        added[sub] = torch.stack([cache[m][0].float() - cache[b][0].float()
                                  for m, b in zip(mids, before, strict=True)])
    total = sum(t.numel() * 4 for t in added.values())
    if total > EXACT_SUBLAYER_BYTES:
        for sub, t in added.items():
            if bool(torch.isfinite(t.half()).all()):
                added[sub] = t.half()
    return ResidualStream(name, prefix, tokens, boundaries, added, pre_norm)


def run_prompt(
    model: nn.Module, kind: str, n_heads: int, source: Tokens, target: Tokens | None = None,
    derived_bytes: int = DERIVED_BYTES, edits: Mapping[str, Edit] | None = None,
) -> PromptRun:
    """Run ``model`` once on ``source`` (and ``target`` for encoder-decoder models).
    ``source.ids`` is ``[N]``; ids go to the model's device.

    With ``edits`` (`explorer.nn.capture`: ablations, patches) the run is the edited model's:
    every view of it (lens, patterns, norms...) reads the edited residual stream, and
    patterns recomputed later apply the edits that act inside attention."""
    start = time.perf_counter()
    if kind not in STACKS_BY_KIND:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(STACKS_BY_KIND)}")
    if kind == "encoder-decoder" and target is None:
        raise ValueError("an encoder-decoder model needs target (decoder) tokens")
    if len(source) == 0 or (target is not None and len(target) == 0):
        raise ValueError("there are no tokens to run")
    device = next(model.parameters()).device
    sequences = {"source": source, "target": target}
    cache = forward(model, kind, source.ids[None].to(device),
                    None if target is None else target.ids[None].to(device), edits)
    pre_norm = model.cfg.norm_position == "pre"
    streams = {name: _stream(cache, name, prefix, sequences[seq], subs, pre_norm)
               for name, (prefix, seq, subs) in STREAMS_BY_KIND[kind].items()}
    stacks: dict[str, StackRun] = {}
    for name, spec in STACKS_BY_KIND[kind].items():
        n_layers = streams[spec.stream].n_layers
        stack = StackRun(name, spec, sequences[spec.queries], sequences[spec.keys], n_layers,
                         n_heads)
        if spec.cross:
            captured = cache.layer_names("cross_attn.pattern", "decoder.")
            stack.captured = torch.cat([cache[k].float().cpu() for k in captured])
        stacks[name] = stack
    del cache
    run = PromptRun(model, kind, streams, stacks, derived_bytes=derived_bytes, edits=edits)
    run.seconds = time.perf_counter() - start
    logger.info("ran %d tokens in %.2f s (%.1f MB held)", len(source), run.seconds,
                run.nbytes() / 2**20)
    return run
