"""Tokenizer page: chips with ids, counts, chat template, hostile input."""

from __future__ import annotations

import pytest

from explorer.ui.widgets import MAX_PROMPT_CHARS

pytestmark = pytest.mark.slow

TOKENIZER = "app_pages/tokenizer.py"


def open_tokenizer(app, text: str):
    app.run()
    app.switch_page(TOKENIZER).run()
    app.text_area[0].input(text).run()
    assert not app.exception
    return app


def token_count(app) -> str:
    return next(m.value for m in app.metric if m.label == "Tokens")


def test_tokens_of_typed_text(app) -> None:
    at = open_tokenizer(app, "Hello world\nHello")
    assert token_count(at) == "4"
    chips = at.get("html")[0].proto.body
    for label in (">Hello<", ">␣world<", ">↵<"):
        assert label in chips
    assert at.query_params["prompt"] == "Hello world\nHello"
    template = at.code[0].value
    assert template.startswith("<|im_start|>system") and "Hello world\nHello<|im_end|>" in template


@pytest.mark.parametrize(
    "text",
    ["", "<img src=x onerror=alert(1)>", "**bold** $x$", "שלום 🙂 a\u200bb\x07", "x" * 20_000],
)
def test_hostile_text_is_escaped(app, text: str) -> None:
    at = open_tokenizer(app, text)
    chips = "".join(h.proto.body for h in at.get("html"))
    assert "<img" not in chips and "onerror=alert(1)>" not in chips
    if "<img" in text:
        assert '"tx-piece">&lt;</span>' in chips and '"tx-piece">)&gt;</span>' in chips
    if len(text) > MAX_PROMPT_CHARS:
        assert any(f"only the first {MAX_PROMPT_CHARS:,} are used" in w.value for w in at.warning)
    if not text:
        assert token_count(at) == "0"


def test_encoder_tokenizer_marks_special_tokens(app) -> None:
    app.query_params["model"] = "minilm-l6"
    at = open_tokenizer(app, "Hello world")
    assert token_count(at) == "4"  # [CLS] hello world [SEP]
    chips = at.get("html")[0].proto.body
    assert chips.count("tx-special") == 2 + 1  # two chips (+ the CSS rule)
    assert any("no chat template" in c.value for c in at.caption)


def test_prompt_from_url_and_kept_across_pages(app) -> None:
    app.query_params["prompt"] = "Paris is"
    app.run()
    app.switch_page(TOKENIZER).run()
    assert app.text_area[0].value == "Paris is" and token_count(app) == "2"
    app.text_area[0].input("Rome is big").run()
    app.switch_page("app_pages/overview.py").run()
    assert app.query_params["prompt"] == "Rome is big"
    app.switch_page(TOKENIZER).run()
    assert app.text_area[0].value == "Rome is big"
