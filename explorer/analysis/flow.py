"""Information flow routes (Ferrando & Voita 2024, "Information Flow Routes: Automatically
Interpreting Language Models at Scale"; the LLM Transparency Tool's contribution graph).

A pre-norm block writes sums: after attention, token i's residual is
``y_i = x_i + sum_j sum_h A_h[i, j] (v_h(x_j) W_O,h) + b_O``, one term per source token j
(its value vectors through every head, weighted by the pattern), plus the residual itself;
after the MLP, ``y_i = m_i + mlp(m_i)``. Each term's importance for ``y`` is its
*proximity* ``max(0, |y|_1 - |y - c|_1)``, normalised over the terms so they sum to 1: a
term that alone would land near ``y`` matters, one that points elsewhere does not. Kept
above a threshold and followed back from the prediction, these importances are a graph of
the routes information took through the layers.

Shapes: ``H`` heads, ``N`` positions, ``D`` d_model, ``L`` layers, ``C`` terms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

ROWS_PER_CHUNK = 32  # target positions whose [rows, N, D] terms are built at once


def proximity(y: Tensor, terms: Tensor) -> Tensor:
    """``[..., C]`` normalised importances of ``terms`` ``[..., C, D]`` that sum to ``y``
    ``[..., D]``: ``max(0, |y|_1 - |y - c|_1)`` over their sum (all 0 when none is close)."""
    raw = (y.abs().sum(-1, keepdim=True) - (y[..., None, :] - terms).abs().sum(-1)).clamp_min(0)
    total = raw.sum(-1, keepdim=True)
    return torch.where(total > 0, raw / total.clamp_min(1e-30), torch.zeros_like(raw))


def _source_terms(pattern: Tensor, values_out: Tensor) -> Tensor:
    """``[r, w, D]``: ``sum_h pattern[h, i, j] * values_out[h, j]``, one head at a time in
    place (einsum's batched-matmul path for this shape was 3-15x slower, and erratic, on a
    busy 2-core CPU)."""
    terms = pattern[0, :, :, None] * values_out[0, None]
    for head in range(1, pattern.shape[0]):
        terms.addcmul_(pattern[head, :, :, None], values_out[head, None])
    return terms


def attention_importances(pattern: Tensor, values_out: Tensor, resid_pre: Tensor,
                          resid_mid: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    """Importances of one attention block's terms for every token's ``resid_mid`` ``[N, D]``:
    each source token's ``[N, N]`` (row i: the sources j that token i read; the output bias
    is the remainder ``resid_mid - resid_pre - sum_j``, a term of its own) and the
    residual's ``[N]``. ``pattern`` ``[H, N, N]``; ``values_out`` ``[H, N, D]``: each head's
    value vector of each token through its slice of the output projection. ``causal``
    (a decoder's pattern) skips the sources after each row, which it never reads."""
    n = resid_pre.shape[0]
    sources = torch.zeros(n, n)
    residual = torch.empty(n)
    for start in range(0, n, ROWS_PER_CHUNK):
        rows = slice(start, min(start + ROWS_PER_CHUNK, n))
        width = rows.stop if causal else n  # sources a row of this chunk can read
        terms = _source_terms(pattern[:, rows, :width].float(), values_out[:, :width].float())
        y = resid_mid[rows].float()
        bias = y - resid_pre[rows].float() - terms.sum(1)  # [r, D]: b_O (0 without a bias)
        parts = torch.cat((terms, resid_pre[rows, None].float(), bias[:, None]), dim=1)
        shares = proximity(y, parts)  # [r, width + 2]
        sources[rows, :width], residual[rows] = shares[:, :width], shares[:, width]
    return sources, residual


def mlp_importances(resid_mid: Tensor, resid_post: Tensor) -> tuple[Tensor, Tensor]:
    """The MLP's ``[N]`` and the residual's ``[N]`` importances for ``resid_post``."""
    mid, post = resid_mid.float(), resid_post.float()
    shares = proximity(post, torch.stack((post - mid, mid), dim=1))  # [N, 2]
    return shares[:, 0], shares[:, 1]


@dataclass(frozen=True)
class FlowImportances:
    """Every block's importances: ``attn [L, N, N]`` (token i at layer l reading source j),
    ``attn_resid [L, N]``, ``mlp [L, N]`` and ``mlp_resid [L, N]``."""

    attn: Tensor
    attn_resid: Tensor
    mlp: Tensor
    mlp_resid: Tensor

    @property
    def n_layers(self) -> int:
        return self.attn.shape[0]


@dataclass(frozen=True)
class Edge:
    """From node (``layer``, ``source``) to (``layer``, ``target``): ``kind`` ``"attn"``
    (token ``source`` read by ``target`` in block ``layer``'s attention), ``"resid"`` (the
    residual through the attention half), ``"mlp"`` (the MLP's write) or ``"mlp_resid"``.
    Nodes are ``(layer, position, half)``: half 0 is the block's input, 1 after attention;
    ``(L, position, 0)`` is the final residual."""

    kind: str
    layer: int
    source: int
    target: int
    importance: float


def flow_graph(flow: FlowImportances, position: int, threshold: float) -> list[Edge]:
    """The edges of importance >= ``threshold`` (and > 0) on a route back from the final
    residual at ``position``: starting there, each kept edge's source becomes a node to
    explain in turn."""
    floor = max(threshold, 1e-12)
    edges: list[Edge] = []
    active = {position}  # positions whose residual at the current point is explained
    for layer in reversed(range(flow.n_layers)):
        mid_active = set()
        for i in sorted(active):  # MLP half: post_i <- mlp(mid_i) + mid_i
            mlp, resid = float(flow.mlp[layer, i]), float(flow.mlp_resid[layer, i])
            if mlp >= floor:
                edges.append(Edge("mlp", layer, i, i, mlp))
            if resid >= floor or mlp >= floor:  # the MLP reads mid_i
                mid_active.add(i)
                if resid >= floor:
                    edges.append(Edge("mlp_resid", layer, i, i, resid))
        active = set()
        for i in sorted(mid_active):  # attention half: mid_i <- sum_j (j -> i) + pre_i
            resid = float(flow.attn_resid[layer, i])
            if resid >= floor:
                edges.append(Edge("resid", layer, i, i, resid))
                active.add(i)
            for j in (flow.attn[layer, i] >= floor).nonzero()[:, 0].tolist():
                edges.append(Edge("attn", layer, j, i, float(flow.attn[layer, i, j])))
                active.add(j)
    return edges


def head_importances(pattern: Tensor, values_out: Tensor, resid_mid: Tensor, target: int,
                     source: int) -> Tensor:
    """``[H]``: how each head's share of the edge ``source -> target`` splits it (the
    proximity of each head's term ``A_h[t, s] v_h(x_s) W_O,h`` to ``resid_mid[target]``,
    normalised over the heads)."""
    terms = pattern[:, target, source, None].float() * values_out[:, source].float()  # [H, D]
    return proximity(resid_mid[target].float(), terms)


def layer_importances(n_layers: int, layer_inputs: Callable[[int], tuple[Tensor, ...]],
                      causal: bool = False) -> FlowImportances:
    """Every block's importances from ``layer_inputs(l) = (pattern [H, N, N],
    values_out [H, N, D], resid_pre, resid_mid, resid_post [N, D])``, one layer at a time
    (``causal``: a decoder's)."""
    parts: dict[str, list[Tensor]] = {"attn": [], "attn_resid": [], "mlp": [], "mlp_resid": []}
    for layer in range(n_layers):
        pattern, values_out, pre, mid, post = layer_inputs(layer)
        sources, resid = attention_importances(pattern, values_out, pre, mid, causal)
        mlp, mlp_resid = mlp_importances(mid, post)
        for key, value in zip(parts, (sources, resid, mlp, mlp_resid), strict=True):
            parts[key].append(value)
    return FlowImportances(**{key: torch.stack(values) for key, values in parts.items()})
