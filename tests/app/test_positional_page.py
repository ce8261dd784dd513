"""Positional encodings page (AppTest): the sinusoid section, each scheme's views (SmolLM2's RoPE,
MiniLM's learned table, tiny ALiBi and T5 models), the live checks, hostile and empty prompts."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from app_helpers import model_in_store, tiny_t5_in_store

from explorer.ui import positional as glue

PAGE = "app_pages/positional.py"
MAX_FIGURE_BYTES = 2 * 2**20
HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ \u202eevil\u200b"


def open_page(app, prompt: str | None = None, model: str | None = None):
    if model:
        app.query_params["model"] = model
    app.run()
    app.switch_page(PAGE)
    if prompt is not None:
        app.session_state["prompt_box_positional"] = prompt
    app.run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    return app


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(data) -> np.ndarray:
    """A trace's numbers: plotly sends numpy arrays as base64 typed arrays."""
    if isinstance(data, dict) and "bdata" in data:
        flat = np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
        shape = data.get("shape")  # "9, 32" for a matrix
        return flat.reshape([int(d) for d in str(shape).split(",")]) if shape else flat
    return np.asarray(data, dtype=float)


def titles(at) -> list[str]:
    return [f["layout"]["title"]["text"] for f in figures(at)]


def downloads(at) -> int:
    return len(at.main.get("download_button"))  # the sidebar has the share panel's


def tiny_model_in_store(at, **config):
    """A tiny random decoder (no download) put in the app's store and selected for ``at``."""
    from explorer.config import ModelConfig

    cfg = ModelConfig(d_model=24, n_heads=6, d_mlp=24, d_vocab=37, n_ctx=64, n_layers=2,
                      name="tiny", **config)
    return model_in_store(at, f"tiny-{config['positional']}", cfg)


# --------------------------------------------------------------------------- pure helpers


def test_csv_helpers_guard_formulas_and_keep_numbers() -> None:
    text = glue.columns_csv({"token": ["=cmd", "ok"], "value": [0.5, 2.0]}).decode()
    assert text.splitlines() == ["token,value", "'=cmd,0.5", "ok,2"]
    tidy = glue.matrix_csv(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "p", "q", "dot",
                           cols=[10, 20]).decode().splitlines()
    assert tidy[0] == "p,q,dot" and tidy[1:] == ["0,10,1", "0,20,2", "1,10,3", "1,20,4"]


# --------------------------------------------------------------------------- tiny models


def test_alibi_model_shows_slopes_bias_and_checks(app) -> None:
    with tiny_model_in_store(app, positional="alibi"):
        at = open_page(app, "one two three four five six seven")
        shown = titles(at)
        assert "ALiBi slope of each head" in shown
        assert "head 0: bias −slope·|i − j|" in shown
        slopes = values(figures(at)[shown.index("ALiBi slope of each head")]["data"][0]["y"])
        # 6 heads: the 4-head sequence, then every other slope of the 8-head one
        assert slopes == pytest.approx([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3])
        assert downloads(at) == len(shown)
        shift = figures(at)[-1]
        assert shift["layout"]["title"]["text"].startswith("Every position + ")
        assert values(shift["data"][0]["y"]).max() < 1e-5  # ALiBi reads offsets only
        at.selectbox(key="pos_alibi_head").set_value(5).run()
        assert not at.exception and "head 5: bias −slope·|i − j|" in titles(at)


def test_t5_shows_buckets_and_bias_per_stack(app) -> None:
    with tiny_t5_in_store(app):
        at = open_page(app, "one two three one two three")
        assert "Encoder (bidirectional): bucket of each offset" in titles(at)
        buckets = figures(at)[titles(at).index(
            "Encoder (bidirectional): bucket of each offset")]["data"][0]
        assert values(buckets["x"]).min() < 0 < values(buckets["x"]).max()
        at.radio(key="pos_rel_stack").set_value("decoder").run()
        assert not at.exception
        decoder = figures(at)[titles(at).index("Decoder (causal): bucket of each offset")]
        assert values(decoder["data"][0]["x"]).max() == 0
        assert at.dataframe[0].value["bucket"].iloc[0] == 31  # causal: the farthest bucket


def test_empty_prompt_keeps_the_formula_sections(app) -> None:
    with tiny_model_in_store(app, positional="rope", n_kv_heads=2):
        at = open_page(app, "")
        assert titles(at)[:4] == ["PE[position, dimension]", "Chosen dimensions against position",
                                  "PE(p) · PE(q): constant along each diagonal",
                                  "PE(p) · PE(p + 8) for every p"]
        infos = " ".join(i.value for i in at.info)
        assert "real queries and keys" in infos and "run these checks" in infos


def test_sinusoid_controls_are_clamped_and_redraw(app) -> None:
    with tiny_model_in_store(app, positional="learned"):
        at = open_page(app, "a b c")
        at.slider(key="pos_sin_k").set_value(100).run()
        at.slider(key="pos_sin_n").set_value(64).run()  # the offset must follow: <= 63
        assert not at.exception
        assert at.slider(key="pos_sin_k").value == 63
        assert "PE(p) · PE(p + 63) for every p" in titles(at)
        at.number_input(key="pos_sin_base").set_value(100.0).run()
        markdown = " ".join(m.value for m in at.markdown)
        assert "largest residual" in markdown and not at.exception
        assert set(at.session_state[glue_timings()]) >= {"sinusoid", "model", "why"}


def glue_timings() -> str:
    from explorer.ui.positional_views import TIMINGS_KEY

    return TIMINGS_KEY


# --------------------------------------------------------------------------- embedded models


@pytest.mark.slow
def test_smollm2_rope_views_and_checks(app) -> None:
    at = open_page(app, "The cat sat on the mat. The cat sat on the mat.")
    shown = titles(at)
    assert len(shown) == 11 and downloads(at) == 11
    assert "Rotation of each pair (i, i + 32), base 100000" in shown
    assert "Layer 15: score lift carried by each pair" in shown
    lift = figures(at)[shown.index("Layer 15: score lift carried by each pair")]["data"][0]
    assert len(lift["y"]) == 9 and values(lift["z"]).shape == (9, 32)
    perm = figures(at)[-2]["data"]
    assert values(perm[0]["y"]).max() < 1e-4 < values(perm[1]["y"]).min()  # off: equivariant
    assert values(figures(at)[-1]["data"][0]["y"]).max() < 1e-3  # RoPE: a shift changes nothing
    at.selectbox(key="pos_rope_layer").set_value(3).run()
    at.selectbox(key="pos_rope_head").set_value(7).run()
    assert not at.exception
    assert "Layer 3 · head 7 · kv 2: q·k split per pair" in titles(at)
    assert all(len(json.dumps(f)) < MAX_FIGURE_BYTES for f in figures(at))


@pytest.mark.slow
def test_minilm_learned_table_and_shift_changes_attention(app) -> None:
    at = open_page(app, "The cat sat on the mat.", model="minilm-l6")
    shown = titles(at)
    assert "Learned position table (512 × 384)" in shown
    assert "Cosine similarity between positions" in shown
    assert values(figures(at)[-1]["data"][0]["y"]).max() > 1e-3  # absolute: a shift matters
    at.radio(key="pos_learned_pca").set_value(3).run()
    assert not at.exception
    assert any(t["data"][0]["type"] == "scatter3d" for t in figures(at))


@pytest.mark.slow
def test_hostile_prompt_is_escaped_in_every_figure(app) -> None:
    at = open_page(app, HOSTILE)
    options = at.selectbox(key="pos_rope_query").options
    assert "19: \\xae" in options  # the right-to-left override's bytes, shown as escapes
    at.selectbox(key="pos_rope_query").set_value(next(o for o in options if "$" in o)).run()
    at.selectbox(key="pos_rope_key").set_value("0: <").run()
    assert at.selectbox(key="pos_rope_key").options == options[:16]  # causal: keys up to it
    assert not at.exception
    text = json.dumps(figures(at))
    assert "<img" not in text and "<" not in "".join(titles(at))
    assert "&lt;" in text and "&#36;" in text
