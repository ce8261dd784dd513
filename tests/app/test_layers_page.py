"""Layers page (AppTest): the lens grid's top row is the model's own prediction, every tab
renders on SmolLM2, MiniLM (no head: a sentence says why) and a tiny T5, and a run draws
only the open tab's section; every choice survives a tab switch; one forward serves the
Attention, Layers and Positional pages; hostile, empty, single-token, too-long and
bad-target inputs get clear messages."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from app_helpers import model_in_store, tiny_t5_in_store
from test_share_pages import TINY

import explorer
from explorer.runs import prompt_run
from explorer.viz.tokens import display_token, escape_for_plotly

PAGE = "app_pages/layers.py"
MAX_FIGURE_BYTES = 2 * 2**20
HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ مرحبا\u200b\u202e"
TABS = ["Logit lens", "Target token", "Residual stream", "Geometry", "Information flow"]
SECTION_OF = dict(zip(TABS, ["lens", "target", "residual", "geometry", "flow"], strict=True))


def open_page(app, prompt: str | None = None, model: str | None = None, page: str = PAGE):
    if model:
        app.query_params["model"] = model
    app.run()
    app.switch_page(page)
    if prompt is not None:
        key = "prompt_box_layers" if page == PAGE else "prompt_box_attention"
        app.session_state[key] = prompt
    app.run()
    assert not app.exception, app.exception
    return app


def open_tab(at, name: str):
    """Click a tab: the page reruns with only that tab's section drawn."""
    at.session_state["layers_tab"] = name
    at.session_state["layers_ms"] = {}
    at.run()
    assert not at.exception, at.exception
    assert set(at.session_state["layers_ms"]) <= {SECTION_OF[name]}  # no other section ran
    return at


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def raw_strings(value) -> list[str]:
    """Every string inside a parsed figure (plotly's JSON escapes ``<`` as ``\\u003c``,
    which parsing undoes, so look at the values, not at re-dumped JSON)."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in raw_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in raw_strings(v)]
    return [value] if isinstance(value, str) else []


def titles(at) -> list[str]:
    return [f["layout"]["title"]["text"] for f in figures(at)]


@pytest.fixture
def count_forwards(monkeypatch):
    calls = []
    original = prompt_run.forward

    def counted(*args, **kwargs):
        calls.append(args[2].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(prompt_run, "forward", counted)
    return calls


@pytest.mark.slow
def test_the_top_lens_row_is_the_models_prediction(app) -> None:
    prompt = "The Eiffel Tower is in the city of"
    at = open_page(app, prompt)
    assert [t.label for t in at.tabs] == TABS
    assert at.session_state["layers_tab"] == "Logit lens"
    assert titles(at) == ["Logit lens: the top token at every layer"]  # the open tab only
    assert list(at.session_state["layers_ms"]) == ["lens"]
    lens_fig = figures(at)[0]["data"][0]
    assert lens_fig["y"][0] == "embeddings" and lens_fig["y"][-1] == "L29"
    lm = explorer.load("smollm2-135m")
    ids = lm.encode(prompt)
    with torch.no_grad():
        predicted = lm.model(ids)[0].argmax(-1).tolist()
    expected = [escape_for_plotly(display_token(lm.decode([i]))) for i in predicted]
    assert len(lens_fig["text"][-1]) == len(predicted)  # short prompt: every position
    for cell, token in zip(lens_fig["text"][-1], expected, strict=True):
        assert cell == token or (cell.endswith("…") and token.startswith(cell[:-1]))
    sizes = [len(json.dumps(f)) for f in figures(at)]
    downloads = {"Logit lens": len(at.main.get("download_button"))}
    open_tab(at, "Target token")
    names = titles(at)
    assert names[0] == "Target token through the layers"
    assert names[1].startswith("Direct contributions to the logit of")
    captions = " ".join(c.value for c in at.caption)
    assert "The parts add up to the real logit" in captions
    sizes += [len(json.dumps(f)) for f in figures(at)]
    downloads["Target token"] = len(at.main.get("download_button"))
    open_tab(at, "Residual stream")
    assert titles(at) == ["Residual stream norm at every layer and position",
                          "What each sub-layer adds: norm of its output"]
    sizes += [len(json.dumps(f)) for f in figures(at)]
    downloads["Residual stream"] = len(at.main.get("download_button"))
    open_tab(at, "Geometry")
    assert titles(at) == ["How much each block turns each token", "Token × token cosine · L29",
                          "Tokens on two principal axes · L29"]
    sizes += [len(json.dumps(f)) for f in figures(at)]
    downloads["Geometry"] = len(at.main.get("download_button"))
    assert max(sizes) < MAX_FIGURE_BYTES
    # one CSV per chart (the two norm charts share one)
    assert downloads == {"Logit lens": 1, "Target token": 2, "Residual stream": 1,
                         "Geometry": 2}


@pytest.mark.slow
def test_information_flow_follows_the_prediction_back(app) -> None:
    at = open_tab(open_page(app, "When Mary and John went to the store, John gave a drink to"),
                  "Information flow")
    assert titles(at)[0] == "Information flow into 13: ␣to (position 13)"
    assert titles(at)[1].startswith("Which heads carry L")
    edges = figures(at)[0]["data"]
    assert {trace["name"] for trace in edges if trace.get("name")} >= {
        "attention (token read → token reading)", "residual", "MLP write"}
    shares = figures(at)[1]["data"][0]["y"]  # plotly's typed array: base64 float32
    shares = np.frombuffer(base64.b64decode(shares["bdata"]), dtype=shares["dtype"])
    assert len(shares) == 9 and float(shares.sum()) == pytest.approx(1.0, abs=1e-3)
    count = len(at.selectbox(key="layers_flow_edge").options)
    at.select_slider(key="layers_flow_threshold").set_value("0.15").run()
    assert not at.exception
    assert len(at.selectbox(key="layers_flow_edge").options) < count  # fewer edges kept
    at.selectbox(key="layers_flow_token").set_value("1: ␣Mary").run()
    assert titles(at)[0] == "Information flow into 1: ␣Mary (position 1)"
    assert len(at.main.get("download_button")) == 1


@pytest.mark.slow
def test_widgets_rerun_their_section_without_errors(app) -> None:
    at = open_page(app, "One, two, three, four, five, six, seven, eight, nine, ten, eleven,"
                        " twelve, thirteen, fourteen, fifteen, sixteen, seventeen")
    at.radio(key="layers_lens_stat").set_value("kl").run()
    at.toggle(key="layers_lens_sub").set_value(True).run()
    assert not at.exception
    lens_fig = figures(at)[0]["data"][0]
    # 60 rows with the sub-layers: every second block by default, the last one kept
    assert "L1 attn" in lens_fig["y"] and "L0" not in lens_fig["y"]
    assert lens_fig["y"][-2:] == ["L29 attn", "L29"]
    assert at.slider(key="layers_lens_start").value == at.slider(key="layers_lens_start").max
    at.slider(key="layers_lens_start").set_value(0).run()
    assert figures(at)[0]["data"][0]["x"][0].startswith("0: ")
    open_tab(at, "Target token")
    at.text_input(key="layers_target").set_value(" six").run()
    assert not at.exception and not at.warning
    at.radio(key="layers_contrib_how").set_value("waterfall").run()
    open_tab(at, "Geometry")
    at.select_slider(key="layers_geo_row").set_value("L3").run()
    at.toggle(key="layers_pca_skip").set_value(False).run()
    open_tab(at, "Residual stream")
    at.toggle(key="layers_resid_log").set_value(False).run()
    assert not at.exception
    open_tab(at, "Geometry")  # every choice made on a tab is there when it reopens
    assert "Tokens on two principal axes · L3" in titles(at)
    assert at.toggle(key="layers_pca_skip").value is False
    open_tab(at, "Logit lens")
    assert at.radio(key="layers_lens_stat").value == "kl"
    assert at.toggle(key="layers_lens_sub").value is True
    assert figures(at)[0]["data"][0]["x"][0].startswith("0: ")
    open_tab(at, "Target token")
    assert at.text_input(key="layers_target").value == " six"
    assert at.radio(key="layers_contrib_how").value == "waterfall"
    assert titles(at)[0] == "Target token through the layers"
    at.text_input(key="layers_target").set_value("sixteen thousand").run()
    assert any("type a single token" in w.value for w in at.warning)


@pytest.mark.slow
def test_one_forward_serves_the_attention_layers_and_positional_pages(app, count_forwards) -> None:
    prompt = "A prompt seen on two pages: counting forwards, once only."
    at = open_page(app, prompt, page="app_pages/attention.py")
    assert len(count_forwards) == 1
    at.switch_page(PAGE)
    at.session_state["prompt_box_layers"] = prompt
    at.run()
    assert not at.exception
    for name in [*TABS[1:], "Geometry"]:
        open_tab(at, name)
    at.select_slider(key="layers_geo_row").set_value("L5").run()
    at.switch_page("app_pages/attention.py").run()
    at.selectbox(key="attn_layer").set_value(4).run()
    assert not at.exception
    at.switch_page("app_pages/positional.py")
    at.session_state["prompt_box_positional"] = prompt
    at.run()  # its rotary views read resid_pre from the same run
    assert not at.exception
    assert len(count_forwards) == 1, count_forwards


@pytest.mark.slow
def test_minilm_says_why_there_is_no_lens_and_shows_geometry(app) -> None:
    at = open_page(app, "The cat sat on the mat.", model="minilm-l6")
    for name in TABS[:2]:  # the lens tabs say why, in one sentence, and draw nothing
        open_tab(at, name)
        assert ["has no unembedding" in i.value for i in at.info] == [True]
        assert not titles(at)
    assert "Residual stream norm at every layer and position" in titles(
        open_tab(at, "Residual stream"))
    assert "Token × token cosine · L5" in titles(open_tab(at, "Geometry"))
    open_tab(at, "Information flow")  # post-norm: its blocks' outputs are not sums
    assert ["post-norm" in i.value for i in at.info] == [True] and not titles(at)


@pytest.mark.slow
def test_hostile_prompt_is_text_everywhere(app) -> None:
    at = open_page(app, HOSTILE)
    strings = raw_strings(figures(at))
    for name in TABS[1:]:
        strings += raw_strings(figures(open_tab(at, name)))
    assert len(strings) > 100
    assert [s for s in strings if "<img" in s] == []
    assert any("&lt;" in s for s in strings) and any("&#36;" in s for s in strings)
    # invisible characters (zero-width space, right-to-left override) are shown as escapes
    assert not any("\u200b" in s or "\u202e" in s for s in strings)
    assert any("\\xe2\\x80" in s for s in strings)


@pytest.mark.slow
def test_bad_inputs_get_messages(app) -> None:
    at = open_page(app, "   ")
    assert any("Type a prompt" in i.value for i in at.info)
    at.session_state["prompt_box_layers"] = "Hi"
    at.run()
    assert not at.exception
    assert any("single token" in w.value for w in at.warning)
    assert any(c.value.startswith("1 token · the model ran once") for c in at.caption)
    words = " ".join(f"w{i % 97} x{i % 13}" for i in range(700))  # > 1,024 tokens
    at.session_state["prompt_box_layers"] = words
    at.run()
    assert not at.exception
    assert any("only the first 1,024 are analysed" in w.value for w in at.warning)
    sizes = [len(json.dumps(f)) for name in TABS for f in figures(open_tab(at, name))]
    assert len(sizes) == 8 and max(sizes) < MAX_FIGURE_BYTES


def test_encoder_decoder_reads_the_decoder_stream_and_both_stacks(app) -> None:
    with tiny_t5_in_store(app):
        at = open_page(app, "one two three one two three")
        assert titles(at)[0] == "Logit lens: the top token at every layer"
        assert figures(at)[0]["data"][0]["y"][-1] == "L2"  # 3 decoder layers
        open_tab(at, "Target token")
        assert titles(at)[0] == "Target token through the layers"
        open_tab(at, "Residual stream")
        assert at.radio(key="layers_resid_stream").options == ["Encoder", "Decoder"]
        at.radio(key="layers_resid_stream").set_value("encoder").run()
        assert figures(at)[0]["data"][0]["y"][-1] == "L1"  # 2 encoder layers
        open_tab(at, "Geometry")
        at.radio(key="layers_geo_stream").set_value("encoder").run()
        assert not at.exception
        open_tab(at, "Logit lens")
        at.toggle(key="layers_lens_sub").set_value(True).run()
        assert not at.exception
        assert "L0 cross-attn" in figures(at)[0]["data"][0]["y"]
        open_tab(at, "Residual stream")
        assert at.radio(key="layers_resid_stream").value == "encoder"
        open_tab(at, "Information flow")
        assert ["cross-attention" in i.value for i in at.info] == [True]


def test_a_hidden_tab_keeps_its_choices_across_a_new_prompt(app) -> None:
    """A hidden tab's widgets are not drawn, Streamlit keeps their values: one the new
    prompt cannot offer falls back to its default, the others come back."""
    words = [f"w{i}" for i in range(30)]
    with model_in_store(app, "tiny-share", TINY):
        at = open_page(app, " ".join(words))
        at.slider(key="layers_lens_start").set_value(12).run()  # 31 tokens: 0..15
        open_tab(at, "Target token")
        at.text_input(key="layers_target").set_value("w9").run()
        open_tab(at, "Geometry")
        at.select_slider(key="layers_geo_row").set_value("L1").run()
        at.session_state["prompt_box_layers"] = " ".join(words[:20])  # 21 tokens: 0..5
        at.run()
        open_tab(at, "Logit lens")
        assert at.slider(key="layers_lens_start").value == 5  # the default: the end
        open_tab(at, "Target token")
        assert at.text_input(key="layers_target").value == "w9"
        assert "Token × token cosine · L1" in titles(open_tab(at, "Geometry"))
