"""Generate page: greedy run with metrics and step views, bad input, chat, per-session state."""

from __future__ import annotations

import dataclasses

import pytest
from app_helpers import tiny_t5_in_store

import explorer.ui

pytestmark = pytest.mark.slow

GENERATE = "app_pages/generate.py"


def open_generate(app, prompt: str | None = "The capital of France is", max_new: int = 8):
    app.run()
    app.switch_page(GENERATE).run()
    if prompt is not None:
        app.text_area[0].input(prompt).run()
    app.number_input(key="generate_max_new").set_value(max_new).run()
    return app


def generate(app):
    app.button(key="generate_start").click().run()
    assert not app.exception
    return app


def metrics(app) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def stream_html(app) -> str:
    return next(h.proto.body for h in app.get("html") if "gen-stream" in h.proto.body)


def test_greedy_generation_shows_tokens_metrics_and_step_views(app) -> None:
    at = generate(open_generate(app))
    shown = metrics(at)
    assert shown["Tokens"] == "8" and shown["Finished"] == "token limit"
    assert float(shown["Tokens / s"]) > 0 and shown["Time to first token"].endswith(" s")
    html = stream_html(at)
    assert "Paris" in html and html.count('class="gen-tok') == 8
    assert 'title="step 0: p = ' in html
    assert len(at.get("plotly_chart")) == 4
    assert at.slider(key="generate_step_pick").value == 7
    at.slider(key="generate_step_pick").set_value(0).run()
    assert "Step 0: p(chosen)" in " ".join(c.value for c in at.caption)
    assert "gen-selected" in stream_html(at).split("step 1:")[0]
    at.selectbox(key="generate_head").set_value(3).run()
    assert not at.exception


def test_empty_prompt_gets_a_message(app) -> None:
    at = generate(open_generate(app, prompt="   "))
    assert any("prompt is empty" in w.value for w in at.warning)
    assert not at.get("plotly_chart")


def test_max_new_tokens_is_bounded(app) -> None:
    at = open_generate(app)
    assert at.number_input(key="generate_max_new").max == 256


def test_prompt_longer_than_the_context_is_cut_with_a_notice(app, monkeypatch) -> None:
    real = explorer.ui.require_model

    def small_context():
        lm = real()
        return dataclasses.replace(lm, config=dataclasses.replace(lm.config, n_ctx=24))

    monkeypatch.setattr(explorer.ui, "require_model", small_context)
    at = generate(open_generate(app, prompt="one two three four five six " * 5, max_new=8))
    assert any("were cut" in w.value and "context of 24" in w.value for w in at.warning)
    assert "earlier prompt tokens cut" in stream_html(at)
    assert metrics(at)["Tokens"] == "8"


def test_hostile_prompt_is_escaped(app) -> None:
    at = generate(open_generate(app, prompt="<img src=x onerror=alert(1)> **b** $x$",
                                max_new=3))
    html = stream_html(at)
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_chat_adds_the_turn_to_the_conversation(app) -> None:
    app.run()
    app.switch_page(GENERATE).run()
    app.radio(key="generate_mode").set_value("Chat").run()
    app.text_area(key="generate_message").input("What is 2 + 2?").run()
    app.number_input(key="generate_max_new").set_value(16).run()
    at = generate(app)
    roles = [m.name for m in at.chat_message]
    assert roles == ["user", "assistant"]
    assert metrics(at)["Finished"] in ("end of text", "token limit")


def test_a_generation_stays_in_its_own_session(app) -> None:
    generate(open_generate(app))
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import APP, LOAD_TIMEOUT_S

    other = AppTest.from_file(APP, default_timeout=LOAD_TIMEOUT_S)
    other.run()
    other.switch_page(GENERATE).run()
    assert not other.exception
    assert not other.get("plotly_chart") and not other.metric
    assert any("Press **Generate**" in c.value for c in other.caption)


def test_encoder_decoder_writes_and_shows_cross_attention(app) -> None:
    """A tiny random T5-like model: the encoder reads the prompt, the decoder writes, and the
    attention views show the decoder's cross-attention over the prompt."""
    with tiny_t5_in_store(app):
        at = generate(open_generate(app, "one two three four", max_new=5))
        assert not at.info or all("encoder:" not in i.value for i in at.info)
        n = int(metrics(at)["Tokens"])
        assert 1 <= n <= 5
        assert "→" in stream_html(at)
        assert at.selectbox(key="generate_layer").options == ["0", "1", "2"]  # decoder layers
        charts = [c.proto.spec for c in at.get("plotly_chart")]
        assert any("Cross-attention of each generated step over the prompt" in c for c in charts)
        assert any("which prompt tokens it read" in c for c in charts)
