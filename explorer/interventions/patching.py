"""Activation patching (Meng et al. 2022, "Locating and Editing Factual Associations in
GPT"; Heimersheim & Nanda 2024, "How to use and interpret activation patching").

Run a corrupted prompt, copy one activation from the clean prompt's run into it, and see how
much of the clean behaviour comes back: ``(metric(patched) - metric(corrupt)) /
(metric(clean) - metric(corrupt))``, 1 = fully restored, 0 = no effect. Sites: the residual
stream entering a block at one position, one block's attention or MLP output at one
position, and one head's output (``attn.z``) at every position.

Patched runs are batched: each forward carries up to ``batch_size`` patched prompts' worth
of positions, and starts at the earliest patched block from the corrupted run's residual
stream there (blocks before a patch cannot change). A decoder-only model also skips the
positions before the patch and before the prompts' first difference (causal attention: they
cannot change), packing the rest of many runs into one sequence
(`explorer.interventions.packed`). Every family: T5 patches its encoder
(then reruns the whole decoder) or its decoder (on the corrupted run's encoder output).
Shapes: ``L`` layers, ``N`` positions, ``H`` heads, ``B`` batch, ``V`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from explorer.interventions import packed as packing
from explorer.interventions.ablation import Metric, Outcome, outcome_of_logits
from explorer.nn.capture import Capture, Edit

# site -> (activation name in a block, what a column is)
SITES: dict[str, tuple[str, str]] = {
    "resid": ("resid_pre", "position"),
    "attn": ("attn.out", "position"),
    "mlp": ("mlp.out", "position"),
    "head": ("attn.z", "head"),
}
SITE_LABELS = {"resid": "Residual stream (entering each block)", "attn": "Attention output",
               "mlp": "MLP output", "head": "Each head's output (all positions)"}


@dataclass(frozen=True)
class PatchGrid:
    """The metric of every patched run ``values [L, C]`` (C positions, or heads for
    ``site="head"``), the same normalised (1 = clean, 0 = corrupted; NaN when the two
    prompts score the same), and the clean and corrupted metrics."""

    site: str
    values: Tensor
    normalised: Tensor
    clean: float
    corrupt: float


def _check(model: nn.Module, clean_ids: Tensor, corrupt_ids: Tensor, site: str,
           stack: str, decoder_ids: Tensor | None) -> None:
    if site not in SITES:
        raise ValueError(f"unknown patching site {site!r}; known: {sorted(SITES)}")
    if model.cfg.kind == "encoder-decoder":
        if stack not in ("encoder.", "decoder."):
            raise ValueError("an encoder-decoder model patches its 'encoder.' or its "
                             f"'decoder.' stack, not {stack!r}")
        if decoder_ids is None:
            raise ValueError("an encoder-decoder model needs decoder_ids (the decoder text "
                             "both runs share)")
    elif stack:
        raise ValueError(f"a {model.cfg.kind} model has one stack (prefix ''), not {stack!r}")
    if getattr(model, "head", None) is None:
        raise ValueError("this model has no unembedding, so there is no output to measure")
    if clean_ids.shape != corrupt_ids.shape:
        raise ValueError(f"the clean prompt has {clean_ids.shape[-1]} tokens and the "
                         f"corrupted one {corrupt_ids.shape[-1]}: patching copies position i "
                         "to position i, so both must have the same number of tokens")


Index = tuple[int | slice, ...]


def _patch_edit(copies: list[tuple[Index, Index]], clean: Tensor) -> Edit:
    """Copy ``clean[source]`` into ``t[target]`` for every (target, source) in ``copies``:
    a batch row's position or head (``[B, N, D]``, ``[B, H, N, d]``), or a packed run's rows
    (``[1, M, D]``, ``[1, H, M, d]``)."""
    def edit(t: Tensor) -> Tensor:
        t = t.clone()
        for target, source in copies:
            t[target] = clean[source].to(t.dtype)
        return t
    return edit


def _copies(rows: list[tuple[int, int]], column: str, n: int,
            packed: packing.PackedRuns | None) -> list[tuple[Index, Index]]:
    """Where each (batch row, column) of one patched activation copies the clean values
    from and to: that batch row's position or head, or, packed, that run's first row (a
    position patch) or all its rows (a head's output from the run's start on)."""
    if packed is None:
        return [((row, col), (0, col)) for row, col in rows]
    if column == "position":
        return [((0, packed.row_at(row, col)), (0, col)) for row, col in rows]
    return [((0, head, packed.rows_of(row)), (0, head, slice(int(packed.starts[row]), n)))
            for row, head in rows]


def _chunks(cells: list[tuple[int, int]], costs: list[int], budget: int) -> list[list[int]]:
    """Split cells (in layer order) into batches of at most ``budget`` rows (``costs``:
    each cell's). A batch starts at its earliest patched block, so whole layers share a
    batch when they fit and a larger layer is split, never merged with a later one."""
    chunks: list[list[int]] = []
    current: list[int] = []
    used = 0
    by_layer: dict[int, list[int]] = {}
    for i, (layer, _) in enumerate(cells):
        by_layer.setdefault(layer, []).append(i)
    for members in by_layer.values():
        layer_cost = sum(costs[i] for i in members)
        if current and used + layer_cost > budget:
            chunks.append(current)
            current, used = [], 0
        if layer_cost <= budget:
            current, used = current + members, used + layer_cost
            continue
        for i in members:  # a layer larger than a batch
            if current and used + costs[i] > budget:
                chunks.append(current)
                current, used = [], 0
            current.append(i)
            used += costs[i]
        chunks.append(current)
        current, used = [], 0
    return [*chunks, current] if current else chunks


class _Runs:
    """How a patched batch reruns one stack of ``model`` from a block's ``resid_pre`` to the
    logits at the read-out ``position``: the model's own blocks; T5's encoder, then its whole
    decoder reading the patched encoder's output; or T5's decoder, reading the corrupted
    run's encoder output."""

    def __init__(self, model: nn.Module, stack: str, decoder_ids: Tensor | None,
                 position: int) -> None:
        self.model, self.stack, self.position = model, stack, position
        self.decoder_ids = decoder_ids
        self.module = model if not stack else getattr(model, stack[:-1])
        self.memory: Tensor | None = None  # the corrupted encoder output (T5 decoder patches)

    @property
    def n_layers(self) -> int:
        return len(self.module.blocks)

    def run_with_cache(self, ids: Tensor, names: list[str]) -> tuple[Tensor, dict]:
        """Read-out logits ``[1, V]`` and the cache of one unpatched run."""
        if self.decoder_ids is None:
            logits, cache = self.model.run_with_cache(ids, names=names,
                                                      last_only=self.position == -1)
        else:
            logits, cache = self.model.run_with_cache(ids, self.decoder_ids, names=names)
        return logits[:, self.position], cache

    def corrupt_memory(self, corrupt_ids: Tensor) -> None:
        if self.stack == "decoder.":
            self.memory = self.model.encode(corrupt_ids)

    def rerun(self, x: Tensor, first: int, capture: Capture) -> Tensor:
        """Logits ``[B, V]`` at the read-out position of ``x`` ``[B, n, D]`` entering block
        ``first`` of the stack, with ``capture``'s patches."""
        batch = x.shape[0]
        if self.stack == "encoder.":
            memory = self.model.encoder.run_blocks(x, start_layer=first, capture=capture,
                                                   prefix="encoder.")
            logits = self.model.decode(self.decoder_ids.expand(batch, -1), memory)
            return logits[:, self.position]
        if self.stack == "decoder.":
            out = self.model.decoder.run_blocks(
                x, context=self.memory.expand(batch, -1, -1), start_layer=first,
                capture=capture, prefix="decoder.")
        else:
            out = self.model.run_blocks(x, start_layer=first, capture=capture)
        return self.model.head(out[:, self.position])


@dataclass(frozen=True)
class GridPlan:
    """Which cells of a patching grid ``shape`` (layers, columns) need a patched run
    (``cells``, in layer order) and the position each run recomputes from (``starts``).
    With ``packed`` (a decoder-only model) the cells at positions before the prompts'
    ``first_difference`` need none: the patch would copy what is already there."""

    shape: tuple[int, int]
    positions: int
    cells: list[tuple[int, int]]
    starts: list[int]
    packed: bool
    first_difference: int

    @property
    def runs(self) -> int:
        return len(self.cells)

    @property
    def costs(self) -> list[int]:
        """Positions each run recomputes (a whole prompt's unless packed)."""
        if self.packed:
            return [self.positions - start for start in self.starts]
        return [self.positions] * len(self.cells)


def plan_grid(model: nn.Module, clean_ids: Tensor, corrupt_ids: Tensor, site: str,
              decoder_ids: Tensor | None = None, stack: str = "", position: int = -1,
              packed: bool = True) -> GridPlan:
    """The runs :func:`patch_grid` makes for these prompts (no forward): a page can say how
    many before it starts, and cap them."""
    _check(model, clean_ids, corrupt_ids, site, stack, decoder_ids)
    column = SITES[site][1]
    n_layers = _Runs(model, stack, decoder_ids, position).n_layers
    n = (decoder_ids if stack == "decoder." else clean_ids).shape[1]
    packs = packed and packing.supports(model, stack, position)
    same = packing.first_difference(clean_ids, corrupt_ids) if packs else 0
    if column == "position":
        cells = [(layer, col) for layer in range(n_layers) for col in range(same, n)]
        starts = [col for _, col in cells]
        shape = (n_layers, n)
    else:  # a head's output at every position: runs start at the first difference
        n_heads = model.cfg.n_heads
        cells = [(layer, head) for layer in range(n_layers) for head in range(n_heads)
                 if same < n]
        starts = [same] * len(cells)
        shape = (n_layers, n_heads)
    return GridPlan(shape, n, cells, starts, packs, same)


@torch.no_grad()
def patch_grid(
    model: nn.Module, clean_ids: Tensor, corrupt_ids: Tensor, site: str, metric: Metric,
    batch_size: int = 32, progress: Callable[[int, int], None] | None = None,
    decoder_ids: Tensor | None = None, stack: str = "", position: int = -1,
    packed: bool = True,
) -> PatchGrid:
    """Patch every (layer, column) of ``site`` from the clean run ``clean_ids`` ``[1, N]``
    into the corrupted run ``corrupt_ids`` ``[1, N]``; ``metric`` maps the read-out logits
    ``[B, V]`` (at ``position``: the last one, or an encoder's masked token) to ``[B]``.
    ``progress(done, total)`` is called after every batch.

    Encoder-decoder models patch one ``stack`` (``"encoder."`` or ``"decoder."``); both runs
    read the same ``decoder_ids`` ``[1, n]`` and ``position`` is the decoder's.

    A decoder-only model's patched runs recompute only the positions a patch can change,
    packed into one sequence (`explorer.interventions.packed`); ``packed=False`` reruns the
    whole prompt for every patch (the same numbers, slower: the benchmark's baseline)."""
    plan = plan_grid(model, clean_ids, corrupt_ids, site, decoder_ids, stack, position, packed)
    name, column = SITES[site]
    runs = _Runs(model, stack, decoder_ids, position)
    n, cells, starts = plan.positions, plan.cells, plan.starts
    kv_names = ["blocks.*.attn.k", "blocks.*.attn.v"] if plan.packed else []
    clean_logits, clean_cache = runs.run_with_cache(clean_ids, [f"{stack}blocks.*.{name}"])
    corrupt_logits, corrupt_cache = runs.run_with_cache(
        corrupt_ids, [f"{stack}blocks.*.resid_pre", *kv_names])
    runs.corrupt_memory(corrupt_ids)
    clean_metric = float(metric(clean_logits)[0])
    corrupt_metric = float(metric(corrupt_logits)[0])
    values = torch.full(plan.shape, corrupt_metric)  # the cells that need no run
    if plan.packed:
        keys, vals = corrupt_cache.stack("attn.k"), corrupt_cache.stack("attn.v")
    total = plan.shape[0] * plan.shape[1]
    done = total - len(cells)
    if progress is not None and not cells:
        progress(done, total)
    for chunk in _chunks(cells, plan.costs, batch_size * n):
        batch = [cells[i] for i in chunk]
        first = batch[0][0]  # cells are in layer order: the earliest patched block
        # Runs that all start at position 0 save nothing by packing: the fused causal
        # kernel runs them as a plain batch.
        pack = (packing.PackedRuns.of([starts[i] for i in chunk], n)
                if plan.packed and any(starts[i] for i in chunk) else None)
        by_name: dict[str, list[tuple[int, int]]] = {}
        for row, (layer, col) in enumerate(batch):
            by_name.setdefault(f"{stack}blocks.{layer}.{name}", []).append((row, col))
        edits = {key: _patch_edit(_copies(rows, column, n, pack), clean_cache[key])
                 for key, rows in by_name.items()}
        resid = corrupt_cache[f"{stack}blocks.{first}.resid_pre"]
        if pack is None:
            logits = runs.rerun(resid.expand(len(batch), -1, -1), first, Capture((), edits))
        else:
            logits = packing.rerun(model, pack, first, resid, keys, vals, Capture((), edits))
        scores = metric(logits).cpu()
        for row, (layer, col) in enumerate(batch):
            values[layer, col] = scores[row]
        done += len(batch)
        if progress is not None:
            progress(done, total)
    span = clean_metric - corrupt_metric
    normalised = (values - corrupt_metric) / span if abs(span) > 1e-9 else values * float("nan")
    return PatchGrid(site, values, normalised, clean_metric, corrupt_metric)


@torch.no_grad()
def patched_outcome(model: nn.Module, clean_ids: Tensor, corrupt_ids: Tensor, site: str,
                    layer: int, column: int, k: int = 10, decoder_ids: Tensor | None = None,
                    stack: str = "", position: int = -1) -> Outcome:
    """The corrupted run with one activation patched from the clean run (a grid's cell)."""
    _check(model, clean_ids, corrupt_ids, site, stack, decoder_ids)
    key = f"{stack}blocks.{layer}.{SITES[site][0]}"
    runs = _Runs(model, stack, decoder_ids, position)
    _, clean_cache = runs.run_with_cache(clean_ids, [key])
    edits = {key: _patch_edit([((0, column), (0, column))], clean_cache[key])}
    if decoder_ids is not None:
        return outcome_of_logits(model(corrupt_ids, decoder_ids, edits=edits), decoder_ids, k,
                                 position=position)
    return outcome_of_logits(model(corrupt_ids, edits=edits), corrupt_ids, k,
                             next_token=model.cfg.kind == "decoder", position=position)


def column_labels(site: str, token_labels: Sequence[str], n_heads: int) -> list[str]:
    """Labels of a grid's columns: the tokens, or ``head h``."""
    if SITES[site][1] == "head":
        return [f"head {h}" for h in range(n_heads)]
    return list(token_labels)
