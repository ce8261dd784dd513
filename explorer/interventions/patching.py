"""Activation patching (Meng et al. 2022, "Locating and Editing Factual Associations in
GPT"; Heimersheim & Nanda 2024, "How to use and interpret activation patching").

Run a corrupted prompt, copy one activation from the clean prompt's run into it, and see how
much of the clean behaviour comes back: ``(metric(patched) - metric(corrupt)) /
(metric(clean) - metric(corrupt))``, 1 = fully restored, 0 = no effect. Sites: the residual
stream entering a block at one position, one block's attention or MLP output at one
position, and one head's output (``attn.z``) at every position.

Patched runs are batched: each forward carries up to ``batch_size`` patches on its batch
dimension, and starts at the earliest patched block from the corrupted run's residual
stream there (blocks before a patch cannot change). Decoder-only and encoder-only models.
Shapes: ``L`` layers, ``N`` positions, ``H`` heads, ``B`` batch, ``V`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

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


def _check(model: nn.Module, clean_ids: Tensor, corrupt_ids: Tensor, site: str) -> None:
    if site not in SITES:
        raise ValueError(f"unknown patching site {site!r}; known: {sorted(SITES)}")
    if model.cfg.kind == "encoder-decoder":
        raise ValueError("patching runs on decoder-only and encoder-only models; for T5, "
                         "patch the encoder or decoder in code with edits")
    if getattr(model, "head", None) is None:
        raise ValueError("this model has no unembedding, so there is no output to measure")
    if clean_ids.shape != corrupt_ids.shape:
        raise ValueError(f"the clean prompt has {clean_ids.shape[-1]} tokens and the "
                         f"corrupted one {corrupt_ids.shape[-1]}: patching copies position i "
                         "to position i, so both must have the same number of tokens")


def _patch_edit(cells: list[tuple[int, int]], clean: Tensor) -> Edit:
    """Copy ``clean`` (``[1, N, D]``: column = position; ``[1, H, N, d]``: column = head)
    into batch row r at column c for every (r, c) in ``cells``."""
    def edit(t: Tensor) -> Tensor:
        t = t.clone()
        for row, col in cells:
            t[row, col] = clean[0, col].to(t.dtype)
        return t
    return edit


@torch.no_grad()
def patch_grid(
    model: nn.Module, clean_ids: Tensor, corrupt_ids: Tensor, site: str, metric: Metric,
    batch_size: int = 32, progress: Callable[[int, int], None] | None = None,
) -> PatchGrid:
    """Patch every (layer, column) of ``site`` from the clean run ``clean_ids`` ``[1, N]``
    into the corrupted run ``corrupt_ids`` ``[1, N]``; ``metric`` maps last-position logits
    ``[B, V]`` to ``[B]``. ``progress(done, total)`` is called after every batch."""
    _check(model, clean_ids, corrupt_ids, site)
    name, column = SITES[site]
    n_layers, n = len(model.blocks), clean_ids.shape[1]
    clean_logits, clean_cache = model.run_with_cache(clean_ids, names=[f"blocks.*.{name}"],
                                                     last_only=True)
    corrupt_logits, corrupt_cache = model.run_with_cache(
        corrupt_ids, names=["blocks.*.resid_pre"], last_only=True)
    clean_metric = float(metric(clean_logits[:, -1])[0])
    corrupt_metric = float(metric(corrupt_logits[:, -1])[0])
    n_cols = model.cfg.n_heads if column == "head" else n
    cells = [(layer, col) for layer in range(n_layers) for col in range(n_cols)]
    # Batches never mix layers (unless a layer's columns are fewer than a batch): a batch
    # starts at its earliest patched block, so mixing would rerun blocks for nothing.
    if n_cols <= batch_size:  # whole layers per batch
        starts = list(range(0, len(cells), batch_size // n_cols * n_cols))
    else:  # each layer split into batches
        starts = [layer * n_cols + c for layer in range(n_layers)
                  for c in range(0, n_cols, batch_size)]
    values = torch.empty(len(cells))
    for start, end in zip(starts, [*starts[1:], len(cells)], strict=True):
        chunk = cells[start:end]
        first = chunk[0][0]  # cells are in layer order: the earliest patched block
        by_name: dict[str, list[tuple[int, int]]] = {}
        for row, (layer, col) in enumerate(chunk):
            by_name.setdefault(f"blocks.{layer}.{name}", []).append((row, col))
        edits = {key: _patch_edit(rows, clean_cache[key]) for key, rows in by_name.items()}
        x = corrupt_cache[f"blocks.{first}.resid_pre"].expand(len(chunk), -1, -1)
        out = model.run_blocks(x, start_layer=first, capture=Capture((), edits))
        values[start:end] = metric(model.head(out[:, -1])).cpu()
        if progress is not None:
            progress(end, len(cells))
    values = values.reshape(n_layers, n_cols)
    span = clean_metric - corrupt_metric
    normalised = (values - corrupt_metric) / span if abs(span) > 1e-9 else values * float("nan")
    return PatchGrid(site, values, normalised, clean_metric, corrupt_metric)


@torch.no_grad()
def patched_outcome(model: nn.Module, clean_ids: Tensor, corrupt_ids: Tensor, site: str,
                    layer: int, column: int, k: int = 10) -> Outcome:
    """The corrupted run with one activation patched from the clean run (a grid's cell)."""
    _check(model, clean_ids, corrupt_ids, site)
    key = f"blocks.{layer}.{SITES[site][0]}"
    _, clean_cache = model.run_with_cache(clean_ids, names=[key], last_only=True)
    logits = model(corrupt_ids, edits={key: _patch_edit([(0, column)], clean_cache[key])})
    return outcome_of_logits(logits, corrupt_ids, k, next_token=model.cfg.kind == "decoder")


def column_labels(site: str, token_labels: Sequence[str], n_heads: int) -> list[str]:
    """Labels of a grid's columns: the tokens, or ``head h``."""
    if SITES[site][1] == "head":
        return [f"head {h}" for h in range(n_heads)]
    return list(token_labels)
