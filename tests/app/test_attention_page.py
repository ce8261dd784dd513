"""Attention page (AppTest) on the embedded models: default view, head/layer switches, hostile
prompts, long prompts (pooled, payload under 2 MB), special tokens, the induction test, CSV."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch
from app_helpers import tiny_t5_in_store

from explorer.ui import attention as ui

PAGE = "app_pages/attention.py"
MAX_FIGURE_BYTES = 2 * 2**20


def open_page(app, prompt: str | None = None, model: str | None = None):
    if model:
        app.query_params["model"] = model
    app.run()
    app.switch_page(PAGE)
    if prompt is not None:
        app.session_state["prompt_box_attention"] = prompt
    app.run()
    assert not app.exception, app.exception
    return app


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def title(figure: dict) -> str:
    return figure["layout"]["title"]["text"]


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("value, expected", [
    ("=1+1", "'=1+1"), ("+A1", "'+A1"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=x", "'\t=x"), ("3: =cmd", "3: =cmd"), ("plain", "plain"), (0.5, 0.5),
])
def test_spreadsheet_safe(value, expected) -> None:
    assert ui.spreadsheet_safe(value) == expected


def test_pattern_csv_guards_formulas_and_keeps_weights() -> None:
    pattern = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    text = ui.pattern_csv(pattern, ["=HYPERLINK(x)", "b"], ["@a", "b"]).decode()
    lines = text.strip().splitlines()
    assert lines[0] == "query_pos,query,key_pos,key,weight"
    assert lines[1] == "0,'=HYPERLINK(x),0,'@a,1"
    assert lines[4] == "1,b,1,b,0.75" and len(lines) == 5


def test_head_labels_and_gqa_summary() -> None:
    assert ui.head_labels(4, 4) == ["head 0", "head 1", "head 2", "head 3"]
    assert ui.head_labels(4, 2)[3] == "head 3 · kv 1"
    assert "kv 1: heads 3, 4, 5" in ui.gqa_summary(9, 3)
    assert ui.gqa_summary(12, 12) is None


# --------------------------------------------------------------------------- the page

@pytest.mark.slow
def test_default_prompt_opens_the_strongest_induction_head(app) -> None:
    at = open_page(app)
    assert at.session_state["attn_score"] == "induction"
    layer, head = at.session_state["attn_layer"], at.session_state["attn_head"]
    figs = figures(at)
    assert title(figs[0]) == f"Layer {layer} · head {head} · kv {head // 3}"
    # the default prompt repeats a phrase: the opened head is a real induction head
    head_map = at.get("vega_lite_chart")[0].proto
    assert head_map.selection_mode == ["head"]
    rows = pa.ipc.open_stream(head_map.datasets[0].data.data).read_pandas()
    assert len(rows) == 30 * 9
    best = rows.loc[rows["score"].idxmax()]
    assert (best["layer"], best["head"]) == (layer, head) and best["score"] > 0.5
    captions = " ".join(c.value for c in at.caption)
    assert "9 query heads share 3 key/value heads" in captions
    assert all(len(json.dumps(f)) < MAX_FIGURE_BYTES for f in figs)
    assert at.session_state["attn_fragment_ms"] > 0


@pytest.mark.slow
def test_switching_head_and_layer_updates_the_views(app) -> None:
    at = open_page(app)
    at.selectbox(key="attn_layer").set_value(3).run()
    at.selectbox(key="attn_head").set_value(7).run()
    assert not at.exception
    figs = figures(at)
    assert title(figs[0]) == "Layer 3 · head 7 · kv 2"
    at.radio(key="attn_scale").set_value("log").run()
    assert "Log colour scale" in figures(at)[0]["layout"]["title"]["subtitle"]["text"]
    for how in ("max", "rollout"):
        at.radio(key="attn_aggregate").set_value(how).run()
        assert not at.exception
    assert title(figures(at)[-1]) == "Rollout through layer 3"
    at.radio(key="attn_lines").set_value("layer").run()
    lines = figures(at)[1]
    assert sum(1 for t in lines["data"] if t.get("mode") == "markers") == 9


@pytest.mark.slow
@pytest.mark.parametrize("prompt", [
    "<img src=x onerror=alert(1)> <script>alert(1)</script> **bold** $x$ \\(y\\)",
])
def test_hostile_prompt_is_shown_literally(app, prompt) -> None:
    at = open_page(app, prompt)
    text = json.dumps(figures(at))
    assert "<img" not in text and "<script" not in text
    assert "&lt;img" in text or "&lt;" in text
    assert "&#36;" in text  # dollar signs cannot start MathJax
    assert any("script" in label for label in at.selectbox(key="attn_query").options)


@pytest.mark.slow
def test_long_prompt_is_cut_pooled_and_small(app) -> None:
    words = " ".join(f"w{i % 97} x{i % 13}" for i in range(700))  # > 1,024 tokens
    at = open_page(app, words)
    assert any("only the first 1,024 are analysed" in w.value for w in at.warning)
    figs = figures(at)
    assert "Pooled 1024×1024 into 256×256" in figs[0]["layout"]["title"]["subtitle"]["text"]
    sizes = [len(json.dumps(f)) for f in figs]
    assert max(sizes) < MAX_FIGURE_BYTES, sizes
    at.radio(key="attn_head_heatmap_mode").set_value("window").run()
    assert not at.exception
    window = figures(at)[0]
    assert len(window["data"][0]["y"]) == 256 and window["data"][0]["y"][-1].startswith("1023:")


@pytest.mark.slow
def test_encoder_hides_special_tokens_and_renormalises(app) -> None:
    at = open_page(app, "The cat sat on the mat.", model="minilm-l6")
    ys = figures(at)[0]["data"][0]["y"]
    assert ys[0] == "0: [CLS]" and ys[-1].endswith("[SEP]")
    at.toggle(key="attn_hide_special").set_value(True).run()
    assert not at.exception
    ys = figures(at)[0]["data"][0]["y"]
    assert "[CLS]" not in " ".join(ys) and "[SEP]" not in " ".join(ys)
    assert ys[0].startswith("1: ")


@pytest.mark.slow
def test_induction_test_ranks_heads(app) -> None:
    at = open_page(app)
    at.button(key="attn_induction_run").click().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert float(table["induction score"].iloc[0]) > 0.5
    assert list(table["induction score"]) == sorted(table["induction score"], reverse=True)


def test_encoder_decoder_shows_self_and_cross_attention(app) -> None:
    """A tiny random T5-like model (no download) behind the real sidebar and page."""
    with tiny_t5_in_store(app):
        _check_encoder_decoder_page(app)


def _check_encoder_decoder_page(app) -> None:
    at = open_page(app, "one two three one two three")
    stacks = at.radio(key="attn_stack")
    assert stacks.options == ["Encoder self-attention", "Decoder self-attention (causal)",
                              "Decoder cross-attention (decoder queries → encoder keys)"]
    assert figures(at)[0]["data"][0]["z"] is not None
    at.radio(key="attn_stack").set_value("cross").run()
    assert not at.exception
    heatmap = figures(at)[0]
    assert title(heatmap).endswith("cross-attention")
    at.toggle(key="attn_hide_special").set_value(True).run()
    assert not at.exception
    assert "<s>" not in json.dumps(figures(at)[0]["data"][0]["x"])
    at.radio(key="attn_aggregate").set_value("rollout").run()
    assert any("Rollout follows self-attention" in i.value for i in at.info)
