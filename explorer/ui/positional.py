"""Streamlit glue for the positional-encodings page: cached runs of the prompt, CSV downloads.

One :class:`PositionRun` per (model, prompt) and session holds the prompt's tokens and the
residual stream entering every layer of the self-attention stack (``resid_pre``, views of
the shared run's), so a
layer's real queries and keys (`explorer.nn.position_probe.layer_qk`) cost one layer's
projections. The "why position matters" checks run the stack a few times on the first
:data:`PROBE_TOKENS` tokens (`explorer.nn.position_probe.probe_forward`), cached per seed and
shift. Every chart is drawn by :func:`chart_with_csv`: the figure, then a download of its
numbers as CSV (labels guarded against spreadsheet formulas). :func:`prompt_run` reads
``resid_pre`` from the prompt's shared run (`explorer.ui.runs`), so this page runs no
forward of its own for a prompt another page has run. Each section of the page is a
fragment made by :func:`section` (timed into ``st.session_state[TIMINGS_KEY]``, its errors
shown in place); :func:`keep_in` and :func:`clamp` keep a widget's stored value valid when
the model or prompt changes what it may be.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from explorer.analysis.positional import (
    PairCarriers,
    pair_carriers,
    pattern_changes,
    permutation_errors,
)
from explorer.nn.position_probe import LayerQK, layer_qk, probe_forward, self_attention_stack
from explorer.ui.downloads import spreadsheet_safe
from explorer.ui.export import show_chart
from explorer.ui.resources import model_label
from explorer.ui.runs import shared_run
from explorer.ui.widgets import chips_for, tokenize

log = logging.getLogger(__name__)

MAX_TOKENS = 256  # the rotary views read at most this many tokens of the prompt
PROBE_TOKENS = 24  # the permutation and shift checks run on at most this many (one batched
# forward of 4 x 24 tokens: a seed change answers in about 0.3 s on SmolLM2 here)
ONE_POSITION, IN_ORDER = "all tokens at one position", "positions 0, 1, 2, …"
TIMINGS_KEY = "pos_section_ms"  # st.session_state[TIMINGS_KEY][section]: ms to draw it


@dataclass(frozen=True)
class PositionRun:
    """A prompt's tokens (cut to ``limit``) and the residual stream entering every layer."""

    key: str
    ids: torch.Tensor  # [1, N]
    labels: list[str]  # "pos: token" per position
    total: int  # tokens before the cut
    resid_pre: list[torch.Tensor] | None  # per layer [1, N, D]; None when not needed


def _prompt_tokens(lm: Any, text: str, limit: int) -> tuple[torch.Tensor, list[str], int]:
    ids, pieces = tokenize(model_label(lm), text, lm.tokenizer)
    chips = chips_for(lm.tokenizer, ids[:limit], pieces[:limit])
    labels = [f"{chip.position}: {chip.label}" for chip in chips]
    return torch.tensor([ids[:limit]], device=lm.device), labels, len(ids)


@st.cache_resource(scope="session", max_entries=2, show_spinner=False)
def prompt_run(label: str, text: str, limit: int, with_residuals: bool, _lm: Any) -> PositionRun:
    """Tokenize ``text`` and, when asked, keep ``resid_pre`` of every self-attention layer."""
    ids, labels, total = _prompt_tokens(_lm, text, limit)
    resid_pre = None
    if with_residuals and ids.shape[1]:
        n, kind = ids.shape[1], _lm.config.kind
        if kind == "decoder" or total <= limit:
            # The prompt's shared run (no forward of our own). A causal stack's first n
            # positions do not see the rest, so cutting its stream equals running the cut
            # prompt; a bidirectional one is cut only when nothing was cut.
            stream = shared_run(_lm, text).run.streams["encoder" if kind == "encoder-decoder"
                                                       else "main"]
            resid_pre = [stream.boundaries[i][None, :n].to(_lm.device, _lm.dtype)
                         for i in range(stream.n_layers)]
        else:
            cache = probe_forward(_lm.model, ids, names=("blocks.*.resid_pre",))
            resid_pre = [cache[f"blocks.{i}.resid_pre"] for i in range(len(cache))]
    return PositionRun(f"{label}|{hash(text)}|{limit}", ids, labels, total, resid_pre)


@dataclass(frozen=True)
class LayerPositions:
    """One layer's real queries/keys, its pattern and the per-pair summary of its scores."""

    qk: LayerQK
    pattern: torch.Tensor  # [H, N, N]
    carriers: PairCarriers


@st.cache_resource(scope="session", max_entries=4, show_spinner=False)
def layer_positions(run_key: str, layer: int, _run: PositionRun, _lm: Any) -> LayerPositions:
    """Queries, keys, pattern and pair carriers of one layer (cached per run and layer)."""
    stack = self_attention_stack(_lm.model)
    qk = layer_qk(stack, layer, _run.resid_pre[layer])
    pattern = qk.pattern().float()
    allowed = torch.isfinite(qk.bias[0]) if qk.bias is not None else torch.ones_like(pattern[0],
                                                                                     dtype=bool)
    carriers = pair_carriers(qk.q.float(), qk.k.float(), pattern, allowed, qk.scale)
    return LayerPositions(qk, pattern, carriers)


@st.cache_data(max_entries=8, show_spinner=False)
def permutation_check(run_key: str, seed: int, _run: PositionRun, _lm: Any) -> dict[str, list]:
    """Per-layer permutation error of the stack's outputs with every token at one position
    and at positions 0..n-1, without the causal mask (it is positional information too).

    One forward: the prompt and its shuffle, each at both kinds of positions, in one batch.
    """
    ids = _run.ids[:, :PROBE_TOKENS]  # [1, n]
    n = ids.shape[1]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(ids.device)
    batch = torch.cat([ids, ids[:, perm]] * 2)  # [4, n]
    where = torch.arange(n, device=ids.device)
    positions = torch.stack([where, where, where * 0, where * 0])  # [4, n]
    cache = probe_forward(_lm.model, batch, positions=positions, causal=False,
                          names=("blocks.*.resid_post",))
    out = cache.stack("resid_post").float()  # [L, 4, n, D]
    return {
        ONE_POSITION: permutation_errors(out[:, 2], out[:, 3], perm).tolist(),
        IN_ORDER: permutation_errors(out[:, 0], out[:, 1], perm).tolist(),
    }


@st.cache_data(max_entries=8, show_spinner=False)
def shift_check(run_key: str, shift: int, _run: PositionRun, _lm: Any) -> list[float]:
    """Per-layer largest change of an attention weight when every position moves by ``shift``
    (one forward: both placements in one batch)."""
    ids = _run.ids[:, :PROBE_TOKENS]
    where = torch.arange(ids.shape[1], device=ids.device)
    cache = probe_forward(_lm.model, torch.cat([ids, ids]),
                          positions=torch.stack([where, where + shift]),
                          names=("blocks.*.attn.pattern",))
    patterns = cache.stack("attn.pattern").float()  # [L, 2, H, n, n]
    return pattern_changes(patterns[:, 0], patterns[:, 1]).tolist()


# --------------------------------------------------------------------------- CSV and charts


def columns_csv(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """CSV of equally long columns (first row: their names); text cells spreadsheet-safe."""
    lists = [list(values.tolist() if hasattr(values, "tolist") else values)
             for values in columns.values()]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(columns))
    for row in zip(*lists, strict=True):
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else spreadsheet_safe(v)
                         for v in row])
    return out.getvalue().encode("utf-8")


def matrix_csv(matrix: Any, row_name: str, col_name: str, value_name: str,
               rows: Sequence[Any] | None = None, cols: Sequence[Any] | None = None) -> bytes:
    """Tidy CSV of a matrix [R, C]: one line per cell (row, column, value)."""
    values = torch.as_tensor(matrix).detach().double().cpu()
    n_rows, n_cols = values.shape
    rows = list(range(n_rows)) if rows is None else list(rows)
    cols = list(range(n_cols)) if cols is None else list(cols)
    return columns_csv({
        row_name: [r for r in rows for _ in cols],
        col_name: cols * n_rows,
        value_name: values.flatten().tolist(),
    })


def chart_with_csv(figure: Any, csv: Callable[[], bytes], file_name: str, key: str) -> None:
    """A plotly chart and, under it, the download of its numbers (built only on click)."""
    show_chart(figure, key=f"{key}_fig", csv=False)
    st.download_button("CSV", data=csv, file_name=file_name, mime="text/csv",
                       on_click="ignore", icon=":material/download:", key=f"{key}_csv")


# --------------------------------------------------------------------------- sections


def timed_section(name: str, draw: Callable[..., None]) -> Callable[..., None]:
    """``draw`` timed into ``st.session_state[TIMINGS_KEY][name]`` (ms), its errors shown as
    an ``st.error`` in its place (the model or the text may refuse; the page keeps going)."""

    @functools.wraps(draw)
    def run(*args: Any) -> None:
        started = time.perf_counter()
        try:
            draw(*args)
        except Exception as exc:
            log.exception("positional section %s failed", name)
            st.error(f"This section failed: {type(exc).__name__}.")
        elapsed_ms = 1000 * (time.perf_counter() - started)
        st.session_state.setdefault(TIMINGS_KEY, {})[name] = elapsed_ms
        log.info("positional section %s drawn in %.0f ms", name, elapsed_ms)

    return run


def section(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A page section: a fragment (its controls rerun only it), timed and with its errors
    contained (:func:`timed_section`)."""
    return lambda draw: st.fragment(timed_section(name, draw))


def keep_in(key: str, options: list, fallback: Any) -> None:
    """Reset a widget's stored value when the model or prompt no longer offers it."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = fallback


def clamp(key: str, low: int, high: int, default: int) -> None:
    """Keep a slider's stored value inside a range that depends on the model or prompt."""
    value = st.session_state.get(key, default)
    st.session_state[key] = min(max(int(value), low), high)
