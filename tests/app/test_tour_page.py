"""Guided tour page (AppTest): every step renders for tiny Llama (GQA), GPT-2, BERT (with and
without its masked-LM head) and T5 models and for SmolLM2 (slow); the step lives in the URL
(``?step=N``; bad or out-of-range values show step 1); Next/Back move it; the probabilities
chart shows the model's own output; a hostile prompt stays text."""

from __future__ import annotations

import base64
import json

import app_helpers
import numpy as np
import pytest
import torch
from app_helpers import WordTokenizer, model_in_store

from explorer.models.converters.bert import MLM_HEAD, bert_config
from explorer.models.converters.gpt2 import gpt2_config
from explorer.models.converters.llama import llama_config
from explorer.models.converters.t5 import t5_config

PAGE = "app_pages/tour.py"
HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ مرحبا\u200b\u202e"
VOCAB = 37

CONFIGS = {
    "llama": lambda: llama_config({
        "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 48, "num_hidden_layers": 2, "vocab_size": VOCAB,
        "max_position_embeddings": 64}),
    "gpt2": lambda: gpt2_config({"n_embd": 32, "n_head": 4, "n_layer": 2,
                                 "vocab_size": VOCAB, "n_positions": 64}),
    "bert": lambda: bert_config({
        "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48,
        "num_hidden_layers": 2, "vocab_size": VOCAB, "max_position_embeddings": 64},
        frozenset({MLM_HEAD})),
    "bert-no-head": lambda: bert_config({
        "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48,
        "num_hidden_layers": 2, "vocab_size": VOCAB, "max_position_embeddings": 64}),
    "t5": lambda: t5_config({"d_model": 32, "num_heads": 4, "d_kv": 8, "d_ff": 48,
                             "vocab_size": VOCAB, "num_layers": 2, "num_decoder_layers": 2,
                             "relative_attention_num_buckets": 8,
                             "relative_attention_max_distance": 20}),
}
N_STEPS = {"llama": 15, "gpt2": 15, "bert": 14, "bert-no-head": 13, "t5": 18}


def open_tour(at, prompt: str = "the cat sat on the mat the cat", step: str | None = None):
    at.run()
    at.switch_page(PAGE)
    at.session_state["prompt_box_tour"] = prompt
    if step is not None:
        at.query_params["step"] = step
    at.run()
    assert not at.exception, at.exception
    return at


def step_title(at) -> str:
    return at.subheader[0].value


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def numbers(value) -> list[float]:
    """A plotly array as numbers (plotly ships float arrays as base64 ``bdata``)."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def goto(at, step: int):
    at.query_params["step"] = str(step)
    at.run()
    assert not at.exception, (step, at.exception)
    return at


@pytest.mark.parametrize("family", list(CONFIGS))
def test_every_step_renders(app, family: str) -> None:
    with model_in_store(app, f"tiny-{family}", CONFIGS[family]()):
        at = open_tour(app)
        n = len(at.selectbox(key="tour_jump").options)
        assert n == N_STEPS[family]
        for step in range(1, n + 1):
            goto(at, step)
            assert step_title(at).startswith(f"{step}. ")
            assert at.get("latex"), step  # every step has its equation
            assert any("Shapes" in md.value for md in at.markdown), step
            assert at.get("plotly_chart") or step == 1, step  # step 1 draws token chips
        assert at.button(key="tour_next_top").disabled


def test_step_in_the_url_is_validated_and_next_back_move_it(app) -> None:
    with model_in_store(app, "tiny-llama", CONFIGS["llama"]()):
        at = open_tour(app, step="4")
        assert step_title(at).startswith("4. Queries, keys and values")
        at.button(key="tour_next_top").click().run()
        assert at.query_params["step"] in ("5", ["5"]) and step_title(at).startswith("5. ")
        at.button(key="tour_back_bottom").click().run()
        assert step_title(at).startswith("4. ")
        for bad in ("0", "99", "-3", "abc", "2.5", ""):
            goto(at, bad)
            assert step_title(at).startswith("1. Text to tokens"), bad
        assert at.button(key="tour_back_top").disabled


def test_probabilities_are_the_models_output_and_a_hostile_prompt_stays_text(app) -> None:
    cfg = CONFIGS["gpt2"]()
    with model_in_store(app, "tiny-gpt2", cfg):
        at = open_tour(app, prompt=HOSTILE, step="14")
        from explorer.ui.resources import model_store

        lm = model_store().get(at.session_state["model_key"])
        ids = torch.tensor([lm.tokenizer.encode(HOSTILE)])
        with torch.no_grad():
            expected = torch.softmax(lm.model(ids)[0, -1], -1).topk(10).values
        bars = figures(at)[0]["data"][0]
        shown = torch.tensor(numbers(bars["x"]), dtype=torch.float32)
        assert torch.allclose(shown, expected, atol=1e-6)
        for step in (1, 3, 15):
            goto(at, step)
            text = " ".join(md.value for md in at.markdown)
            assert "<img" not in text


class MaskTokenizer(WordTokenizer):
    """The word tokenizer with BERT's [MASK] (id 3, the word "[MASK]")."""

    mask_token, mask_token_id = "[MASK]", 3
    all_special_ids = (0, 1, 3)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [3 if word.rstrip(".") == "[MASK]" else i
               for word, i in zip(text.split(), super().encode(text, False), strict=True)]
        return [1, *ids] if add_special_tokens else ids

    def convert_ids_to_tokens(self, ids):
        return ["[MASK]" if i == 3 else t for i, t in zip(ids, super().convert_ids_to_tokens(
            ids), strict=True)]


def test_bert_follows_its_mask_and_offers_an_example(app, monkeypatch) -> None:
    monkeypatch.setattr(app_helpers, "WordTokenizer", MaskTokenizer)
    with model_in_store(app, "tiny-bert-mlm", CONFIGS["bert"]()):
        at = open_tour(app, prompt="the cat sat")
        assert "fill in hidden words" in at.info[0].value
        at.button(key="tour_mask_example").click().run()
        assert at.session_state["prompt_box_tour"] == "The capital of France is [MASK]."
        assert not at.info and at.selectbox(key="tour_position").value == 6  # [MASK]
        goto(at, 14)
        assert step_title(at) == "14. Probabilities"
        assert "hidden word" in " ".join(m.value for m in at.markdown)


@pytest.mark.slow
def test_smollm2_tour(app) -> None:
    at = open_tour(app, "The capital of France is")
    for step in range(1, 16):
        goto(at, step)
    assert step_title(at).startswith("15. Sampling")
    at.slider(key="tour_temperature").set_value(0.5).run()
    at.button(key="tour_draw").click().run()
    assert not at.exception
