"""Streamlit glue for the Layers page: one fragment per view of the shared run.

Each section reads the page's :class:`~explorer.ui.runs.PageRun` (no forward of its own),
asks `explorer.runs` for the numbers (memoised in the run), turns them into tidy frames for
the CSV downloads and into figures from `explorer.viz.layers` (memoised per session). A
section is an ``st.fragment``, so moving one of its widgets reruns that section alone; its
time is kept in ``st.session_state[SECTION_MS][name]`` for the benchmark. The page draws
only the open tab's section (:func:`draw_open_section`): a tab switch reruns the page.
Logit lens: nostalgebraist 2020; direct logit attribution: Elhage et al. 2021.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from explorer.models.tokenizer import tokenizer_lock
from explorer.runs import (
    ResidualStream,
    Row,
    contributions,
    contributions_unavailable,
    cosine_matrix,
    lens,
    lens_stream,
    pca_layers,
    stream_norms,
    token_trajectory,
)
from explorer.ui.downloads import csv_button
from explorer.ui.export import show_chart
from explorer.ui.runs import PageRun, memo_figure
from explorer.ui.url_state import in_url
from explorer.ui.widgets import escape_markdown, is_byte_level
from explorer.viz.layers import (
    contributions_chart,
    lines_chart,
    logit_lens_grid,
    pca_scatter,
    trajectory_chart,
    value_heatmap,
)
from explorer.viz.token_chips import readable_piece
from explorer.viz.tokens import display_token

log = logging.getLogger(__name__)

SECTION_MS = "layers_ms"
LENS_K = 5
LENS_WIDTHS = (8, 12, 16, 24, 32)  # positions shown at once in the lens grid
MAX_TARGET_POSITIONS = 6
STATS = {"prob": "Probability of the top token", "entropy": "Entropy",
         "kl": "KL divergence to the final output"}
NO_LENS = ("{name} has no unembedding (it was trained for sentence embeddings, without a "
           "masked-LM head), so there is nothing to read the residual stream through; the "
           "residual-stream and geometry views below still work.")


@contextmanager
def timed(section: str, store: str = SECTION_MS) -> Iterator[None]:
    """Record how long a section took (ms) in ``st.session_state[store][section]``, for the
    benchmark and the page's caption."""
    start = time.perf_counter()
    try:
        yield
    finally:
        st.session_state.setdefault(store, {})[section] = 1000 * (time.perf_counter() - start)


def token_texts(tokenizer: Any, ids: torch.Tensor) -> np.ndarray:
    """Display text of every id, same shape: the piece as the token chips show it (bytes
    of a partial character as ``\\xNN``, spaces as ``␣``; an id the tokenizer lacks as
    ``⟨id N⟩``)."""
    flat = ids.reshape(-1).tolist()
    unique = sorted(set(flat))
    with tokenizer_lock(tokenizer):  # one tokenizer serves every session's thread
        byte_level = is_byte_level(tokenizer)
        pieces = tokenizer.convert_ids_to_tokens(unique)
    # An id past the tokenizer's vocabulary (embedding rows padded beyond it, or a random
    # model predicting one) has no piece: show its number.
    texts = {i: readable_piece(p, byte_level) if p is not None else f"⟨id {i}⟩"
             for i, p in zip(unique, pieces, strict=True)}
    return np.array([texts[i] for i in flat], dtype=object).reshape(tuple(ids.shape))


def stream_labels(page_run: PageRun, stream_name: str) -> list[str]:
    """Display labels (``"pos: token"``) of the tokens a stream runs over."""
    return page_run.labels["target" if stream_name == "decoder" else "source"]


def stream_choice(page_run: PageRun, key: str) -> str:
    """The residual stream to show: T5 has two (encoder, decoder), others one."""
    names = list(page_run.run.streams)
    if len(names) == 1:
        return names[0]
    return st.radio("Stack", names, horizontal=True, **in_url(key), index=len(names) - 1,
                    format_func=lambda s: {"encoder": "Encoder", "decoder": "Decoder"}[s])


def forget_unless(key: str, allowed: Container[Any]) -> None:
    """Drop the kept value of widget ``key`` when it is not in ``allowed``, so the widget
    starts from its default. Streamlit keeps a URL-bound widget's value while its tab is
    hidden, and the prompt or the model may change meanwhile: a select box then falls back
    to its default by itself, but ``st.slider`` raises on a value outside its range."""
    if key in st.session_state and st.session_state[key] not in allowed:
        del st.session_state[key]


def row_options(n_layers: int) -> list[Row]:
    """The embeddings and every block's output, as a layer slider offers them."""
    return [Row(-1), *(Row(layer) for layer in range(n_layers))]


# --------------------------------------------------------------------------- logit lens


def _default_stride(n_layers: int, sublayers: bool) -> int:
    per_block = 2 if sublayers else 1
    return max(1, -(-n_layers * per_block // 32))


def lens_stream_or_info(lm: Any, page_run: PageRun) -> ResidualStream | None:
    """The stream the lens reads, or None after saying why the model has none."""
    stream = lens_stream(page_run.run)
    if stream is None:
        st.info(NO_LENS.format(name=escape_markdown(lm.name)))
    return stream


@st.fragment
def lens_section(lm: Any, page_run: PageRun) -> None:
    run = page_run.run
    if (stream := lens_stream_or_info(lm, page_run)) is None:
        return
    with timed("lens"):
        labels = stream_labels(page_run, stream.name)
        n, n_layers = len(labels), stream.n_layers
        controls = st.columns([3, 2, 2, 2])
        stat = controls[0].radio("Colour cells by", list(STATS), horizontal=True,
                                 format_func=STATS.get, **in_url("layers_lens_stat"))
        sublayers = controls[1].toggle("Sub-layer rows", **in_url("layers_lens_sub"),
                                       help="Add the residual stream after each attention "
                                            "sub-layer (resid_mid), before the MLP.")
        strides = [s for s in (1, 2, 3, 4, 6, 8) if s <= max(1, n_layers // 2)] or [1]
        default = min(strides, key=lambda s: abs(s - _default_stride(n_layers, sublayers)))
        stride = controls[2].select_slider("Layer stride", strides, value=default,
                                           **in_url(f"layers_lens_stride_{sublayers}"),
                                           help="Show every k-th block; the last is kept.")
        width = min(n, controls[3].select_slider("Positions shown", LENS_WIDTHS, value=16,
                                                 **in_url("layers_lens_width")))
        start = 0
        if n > width:
            forget_unless("layers_lens_start", range(n - width + 1))
            start = st.slider("First position shown", 0, n - width, n - width,
                              **in_url("layers_lens_start"),
                              help=f"{n:,} positions: the grid shows a window of {width}.")
        rows = stream.rows(sublayers, stride)
        positions = list(range(start, start + width))
        summary = lens(run, rows, positions, LENS_K)
        values = {"prob": summary.top_probs[..., 0], "entropy": summary.entropy,
                  "kl": summary.kl}[stat]
        row_labels = [row.label for row in rows]
        col_labels = [labels[p] for p in positions]

        def figure() -> Any:
            texts = token_texts(lm.tokenizer, summary.top_ids)
            return logit_lens_grid(texts, summary.top_probs, values, row_labels, col_labels,
                                   stat, "Logit lens: the top token at every layer")

        key = (page_run.key, "lens", tuple(rows), tuple(positions), stat)
        show_chart(memo_figure(key, figure, "layers"), key="layers_lens_fig", csv=False)
        st.caption("Each cell reads the residual stream at that row through the model's final "
                   "norm and unembedding (the logit lens). The top row is the model's real "
                   "output; hover a cell for its five most likely tokens.")

        def frame() -> pd.DataFrame:
            texts = token_texts(lm.tokenizer, summary.top_ids)
            records = []
            for r, row in enumerate(row_labels):
                for c, position in enumerate(positions):
                    for rank in range(summary.top_ids.shape[-1]):
                        records.append({
                            "row": row, "position": position, "input": col_labels[c],
                            "rank": rank + 1, "token_id": int(summary.top_ids[r, c, rank]),
                            "token": texts[r, c, rank],
                            "probability": float(summary.top_probs[r, c, rank]),
                            "entropy": float(summary.entropy[r, c]),
                            "kl_to_final": float(summary.kl[r, c])})
            return pd.DataFrame.from_records(records)

        csv_button("Download the lens grid (CSV)", frame, "logit_lens.csv", "layers_lens_csv")


# --------------------------------------------------------------------------- target token


def resolve_target(tokenizer: Any, text: str) -> tuple[int | None, str | None]:
    """(token id, None) when ``text`` is exactly one token; (None, None) when empty (use the
    model's predictions); (None, message) otherwise."""
    if text == "":
        return None, None
    with tokenizer_lock(tokenizer):
        ids = tokenizer.encode(text, add_special_tokens=False)
        spaced = tokenizer.encode(" " + text, add_special_tokens=False)
        pieces = [tokenizer.decode([i]) for i in ids]
    if len(ids) == 1:
        return int(ids[0]), None
    pieces = ", ".join(f"“{display_token(p)}”" for p in pieces)
    hint = ""
    if not text.startswith(" ") and len(spaced) == 1:
        hint = f" “␣{text}” (with a leading space) is one token."
    what = "no token" if not ids else f"{len(ids)} tokens ({pieces})"
    return None, escape_markdown(f"“{text}” is {what} here; type a single token.{hint}")


def target_widgets(lm: Any, page_run: PageRun, stream_name: str
                   ) -> tuple[list[int], list[int]] | None:
    """The chosen positions and the target token at each (the model's own prediction
    there when no token is typed); None (with a warning shown) for a bad token."""
    labels = stream_labels(page_run, stream_name)
    if st.session_state.get("layers_positions") and not set(
            st.session_state["layers_positions"]) <= set(labels):
        del st.session_state["layers_positions"]  # a new prompt: the old labels are gone
    chosen = st.multiselect("Positions", labels, default=[labels[-1]], **in_url("layers_positions"),
                            max_selections=MAX_TARGET_POSITIONS,
                            help="The token after each of these positions is predicted.")
    typed = st.text_input("Target token (empty: the model's prediction at each position)",
                          max_chars=64, **in_url("layers_target"))
    if not chosen:
        st.info("Pick at least one position.")
        return None
    target, problem = resolve_target(lm.tokenizer, typed)
    if problem:
        st.warning(problem)
        return None
    positions = [labels.index(label) for label in chosen]
    if target is not None:
        return positions, [target] * len(positions)
    stream = page_run.run.streams[stream_name]
    final = lens(page_run.run, [Row(stream.n_layers - 1)], positions, 1)
    return positions, final.top_ids[0, :, 0].tolist()


@st.fragment
def target_section(lm: Any, page_run: PageRun) -> None:
    run = page_run.run
    if (stream := lens_stream_or_info(lm, page_run)) is None:
        return
    with timed("target"):
        picked = target_widgets(lm, page_run, stream.name)
        if picked is None:
            return
        positions, targets = picked
        sublayers = st.toggle("Sub-layer rows", **in_url("layers_target_sub"),
                              help="Add the residual stream after each attention sub-layer "
                                   "(resid_mid), before the MLP.")
        rows = stream.rows(sublayers)
        probs, ranks = token_trajectory(run, rows, positions, targets)
        labels = stream_labels(page_run, stream.name)
        names = token_texts(lm.tokenizer, torch.tensor(targets)).tolist()
        series = [f"{labels[p]} → {name}" for p, name in zip(positions, names, strict=True)]
        row_labels = [row.label for row in rows]
        key = (page_run.key, "trajectory", tuple(rows), tuple(positions), tuple(targets))
        show_chart(memo_figure(key, lambda: trajectory_chart(row_labels, probs, ranks,
                                                             series), "layers"),
                   key="layers_target_fig", csv=False)
        st.caption("Where in the network the target becomes likely: its probability and "
                   "rank when the stream at each row is read through the final norm and "
                   "unembedding.")
        csv_button("Download probabilities and ranks (CSV)", lambda: pd.DataFrame.from_records(
            [{"row": row, "position": p, "target": name, "probability": float(probs[r, s]),
              "rank": int(ranks[r, s]) + 1}
             for r, row in enumerate(row_labels)
             for s, (p, name) in enumerate(zip(positions, names, strict=True))]),
            "target_token.csv", "layers_target_csv")
        contributions_view(lm, page_run, positions, targets)


def contributions_view(lm: Any, page_run: PageRun, positions: list[int], targets: list[int]
                       ) -> None:
    """Direct logit attribution of the target at one of the chosen positions."""
    run = page_run.run
    st.subheader("Direct contributions")
    if (why := contributions_unavailable(run)) is not None:
        st.info(f"Direct contributions are not available for {escape_markdown(lm.name)}: "
                f"{why}.")
        return
    labels = stream_labels(page_run, lens_stream(run).name)
    columns = st.columns([3, 2])
    index = columns[0].selectbox("Position", range(len(positions)), index=len(positions) - 1,
                                 **in_url("layers_contrib_pos"),
                                 format_func=lambda i: labels[positions[i]])
    how = columns[1].radio("Chart", ["bars", "waterfall"], horizontal=True,
                           **in_url("layers_contrib_how"),
                           format_func={"bars": "Bar per part", "waterfall": "Running sum"}.get)
    index = min(index, len(positions) - 1)
    position, target = positions[index], targets[index]
    parts = contributions(run, position, target)
    token = token_texts(lm.tokenizer, torch.tensor([target]))[0]
    title = f"Direct contributions to the logit of “{token}” after {labels[position]}"
    key = (page_run.key, "contributions", position, target, how)
    show_chart(memo_figure(key, lambda: contributions_chart(
        parts.labels, parts.values, parts.constant, parts.logit, how, title), "layers"),
        key="layers_contrib_fig", csv=False)
    order = torch.argsort(parts.values.abs(), descending=True)[:3].tolist()
    biggest = ", ".join(f"{escape_markdown(parts.labels[i])} ({float(parts.values[i]):+.2f})"
                        for i in order)
    st.caption(
        "What each component wrote into the residual stream, read through the final norm "
        "(its scale frozen at the real run's value) and the unembedding row of the target. "
        f"The parts add up to the real logit {parts.logit:.3f} (sum "
        f"{float(parts.values.sum()) + parts.constant:.3f}). Largest: {biggest}.")
    csv_button("Download the contributions (CSV)", lambda: pd.DataFrame(
        {"part": [*parts.labels, "biases"],
         "contribution": [*parts.values.tolist(), parts.constant]}),
        "contributions.csv", "layers_contrib_csv")


# --------------------------------------------------------------------------- residual stream


@st.fragment
def residual_section(lm: Any, page_run: PageRun) -> None:
    stream_name = stream_choice(page_run, "layers_resid_stream")
    with timed("residual"):
        stream = page_run.run.streams[stream_name]
        norms = stream_norms(page_run.run, stream_name)
        labels = stream_labels(page_run, stream_name)
        rows = [row.label for row in row_options(stream.n_layers)]
        log_colour = st.toggle("Log colour scale", value=True, **in_url("layers_resid_log"),
                               help="The first token's norm is often 10-100x the others "
                                    "(the attention sink); a log scale keeps the rest "
                                    "visible.")
        values = norms.resid.clamp_min(1e-6).log10() if log_colour else norms.resid
        key = (page_run.key, "norms", stream_name, log_colour)
        show_chart(memo_figure(key, lambda: value_heatmap(
            values, rows, labels, "Residual stream norm at every layer and position",
            "log10 ‖x‖" if log_colour else "‖x‖"), "layers"), key="layers_norms_fig", csv=False)
        written = {f"{name} (mean)": v.mean(-1) for name, v in norms.written.items()}
        written |= {f"{name} (max)": v.max(-1).values for name, v in norms.written.items()}
        layers = [f"L{layer}" for layer in range(stream.n_layers)]
        show_chart(memo_figure((page_run.key, "written", stream_name), lambda: lines_chart(
            layers, written, "What each sub-layer adds: norm of its output", "‖output‖",
            log_y=True), "layers"), key="layers_written_fig", csv=False)
        st.caption("Norms over the positions of the prompt: the mean, and the largest (often "
                   "the first token, where models park attention they do not need).")
        csv_button("Download the norms (CSV)", lambda: _norms_frame(norms, rows, labels),
                   "residual_norms.csv", "layers_norms_csv")


def _norms_frame(norms: Any, rows: list[str], labels: list[str]) -> pd.DataFrame:
    records = [{"row": row, "position": p, "token": labels[p], "what": "residual",
                "norm": float(norms.resid[r, p])}
               for r, row in enumerate(rows) for p in range(len(labels))]
    for name, values in norms.written.items():
        records += [{"row": f"L{layer}", "position": p, "token": labels[p],
                     "what": f"{name} output", "norm": float(values[layer, p])}
                    for layer in range(values.shape[0]) for p in range(len(labels))]
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------- geometry


@st.fragment
def geometry_section(lm: Any, page_run: PageRun) -> None:
    stream_name = stream_choice(page_run, "layers_geo_stream")
    with timed("geometry"):
        run = page_run.run
        stream = run.streams[stream_name]
        labels = stream_labels(page_run, stream_name)
        options = row_options(stream.n_layers)
        names = [row.label for row in options]
        norms = stream_norms(run, stream_name)
        steps = [f"{a}→{b}" for a, b in pairwise(names)]
        show_chart(memo_figure((page_run.key, "consecutive", stream_name), lambda:
                               value_heatmap(norms.cosine, steps, labels,
                                             "How much each block turns each token",
                                             "cosine", "RdBu", zrange=(-1, 1),
                                             note="cosine similarity of a token's vector "
                                                  "before and after the block"),
                               "layers"), key="layers_consecutive_fig", csv=False)
        csv_button("Download the block-to-block cosines (CSV)", lambda: pd.DataFrame.from_records(
            [{"step": step, "position": p, "token": labels[p],
              "cosine": float(norms.cosine[i, p])}
             for i, step in enumerate(steps) for p in range(len(labels))]),
            "block_cosines.csv", "layers_consecutive_csv")
        choice = st.select_slider("Layer", names, value=names[-1], **in_url("layers_geo_row"))
        row = options[names.index(choice)]
        left, right = st.columns(2, gap="large")
        with left:
            matrix = cosine_matrix(run, stream_name, row)
            show_chart(memo_figure((page_run.key, "cosine", stream_name, row), lambda:
                                   value_heatmap(matrix, labels, labels,
                                                 f"Token × token cosine · {choice}",
                                                 "cosine", "RdBu", zrange=(-1, 1),
                                                 square=True),
                                   "layers"), key="layers_cosine_fig", csv=False)
        with right:
            skip = st.toggle("Leave out the first token", value=len(labels) > 3,
                             **in_url("layers_pca_skip"),
                             help="The first token's vector is often far from the rest "
                                  "(the attention sink) and would take up a whole axis.")
            pca = pca_layers(run, stream_name, skip)
            shown = labels[1:] if skip and len(labels) > 1 else labels
            layer_index = names.index(choice)
            limit = float(pca.coords.abs().max()) * 1.1 or 1.0
            show_chart(memo_figure((page_run.key, "pca", stream_name, skip, choice),
                                   lambda: pca_scatter(
                                       pca.coords[layer_index], shown,
                                       pca.explained[layer_index],
                                       f"Tokens on two principal axes · {choice}",
                                       (-limit, limit),
                                       positions=range(len(labels) - len(shown),
                                                       len(labels))), "layers"),
                       key="layers_pca_fig", csv=False)
            st.caption("Axes are the same for every layer (the largest spread of any "
                       "layer) and each layer's axes are turned to match the previous "
                       "layer's, so moving the slider moves the points, not the axes.")
        csv_button("Download this layer's cosines and PCA (CSV)", lambda: _geometry_frame(
            matrix, pca.coords[layer_index], shown, labels), "geometry.csv",
            "layers_geo_csv")


def _geometry_frame(matrix: torch.Tensor, coords: torch.Tensor, shown: list[str],
                    labels: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(matrix.numpy(), columns=labels)
    frame.insert(0, "token", labels)
    offset = len(labels) - len(shown)
    frame["pc1"] = [None] * offset + coords[:, 0].tolist()
    frame["pc2"] = [None] * offset + coords[:, 1].tolist()
    return frame


def flow_section(lm: Any, page_run: PageRun) -> None:
    """The information flow graph: `explorer.ui.flow`, which builds on this module's
    helpers (so it is imported here, when its tab opens)."""
    from explorer.ui.flow import flow_view

    flow_view(lm, page_run)


SECTIONS: dict[str, Callable[..., None]] = {
    "Logit lens": lens_section,
    "Target token": target_section,
    "Residual stream": residual_section,
    "Geometry": geometry_section,
    "Information flow": flow_section,
}


def draw_open_section(tabs: list[Any], lm: Any, page_run: PageRun) -> None:
    """Draw the section of the open tab only (``tabs`` from ``st.tabs`` over
    :data:`SECTIONS`, bound to the URL so that it knows which tab is open). A hidden
    section's widgets are not drawn; Streamlit keeps a bound widget's value while it is
    hidden and puts it back when its tab reopens."""
    for tab, section in zip(tabs, SECTIONS.values(), strict=True):
        if tab.open is not False:  # None: a tab that does not track state, draw it
            with tab:
                section(lm, page_run)
