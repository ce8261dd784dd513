"""A link's query parameters reopen each page's view (AppTest, tiny random models): the
widgets that opt in through explorer.ui.url_state read their value from the URL, and a value
the page cannot offer falls back to its default without a message."""

from __future__ import annotations

import json
from pathlib import Path

from app_helpers import model_in_store
from streamlit.testing.v1 import AppTest

from explorer.config import ModelConfig

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PROMPT = "the cat sat on the mat the cat sat"
TINY = ModelConfig(d_model=24, n_heads=4, d_mlp=32, d_vocab=37, n_ctx=64, n_layers=3,
                   positional="rope", norm="rmsnorm", mlp="swiglu", name="tiny-share",
                   family="llama")


def open_with(app, page: str, params: dict):
    """Open ``page`` as a fresh browser would from a link carrying ``params``."""
    app.query_params.update({"prompt": PROMPT, **params})
    app.switch_page(page)
    app.run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    return app


def titles(at) -> list[str]:
    return [json.loads(chart.proto.spec)["layout"]["title"]["text"]
            for chart in at.get("plotly_chart")]


def test_attention_link(app) -> None:
    with model_in_store(app, "tiny-share", TINY):
        at = open_with(app, "app_pages/attention.py", {
            "attn_layer": "2", "attn_head": "3", "attn_score": "Previous-token score",
            "attn_scale": "log", "attn_aggregate": "Max over heads",
            "attn_query": "3: w30", "attn_lines": "every head of this layer"})
        state = at.session_state
        assert (state["attn_layer"], state["attn_head"]) == (2, 3)
        assert state["attn_query"] == "3: w30" and state["attn_lines"] == "layer"
        assert state["attn_aggregate"] == "max" and state["attn_scale"] == "log"
        assert titles(at)[0] == "Layer 2 · head 3" and "Max over heads · layer 2" in titles(at)


def test_attention_link_from_another_model_falls_back(app) -> None:
    with model_in_store(app, "tiny-share", TINY):
        at = open_with(app, "app_pages/attention.py", {
            "attn_layer": "29", "attn_head": "x", "attn_query": "40: nope"})
        assert at.session_state["attn_layer"] in range(3)
        assert at.session_state["attn_query"] == at.selectbox(key="attn_query").options[-1]
        assert not at.warning


def test_layers_link(app) -> None:
    with model_in_store(app, "tiny-share", TINY):
        at = open_with(app, "app_pages/layers.py", {
            "layers_tab": "Geometry", "layers_lens_stat": "Entropy",
            "layers_positions": ["2: w14", "4: w13"], "layers_target": "w9",
            "layers_resid_log": "false", "layers_geo_row": "L1"})
        state = at.session_state
        assert state["layers_geo_row"] == "L1" and state["layers_tab"] == "Geometry"
        assert "Token × token cosine · L1" in titles(at)
        # the other tabs' values in the link are read when their tab opens (a click: the
        # tab's value and the address bar change)
        for tab in ("Logit lens", "Target token", "Residual stream"):
            state["layers_tab"] = at.query_params["layers_tab"] = tab
            at.run()
        assert state["layers_lens_stat"] == "entropy" and state["layers_resid_log"] is False
        assert state["layers_positions"] == ["2: w14", "4: w13"]
        assert state["layers_target"] == "w9"


def test_positional_link(app) -> None:
    with model_in_store(app, "tiny-share", TINY):
        at = open_with(app, "app_pages/positional.py", {
            "pos_sin_n": "64", "pos_sin_k": "5", "pos_rope_layer": "1", "pos_rope_head": "2",
            "pos_why_seed": "7"})
        state = at.session_state
        assert (state["pos_sin_n"], state["pos_sin_k"], state["pos_why_seed"]) == (64, 5, 7)
        assert "Layer 1 · head 2: q·k split per pair" in titles(at)
        assert "PE(p) · PE(p + 5) for every p" in titles(at)


def test_generate_link_replays_the_generation(app) -> None:
    with model_in_store(app, "tiny-share", TINY):
        params = {"generate_temperature": "0.8", "generate_top_k": "5", "generate_seed": "3",
                  "generate_max_new": "6", "generate_run": "1"}
        first = open_with(app, "app_pages/generate.py", params).session_state["generate"]
        assert len(first["record"]) == 6 and first["settings"][1:6] == (0.8, 5, 1.0, 6, 3)
        tokens = list(first["record"].token_ids)
    again = AppTest.from_file(APP, default_timeout=120)
    with model_in_store(again, "tiny-share", TINY):
        second = open_with(again, "app_pages/generate.py", params).session_state["generate"]
        assert list(second["record"].token_ids) == tokens  # same link, same sample


def test_report_and_analysis_of_the_page_on_screen(app) -> None:
    from explorer.export import load_run, run_arrays, save_run
    from explorer.ui.export import REPORT, _meta, _report
    from explorer.ui.runs import run_store

    with model_in_store(app, "tiny-share", TINY):
        at = open_with(app, "app_pages/attention.py", {"attn_layer": "1", "attn_head": "2"})
        store = at.session_state[REPORT]
        assert store["page"] == "Attention" and store["settings"]["attn_layer"] == 1
        assert {"attn_head_map", "attn_head_fig", "combine"} <= set(store["figures"])
        report = _report(store, {})().decode()
        assert "Layer 1 · head 2" in report and "tiny-share" in report
        assert "attn_layer = 1" in report
        assert at.sidebar.expander[-1].label == "Share and export"
        labels = [b.label for b in at.sidebar.get("download_button")]
        assert labels == ["This page as HTML", "Download this analysis (NPZ)"]
        key = next(k for k in run_store().keys()  # noqa: SIM118 (an LRUMemo)
                   if k[1] == PROMPT and "tiny-share" in k[0])
        page_run = run_store().get(key, lambda: None)
        lm = type("Lm", (), {"name": "tiny-share", "config": TINY, "dtype": "float32"})
        saved = load_run(save_run(None, run_arrays(page_run.run), _meta(store, lm, {})))
        assert saved.settings["attn_head"] == 2 and saved.prompt == PROMPT
        assert saved.residual().shape == (TINY.n_layers + 1, 10, TINY.d_model)
