"""The cells of an attention heatmap: colour scales, block pooling and axis labels.

Shared by the builders in :mod:`explorer.viz.attention`. Attention weights are in [0, 1] and a
head with an attention sink (Xiao et al. 2023) puts almost all weight on one key, so the
colour scale can be linear, square-root or log; the colour bar is always labelled in weights and
hover always shows the raw weight. Long inputs are block-pooled so that one heatmap stays under
about 2 MB in the browser (the numpy twin of :func:`explorer.analysis.pool_pattern`), and a
pooled axis is labelled with token ranges. Shapes: ``Q`` queries, ``K`` keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from explorer.viz.tokens import escape_for_plotly

COLOURSCALE = "Blues"
LOG_FLOOR = 1e-4


def as_array(values: Any) -> np.ndarray:
    """A float32 numpy copy of a numpy array or a torch tensor (any device, dtype, grad)."""
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


# --------------------------------------------------------------------------- colour scales


@dataclass(frozen=True)
class ColourScale:
    """Maps weights in [0, 1] to colour values; ticks are labelled with the weights."""

    transform: Callable[[np.ndarray], np.ndarray]
    tick_weights: tuple[float, ...]
    note: str


def _log10_or_nan(weights: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(weights > 0, np.log10(np.maximum(weights, LOG_FLOOR)), np.nan)


COLOUR_SCALES: dict[str, ColourScale] = {
    "linear": ColourScale(lambda w: w, (0.0, 0.25, 0.5, 0.75, 1.0), "linear colour scale"),
    "sqrt": ColourScale(
        np.sqrt, (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0), "square-root colour scale"
    ),
    "log": ColourScale(
        _log10_or_nan, (1e-4, 1e-3, 1e-2, 0.1, 1.0),
        f"log colour scale (weights below {LOG_FLOOR:g} shown at {LOG_FLOOR:g}, zeros blank)",
    ),
}


def colour_scale(scale: str) -> ColourScale:
    if scale not in COLOUR_SCALES:
        raise KeyError(f"unknown colour scale {scale!r}; known: {sorted(COLOUR_SCALES)}")
    return COLOUR_SCALES[scale]


def colour_axis(scale: str) -> dict[str, Any]:
    """Shared colour range and colour bar: the range is always weights 0..1."""
    colour = colour_scale(scale)
    ticks = np.array(colour.tick_weights, dtype=np.float32)
    tick_values = colour.transform(ticks)
    return {
        "colorscale": COLOURSCALE,
        "cmin": float(np.nanmin(tick_values)),
        "cmax": float(np.nanmax(tick_values)),
        "colorbar": {
            "title": {"text": "weight"},
            "tickvals": tick_values.tolist(),
            "ticktext": [f"{t:g}" for t in colour.tick_weights],
        },
    }


# --------------------------------------------------------------------------- pooling and labels


def pool_matrix(matrix: np.ndarray, max_cells: int) -> tuple[np.ndarray, list[int], list[int]]:
    """Numpy twin of :func:`explorer.analysis.pool_pattern`: ``[..., Q, K] -> [..., Qb, Kb]``.

    Block size per side is ``ceil(size / max_cells)``; a pooled cell sums the weights over its
    key block and averages over its query block, so pooled rows still sum to 1. Returns the
    pooled matrix and the first position of each query and key block.
    """
    if max_cells < 1:
        raise ValueError("max_cells must be at least 1")
    n_q, n_k = matrix.shape[-2:]
    q_starts = np.arange(0, n_q, math.ceil(n_q / max_cells))
    k_starts = np.arange(0, n_k, math.ceil(n_k / max_cells))
    key_summed = np.add.reduceat(matrix, k_starts, axis=-1)
    rows_per_block = np.diff(np.append(q_starts, n_q)).astype(matrix.dtype)
    pooled = np.add.reduceat(key_summed, q_starts, axis=-2) / rows_per_block[:, None]
    return pooled, q_starts.tolist(), k_starts.tolist()


def distinct_labels(labels: Sequence[str]) -> list[str]:
    """Labels as given when distinct, else position-prefixed (plotly merges equal ones)."""
    labels = [str(label) for label in labels]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{i}: {label}" for i, label in enumerate(labels)]


def axis_labels(labels: Sequence[str], starts: list[int], n: int) -> list[str]:
    """Escaped axis labels; a pooled block of several tokens reads ``tok 12–15``."""
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} positions")
    if len(starts) == n:
        return [escape_for_plotly(label) for label in distinct_labels(labels)]
    spans = zip(starts, [*starts[1:], n], strict=True)
    return [f"tok {s}–{e - 1}" if e - s > 1 else f"tok {s}" for s, e in spans]


def pooled_note(n_q: int, n_k: int, shape: tuple[int, ...], q_starts, k_starts) -> str:
    q_block = q_starts[1] - q_starts[0] if len(q_starts) > 1 else 1
    k_block = k_starts[1] - k_starts[0] if len(k_starts) > 1 else 1
    return (
        f"Pooled {n_q}×{n_k} into {shape[-2]}×{shape[-1]} blocks of up to {q_block}×{k_block} "
        "tokens: each cell is the mean over its queries of the total weight on its keys."
    )


def heatmap_trace(weights: np.ndarray, xs: list[str], ys: list[str], scale: str, who: str = ""):
    """A heatmap trace with hover in raw weights whatever the colour transform."""
    colour = colour_scale(scale)
    trace: dict[str, Any] = {
        "z": colour.transform(weights).astype(np.float32),
        "x": xs,
        "y": ys,
        "hovertemplate": f"{who}query: %{{y}}<br>key: %{{x}}<br>weight: %{{z:.4f}}<extra></extra>",
    }
    if scale != "linear":
        trace["customdata"] = weights.astype(np.float32)
        trace["hovertemplate"] = trace["hovertemplate"].replace("%{z:.4f}", "%{customdata:.4f}")
    return go.Heatmap(**trace)
