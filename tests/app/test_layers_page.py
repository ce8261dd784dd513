"""Layers page (AppTest): the lens grid's top row is the model's own prediction, every tab
renders on SmolLM2, MiniLM (no head: a sentence says why) and a tiny T5; one forward serves
the Attention, Layers and Positional pages; hostile, empty, single-token, too-long and
bad-target inputs get clear messages."""

from __future__ import annotations

import json

import pytest
import torch
from app_helpers import tiny_t5_in_store

import explorer
from explorer.runs import prompt_run
from explorer.viz.tokens import display_token, escape_for_plotly

PAGE = "app_pages/layers.py"
MAX_FIGURE_BYTES = 2 * 2**20
HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ مرحبا\u200b\u202e"


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
    assert [t.label for t in at.tabs] == ["Logit lens", "Target token", "Residual stream",
                                          "Geometry"]
    names = titles(at)
    assert names[0] == "Logit lens: the top token at every layer"
    assert any(name.startswith("Direct contributions to the logit of") for name in names)
    assert "Residual stream norm at every layer and position" in names
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
    captions = " ".join(c.value for c in at.caption)
    assert "The parts add up to the real logit" in captions
    sizes = [len(json.dumps(f)) for f in figures(at)]
    assert max(sizes) < MAX_FIGURE_BYTES
    assert set(at.session_state["layers_ms"]) == {"lens", "target", "residual", "geometry"}
    assert len(at.main.get("download_button")) == 6  # one CSV per chart (norms share one)


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
    at.text_input(key="layers_target").set_value(" six").run()
    assert not at.exception and not at.warning
    at.radio(key="layers_contrib_how").set_value("waterfall").run()
    at.select_slider(key="layers_geo_row").set_value("L3").run()
    at.toggle(key="layers_pca_skip").set_value(False).run()
    at.toggle(key="layers_resid_log").set_value(False).run()
    assert not at.exception
    assert any(t == "Tokens on two principal axes · L3" for t in titles(at))
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
    infos = " ".join(i.value for i in at.info)
    assert "has no unembedding" in infos
    names = titles(at)
    assert "Residual stream norm at every layer and position" in names
    assert any(name.startswith("Token × token cosine") for name in names)
    assert not any(name.startswith("Logit lens") for name in names)


@pytest.mark.slow
def test_hostile_prompt_is_text_everywhere(app) -> None:
    at = open_page(app, HOSTILE)
    strings = raw_strings(figures(at))
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
    words = " ".join(f"w{i % 97} x{i % 13}" for i in range(700))  # > 1,024 tokens
    at.session_state["prompt_box_layers"] = words
    at.run()
    assert not at.exception
    assert any("only the first 1,024 are analysed" in w.value for w in at.warning)
    assert max(len(json.dumps(f)) for f in figures(at)) < MAX_FIGURE_BYTES


def test_encoder_decoder_reads_the_decoder_stream_and_both_stacks(app) -> None:
    with tiny_t5_in_store(app):
        at = open_page(app, "one two three one two three")
        assert titles(at)[0] == "Logit lens: the top token at every layer"
        assert figures(at)[0]["data"][0]["y"][-1] == "L2"  # 3 decoder layers
        assert at.radio(key="layers_resid_stream").options == ["Encoder", "Decoder"]
        at.radio(key="layers_resid_stream").set_value("encoder").run()
        at.radio(key="layers_geo_stream").set_value("encoder").run()
        at.toggle(key="layers_lens_sub").set_value(True).run()
        assert not at.exception
        assert "L0 cross-attn" in figures(at)[0]["data"][0]["y"]
