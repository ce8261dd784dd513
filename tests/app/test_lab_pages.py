"""The three lab pages (AppTest) on a tiny random Llama-style model (GQA, SwiGLU): each renders,
shows the values `explorer.analysis` computes, reacts to its widgets, shows hostile token text
literally; the timing and the fine-tuning run on their buttons (shortened here)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from app_helpers import model_in_store

from explorer.analysis.cost import parameter_formula
from explorer.analysis.lab_attention import attention_steps, mask_pattern, random_qkv
from explorer.analysis.lab_efficient import lab_moe, lora_count, route_tokens
from explorer.analysis.params import format_count
from explorer.config import ModelConfig
from explorer.nn.norms import RMSNorm
from explorer.ui import lab_architecture
from explorer.ui.resources import ModelKey, model_store

HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ \u202eevil\u200b"
CFG = ModelConfig(d_model=24, n_heads=4, n_kv_heads=2, d_mlp=40, d_vocab=37, n_ctx=64,
                  n_layers=2, positional="rope", norm="rmsnorm", mlp="swiglu", norm_bias=False,
                  name="tiny", family="llama")


def open_page(app, page: str):
    app.run()
    app.switch_page(f"app_pages/{page}.py")
    app.run()
    check(app)
    return app


def check(at) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def figures(at) -> dict[str, dict]:
    """Plotly figures by their title text."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec["layout"].get("title", {}).get("text", "")
        out[title] = spec
    return out


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def array(trace: dict, field: str) -> np.ndarray:
    """A trace's numbers: plotly sends numpy arrays as base64 typed arrays."""
    data = trace[field]
    if isinstance(data, dict):
        flat = np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
        shape = data.get("shape")
        return flat.reshape([int(s) for s in str(shape).split(",")]) if shape else flat
    return np.asarray(data, dtype=float)


def test_attention_lab(app) -> None:
    with model_in_store(app, "tiny", CFG):
        at = open_page(app, "lab_attention")
        figs = figures(at)
        # the weights shown are nn's attention of the seeded random Q, K, V, causal mask
        q, k, v = random_qkv(6, 4, seed=0)
        steps = attention_steps(q, k, v, mask_pattern("causal", 6))
        weights = next(f for t, f in figs.items() if t.startswith("4. softmax"))
        np.testing.assert_allclose(array(weights["data"][0], "z"), steps.weights.numpy(),
                                   atol=1e-6)
        assert any(t.startswith("Q [6, 4]") for t in figs)
        assert "Which query (row) sees which key (column)" in figs
        assert "Attention by head" in figs
        # moving d_k changes the metrics and the example query's chart
        before = metric(at, "Largest weight, not scaled")
        row_before = figs["One query&#39;s weights at d_k = 64"]["data"][1]
        at.select_slider(key="lab_scale_dk").set_value(512).run()
        check(at)
        assert metric(at, "Largest weight, not scaled") != before
        after = figures(at)["One query&#39;s weights at d_k = 512"]["data"][1]
        assert not np.array_equal(array(after, "y"), array(row_before, "y"))
        # typed Q, K, V start from the random ones; hostile tokens stay text
        at.radio(key="lab_sdpa_src").set_value("typed").run()
        check(at)
        at.text_input(key="lab_tokens").input(HOSTILE).run()
        check(at)
        labels = figures(at)["Q [6, 4]"]["data"][0]["y"]
        assert labels[0] == "0: &lt;img" and all("<" not in label for label in labels)
        assert labels[3:5] == ["3: **bold**", "4: &#36;x&#36;"]
        assert labels[5] == "5: \\u202eevil\\…"  # invisible characters shown, long labels cut


def test_architecture_lab(app, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_architecture, "TIMING_LENGTHS", [8, 16])
    monkeypatch.setattr(lab_architecture, "LORA_STEPS", 12)
    with model_in_store(app, "tiny", CFG):
        app.session_state["prompt_box_lab_moe"] = "one two three four five"
        at = open_page(app, "lab_architecture")
        figs = figures(at)
        assert "One hidden unit of each feed-forward type" in figs
        assert "Size of the residual stream after each block" in figs
        # the MoE routes the tiny model's own embeddings of the prompt's tokens
        lm = model_store().get(ModelKey("tiny-test"))
        ids = torch.tensor(lm.tokenizer.encode("one two three four five"))
        with torch.no_grad():
            x = RMSNorm(CFG.d_model)(lm.model.embed.tokens(ids))
        routing = route_tokens(lab_moe(CFG.d_model, 8, 2, seed=0), x)
        assert metric(at, "Switch balancing loss E · Σ f·P") == f"{routing.aux_loss:.3f}"
        count = lora_count(lm.model, ("q", "v"), 8)
        assert metric(at, "LoRA trains") == format_count(count.lora)
        at.slider(key="lab_moe_e").set_value(4).run()
        check(at)
        assert figures(at)["Which experts each token goes to"]["data"][0]["x"] == [
            "E0", "E1", "E2", "E3"]
        # the two runs happen only on their buttons
        assert "Time of one layer&#39;s forward on this machine" not in figs
        at.button(key="lab_seq_run").click().run()
        check(at)
        timing = figures(at)["Time of one layer&#39;s forward on this machine"]
        assert [array(trace, "x").tolist() for trace in timing["data"]] == [[8, 16]] * 2
        assert all((array(trace, "y") > 0).all() for trace in timing["data"])
        at.button(key="lab_lora_run").click().run()
        check(at)
        loss = figures(at)["Training loss (cross-entropy of the next token)"]
        assert len(loss["data"]) == 2
        assert loss["data"][0]["name"].startswith("LoRA r = 8 on q, v")


def test_cost_calculator(app) -> None:
    with model_in_store(app, "tiny", CFG):
        at = open_page(app, "lab_cost")
        total = sum(parameter_formula(CFG).values())
        assert any("equals its real count" in c.value for c in at.caption)
        assert metric(at, "Parameters") == format_count(total)
        key = next(n.key for n in at.number_input if n.label == "d_model")
        at.number_input(key=key).set_value(48).run()
        check(at)
        wider = sum(parameter_formula(CFG.replace(d_model=48, d_head=None)).values())
        assert metric(at, "Parameters") == format_count(wider)
        assert not any("equals its real count" in c.value for c in at.caption)
        rows = at.dataframe[0].value
        assert list(rows["attention"]) == ["full attention", "local window w = 16"]  # n_ctx / 4
        key = next(n.key for n in at.number_input if n.label == "KV heads")
        at.number_input(key=key).set_value(3).run()  # 4 heads cannot share 3 KV heads
        assert at.error and "do not fit together" in at.error[0].value


@pytest.mark.parametrize("family", ["t5", "bert"])
def test_lab_pages_on_other_families(app, family: str) -> None:
    """An encoder-decoder (T5-like) and an encoder without an LM head (MiniLM-like): every
    page renders; the masks say what the family uses; encoders keep no KV cache."""
    cfg = {"t5": ModelConfig(d_model=16, n_heads=4, d_mlp=24, d_vocab=37, n_ctx=64, n_layers=2,
                             kind="encoder-decoder", positional="relative", norm="rmsnorm",
                             mlp="geglu", n_decoder_layers=3, name="tiny-t5", family="t5"),
           "bert": ModelConfig(d_model=16, n_heads=4, d_mlp=24, d_vocab=37, n_ctx=64,
                               n_layers=2, kind="encoder", norm_position="post",
                               n_token_types=2, embed_norm=True, has_unembed=False,
                               qkv_bias=True, out_bias=True, mlp_bias=True, name="tiny-bert",
                               family="bert")}[family]
    with model_in_store(app, f"tiny-{family}", cfg):  # its own name: its own cached counts
        at = open_page(app, "lab_attention")
        uses = "causal in the decoder" if family == "t5" else "padding only"
        assert any(uses in c.value for c in at.caption)
        at.switch_page("app_pages/lab_architecture.py")
        at.run()
        check(at)
        assert "Which experts each token goes to" in figures(at)
        at.switch_page("app_pages/lab_cost.py")
        at.run()
        check(at)
        assert any("equals its real count" in c.value for c in at.caption)
        kv_cache = at.dataframe[0].value["KV cache"].tolist()
        assert (kv_cache[0] == "none (encoders do not decode)") == (family == "bert")
