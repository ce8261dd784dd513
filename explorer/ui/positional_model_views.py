"""The positional-encodings page's sections about the loaded model: its own scheme, drawn by
the view :data:`SCHEME_VIEWS` picks (learned table; RoPE, Su et al. 2021; ALiBi, Press et al.
2022; T5's relative bias, Raffel et al. 2020; the fixed sinusoidal table, Vaswani et al. 2017),
and the live "why position matters" checks (permutation equivariance without positions, a
shift of every position). Each section is a fragment (:func:`explorer.ui.positional.section`).

Numbers come from `explorer.analysis.positional` and `explorer.nn.position_probe`, figures
from `explorer.viz.positional`; every chart has a CSV download. Widget keys start with ``pos_``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st
import torch

from explorer.analysis.positional import (
    alibi_matrix,
    bias_by_offset,
    bucket_ranges,
    cosine_similarity_matrix,
    offset_buckets,
    position_pca,
    relative_offsets,
    rope_frequencies,
    rotate_pair,
    score_by_offset,
)
from explorer.nn.model import EncoderDecoderTransformer
from explorer.nn.position_probe import self_attention_stack
from explorer.ui import positional as glue
from explorer.ui.attention import head_labels
from explorer.ui.resources import model_label
from explorer.ui.url_state import in_url
from explorer.ui.widgets import escape_markdown
from explorer.viz.positional import (
    bar_chart,
    line_chart,
    pair_rotation_chart,
    pca_trajectory,
    value_heatmap,
)

LOG_FLOOR = 1e-12  # errors below it are drawn at it (a log axis has no 0)


# --------------------------------------------------------------------------- learned


@st.cache_resource(scope="session", max_entries=4, show_spinner=False)
def _table_geometry(label: str, n: int, _table: torch.Tensor):
    rows = _table[:n].detach().float().cpu()
    return position_pca(rows, 3), cosine_similarity_matrix(rows)


def learned_view(lm: Any, run: glue.PositionRun | None) -> None:
    """The trained position table, cosines between positions and its PCA trajectory."""
    table = lm.model.embed.positions.weight
    n_ctx, d_model = table.shape
    cols = st.columns(2)
    n = cols[0].slider("Positions", 2, n_ctx, min(n_ctx, 512), **in_url("pos_learned_n"))
    dims = cols[1].radio("PCA", [2, 3], horizontal=True, **in_url("pos_learned_pca"),
                         format_func=lambda d: f"{d}-D")
    pca, cosine = _table_geometry(model_label(lm), n, table)
    rows = table[:n].detach().float().cpu()
    positions = torch.arange(n)
    left, right = st.columns(2, gap="large")
    with left:
        glue.chart_with_csv(
            value_heatmap(rows, title=f"Learned position table ({n} × {d_model})",
                          x_title="dimension", y_title="position"),
            lambda: glue.matrix_csv(rows, "position", "dimension", "value"),
            "position_table.csv", "pos_learned_table")
    with right:
        glue.chart_with_csv(
            value_heatmap(cosine, title="Cosine similarity between positions",
                          x_title="position", y_title="position", value_title="cosine"),
            lambda: glue.matrix_csv(cosine, "position", "position_2", "cosine"),
            "position_cosines.csv", "pos_learned_cos")
    glue.chart_with_csv(
        pca_trajectory(pca.coords, positions, pca.explained,
                       f"Positions 0–{n - 1} on the table's top principal components", dims),
        lambda: glue.columns_csv({"position": positions,
                                  **{f"pc{i + 1}": pca.coords[:, i] for i in range(3)}}),
        "position_pca.csv", "pos_learned_pca_chart")
    st.caption(f"The first three components hold {100 * float(pca.explained.sum()):.1f}% of the "
               "table's variance; points close together have similar rows. A table that "
               "varies smoothly with position traces a curve (GPT-2's is a helix); the "
               "cosine map shows how far that similarity reaches.")


# --------------------------------------------------------------------------- RoPE


def rope_view(lm: Any, run: glue.PositionRun | None) -> None:
    """Pair frequencies, one pair rotating, and what the real queries and keys do."""
    cfg = lm.config
    freqs = rope_frequencies(cfg.d_head, cfg.rope_base)
    n_pairs = cfg.d_head // 2
    pairs = list(range(n_pairs))
    wavelength_text = [f"wavelength {w:,.1f} tokens" for w in freqs.wavelength.tolist()]
    glue.chart_with_csv(
        line_chart(pairs, {"wavelength (tokens per turn)": freqs.wavelength},
                   f"Rotation of each pair (i, i + {n_pairs}), base {cfg.rope_base:g}",
                   "pair i", "tokens per full turn", log_y=True,
                   note="Angle per token f_i = base^(−2i/d_head); low pairs turn fast."),
        lambda: glue.columns_csv({"pair": pairs, "radians_per_token": freqs.inv_freq,
                                  "wavelength_tokens": freqs.wavelength}),
        "rope_frequencies.csv", "pos_rope_freq")
    if run is None or run.resid_pre is None:
        st.info("Type a prompt to see the model's real queries and keys.")
        return
    n = len(run.labels)
    stack = self_attention_stack(lm.model)
    cols = st.columns(2)
    glue.keep_in("pos_rope_layer", list(range(len(stack.blocks))), len(stack.blocks) // 2)
    glue.keep_in("pos_rope_head", list(range(cfg.n_heads)), 0)
    layer = cols[0].selectbox("Layer", range(len(stack.blocks)), **in_url("pos_rope_layer"))
    head = cols[1].selectbox("Head", range(cfg.n_heads), **in_url("pos_rope_head"))
    data = glue.layer_positions(run.key, layer, run, lm)
    names = head_labels(cfg.n_heads, cfg.n_kv_heads)
    lift = data.carriers.lift  # [H, P]
    left, right = st.columns(2, gap="large")
    with left:
        glue.chart_with_csv(
            value_heatmap(lift, x=pairs, title=f"Layer {layer}: score lift carried by each pair",
                          x_title="pair i (fast → slow)", y_title="head", value_title="lift",
                          y_labels=names),
            lambda: glue.matrix_csv(lift, "head", "pair", "lift"), "rope_pair_lift.csv",
            "pos_rope_lift")
    with right:
        series = {"mean |term| (logits)": data.carriers.mean_abs[head], "lift (logits)":
                  lift[head]}
        glue.chart_with_csv(
            bar_chart(pairs, series, f"Layer {layer} · {names[head]}: q·k split per pair",
                      "pair i", "logits", hover=wavelength_text,
                      note="Summed over the prompt's (query, key) cells; the terms of all "
                           "pairs add up to the real score."),
            lambda: glue.columns_csv({"pair": pairs, "wavelength": freqs.wavelength,
                                      **series}),
            "rope_head_pairs.csv", "pos_rope_head_pairs")
    st.caption("**Lift**: how much a pair raises the scores of the keys this head actually "
               "attends to above the row's average. Lift in the fast pairs (left) means the "
               "head attends by relative position (previous token, say); lift in the slow "
               f"pairs (right, wavelength ≫ {n} tokens) means it attends by content.")
    glue.keep_in("pos_rope_query", run.labels, run.labels[-1])
    query_label = st.selectbox("Query token", run.labels, **in_url("pos_rope_query"))
    query = run.labels.index(query_label)
    row = data.pattern[head, query]
    visible = run.labels[: query + 1] if stack.causal else run.labels  # keys it may see
    glue.keep_in("pos_rope_key", visible, run.labels[int(row.argmax())])
    cols = st.columns(3)
    key = run.labels.index(cols[0].selectbox("Key token", visible, **in_url("pos_rope_key")))
    key_label = run.labels[key]
    glue.keep_in("pos_rope_pair", pairs, 0)
    pair = cols[1].selectbox("Pair", pairs, **in_url("pos_rope_pair"))
    max_offset = cols[2].slider("Largest offset", 16, 8192, 1024, step=16,
                                **in_url("pos_rope_reach"))
    left, right = st.columns(2, gap="large")
    with left:
        raw = data.qk.q_raw[head, query]  # [d]
        spin = torch.arange(max(n, 64))
        points = rotate_pair(raw[[pair, pair + n_pairs]], float(freqs.inv_freq[pair]), spin)
        glue.chart_with_csv(
            pair_rotation_chart(points, spin,
                                f"Pair {pair} of the query of {query_label}, at positions "
                                f"0–{len(spin) - 1}",
                                f"{wavelength_text[pair].capitalize()}; only the angle "
                                "changes with position."),
            lambda: glue.columns_csv({"position": spin, "first": points[:, 0],
                                      "second": points[:, 1]}),
            "rope_pair_rotation.csv", "pos_rope_rotation")
    with right:
        offsets = torch.arange(max_offset + 1)
        terms = data.qk.scale * score_by_offset(raw, data.qk.k_raw[head, key], freqs.inv_freq,
                                                offsets)  # [R, P]
        fast = freqs.wavelength < n
        curves = {"all pairs": terms.sum(-1), f"fast pairs (wavelength < {n})":
                  terms[:, fast].sum(-1), "slow pairs": terms[:, ~fast].sum(-1)}
        glue.chart_with_csv(
            line_chart(offsets, curves, f"Score of {query_label} → {key_label} moved to "
                       "every offset", "offset (query position − key position)",
                       "score (logits, before the mask)", marker_x=query - key,
                       note="Same vectors at every distance; dotted: where they are."),
            lambda: glue.columns_csv({"offset": offsets, **curves}), "rope_offset_sweep.csv",
            "pos_rope_sweep")


# --------------------------------------------------------------------------- ALiBi


def alibi_view(lm: Any, run: glue.PositionRun | None) -> None:
    """Each head's slope and its bias matrix."""
    cfg = lm.config
    names = head_labels(cfg.n_heads, cfg.n_kv_heads)
    cols = st.columns(2)
    n = cols[0].slider("Positions", 2, min(cfg.n_ctx, 256), min(cfg.n_ctx, 32),
                       **in_url("pos_alibi_n"))
    glue.keep_in("pos_alibi_head", list(range(cfg.n_heads)), 0)
    head = cols[1].selectbox("Head", range(cfg.n_heads), **in_url("pos_alibi_head"))
    slopes, bias = alibi_matrix(cfg.n_heads, n, self_attention_stack(lm.model).causal)
    left, right = st.columns(2, gap="large")
    with left:
        glue.chart_with_csv(
            bar_chart(names, {"slope": slopes}, "ALiBi slope of each head", "head", "slope",
                      log_y=True, note="A geometric sequence 2^(−8/h), 2^(−16/h), …"),
            lambda: glue.columns_csv({"head": names, "slope": slopes}), "alibi_slopes.csv",
            "pos_alibi_slopes")
    with right:
        glue.chart_with_csv(
            value_heatmap(bias[head], title=f"{names[head]}: bias −slope·|i − j|",
                          x_title="key position j", y_title="query position i",
                          value_title="bias", diverging=False),
            lambda: glue.matrix_csv(bias[head], "query", "key", "bias"), "alibi_bias.csv",
            "pos_alibi_bias")


# --------------------------------------------------------------------------- T5 relative bias


def relative_view(lm: Any, run: glue.PositionRun | None) -> None:
    """Bucket of each offset, the bucket boundaries, and each head's learned bias by offset."""
    cfg = lm.config
    model = lm.model
    stacks = ({"encoder": model.encoder, "decoder": model.decoder}
              if isinstance(model, EncoderDecoderTransformer) else {"self": model})
    labels = {"encoder": "Encoder (bidirectional)", "decoder": "Decoder (causal)",
              "self": "Self-attention"}
    name = st.radio("Stack", list(stacks), horizontal=True, **in_url("pos_rel_stack"),
                    format_func=labels.get) if len(stacks) > 1 else "self"
    stack = stacks[name]
    bidirectional = not stack.causal
    reach = st.slider("Largest |offset|", 4, 4 * cfg.relative_max_distance,
                      min(2 * cfg.relative_max_distance, 4 * cfg.relative_max_distance),
                      **in_url("pos_rel_reach"))
    offsets = relative_offsets(reach, bidirectional)
    buckets = offset_buckets(offsets, bidirectional, cfg.relative_buckets,
                             cfg.relative_max_distance)
    ranges = bucket_ranges(offsets, buckets)
    bias = bias_by_offset(stack.rel_bias.weight.detach().float().cpu(), buckets)  # [H, R]
    names = head_labels(cfg.n_heads, cfg.n_kv_heads)
    left, right = st.columns(2, gap="large")
    with left:
        glue.chart_with_csv(
            line_chart(offsets, {"bucket": buckets}, f"{labels[name]}: bucket of each offset",
                       "offset (key position − query position)", "bucket", step=True,
                       note=f"{cfg.relative_buckets} buckets: exact near 0, log-spaced up to "
                            f"{cfg.relative_max_distance}, one shared bucket beyond."),
            lambda: glue.columns_csv({"offset": offsets, "bucket": buckets}),
            "t5_buckets.csv", "pos_rel_buckets")
    with right:
        glue.chart_with_csv(
            line_chart(offsets, dict(zip(names, bias, strict=True)),
                       f"{labels[name]}: learned bias of each head by offset",
                       "offset (key position − query position)", "bias (logits)", step=True),
            lambda: glue.columns_csv({"offset": offsets, **dict(zip(names, bias, strict=True))}),
            "t5_bias.csv", "pos_rel_bias")
    st.dataframe({"bucket": [r[0] for r in ranges], "first offset": [r[1] for r in ranges],
                  "last offset": [r[2] for r in ranges]}, hide_index=True, height=220)


def sinusoidal_view(lm: Any, run: glue.PositionRun | None) -> None:
    """A model with the fixed table: the section above with its own sizes."""
    cfg = lm.config
    st.markdown(f"This model adds the fixed sinusoidal table of the first section, with "
                f"d_model = {cfg.d_model} and {cfg.n_ctx} positions: set those sizes above to "
                "see it.")


SCHEME_VIEWS: dict[str, Callable[[Any, glue.PositionRun | None], None]] = {
    "learned": learned_view,
    "rope": rope_view,
    "alibi": alibi_view,
    "relative": relative_view,
    "sinusoidal": sinusoidal_view,
}
SCHEME_NAMES = {
    "learned": "a learned absolute position table",
    "rope": "rotary position embeddings (RoPE, Su et al. 2021)",
    "alibi": "ALiBi linear biases (Press et al. 2022)",
    "relative": "T5's bucketed relative position bias (Raffel et al. 2020)",
    "sinusoidal": "the fixed sinusoidal table (Vaswani et al. 2017)",
}


@glue.section("model")
def model_section(lm: Any, text: str) -> None:
    """The loaded model's own scheme, or a note that it has nothing to show."""
    scheme = lm.config.positional
    view = SCHEME_VIEWS.get(scheme)
    if view is None:
        st.info(f"This model's positional scheme ({scheme}) has nothing to show here.")
        return
    st.markdown(f"**{escape_markdown(lm.name)}** uses {SCHEME_NAMES[scheme]}.")
    run = None
    if text.strip() and scheme == "rope":
        run = glue.prompt_run(model_label(lm), text, glue.MAX_TOKENS, True, lm)
        if run.total > len(run.labels):
            st.caption(f"The prompt has {run.total:,} tokens; the first "
                       f"{len(run.labels):,} are analysed.")
    view(lm, run)


# --------------------------------------------------------------------------- why it matters


@glue.section("why")
def why_section(lm: Any, text: str) -> None:
    """Permutation equivariance without positions; what shifting every position changes."""
    if not text.strip():
        st.info("Type a prompt to run these checks.")
        return
    cfg = lm.config
    run = glue.prompt_run(model_label(lm), text, glue.PROBE_TOKENS, False, lm)
    n = len(run.labels)
    if n < 2:
        st.info("These checks need at least two tokens.")
        return
    absolute = lm.model.embed.positions is not None
    max_shift = max(0, min(cfg.n_ctx - n if absolute else 4096, 4096))
    cols = st.columns(2)
    seed = cols[0].number_input("Shuffle seed", 0, 9_999, 0, **in_url("pos_why_seed"))
    shift = 0
    if max_shift:
        glue.clamp("pos_why_shift", 1, max_shift, min(100, max_shift))
        shift = cols[1].slider("Shift every position by", 1, max_shift, **in_url("pos_why_shift"))
    layers = list(range(len(self_attention_stack(lm.model).blocks)))
    errors = glue.permutation_check(run.key, int(seed), run, lm)
    shown = {name: [max(e, LOG_FLOOR) for e in values] for name, values in errors.items()}
    left, right = st.columns(2, gap="large")
    with left:
        glue.chart_with_csv(
            bar_chart(layers, shown, "Shuffle the tokens: do the outputs just shuffle?",
                      "layer", "relative error", log_y=True,
                      note=f"max |f(shuffled) − shuffled f(x)| / max |f(x)| per layer, {n} "
                           "tokens"),
            lambda: glue.columns_csv({"layer": layers, **errors}), "permutation_check.csv",
            "pos_why_perm")
        off, on = max(errors[glue.ONE_POSITION]), max(errors[glue.IN_ORDER])
        st.caption(f"All tokens at one position: largest error {off:.1e}, rounding, so the "
                   f"model cannot tell the order. At positions 0–{n - 1}: {on:.1e}.")
    with right:
        if not shift:
            st.info("The prompt fills the position table: there is no room to shift it.")
            return
        changes = glue.shift_check(run.key, shift, run, lm)
        glue.chart_with_csv(
            bar_chart(layers, {"largest change": changes},
                      f"Every position + {shift}: how much does attention change?",
                      "layer", "largest change of an attention weight",
                      note=f"{n} tokens at positions {shift}–{shift + n - 1} instead of "
                           f"0–{n - 1}."),
            lambda: glue.columns_csv({"layer": layers, "largest_change": changes}),
            "shift_check.csv", "pos_why_shift")
        verdict = ("only offsets matter to it" if not absolute
                   else "it reads absolute positions")
        st.caption(f"Largest change {max(changes):.1e}: {verdict}.")
