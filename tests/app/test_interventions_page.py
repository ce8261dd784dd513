"""Interventions page (AppTest): zero-ablating a head on SmolLM2 shows the distribution the
model gives with that head's slice of attn.z zeroed by hand, generation with and without it,
a direct logit attribution that adds up, prompt A vs B; on tiny random models (GPT-2-like,
Llama-like with GQA) a patching grid with closed-form cells (patching layer 0's residual at
the one differing position restores the clean run exactly, at any other position nothing),
a clicked cell's run; hostile, unsupported, mismatched and bad-token inputs and a busy server get
messages."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pyarrow as pa
import pytest
import torch
from app_helpers import model_in_store, tiny_t5_in_store

import explorer
from explorer.config import ModelConfig
from explorer.serving import GateTimeout
from explorer.ui import patching

PAGE = "app_pages/interventions.py"
TABS = ["Ablate", "Generate with the ablation", "Activation patching",
        "Direct logit attribution", "Compare A vs B"]
HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ مرحبا\u200b\u202e"
PROMPT = "The Eiffel Tower is in the city of"


def open_page(app, prompt: str | None = PROMPT, model: str | None = None, **state):
    if model:
        app.query_params["model"] = model
    app.run()
    app.switch_page(PAGE)
    if prompt is not None:
        app.session_state["prompt_box_interventions"] = prompt
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    assert not app.exception, app.exception
    return app


def figures(at) -> dict[str, dict]:
    """Plotly figures by their widget key (the end of the element id)."""
    return {chart.proto.id.rsplit("-", 1)[-1]: json.loads(chart.proto.spec)
            for chart in at.get("plotly_chart")}


def array(value) -> np.ndarray:
    """A figure's numbers, whether plotly wrote a list or a base64 typed array."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape", len(flat))
        return flat.reshape([int(n) for n in str(shape).split(",")])
    return np.asarray(value, dtype=float)


def raw_strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in raw_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in raw_strings(v)]
    return [value] if isinstance(value, str) else []


def patch_rows(at):
    """The patching grid's records (the clickable altair chart's data)."""
    chart = next(c for c in at.get("vega_lite_chart") if c.proto.id.endswith("int_patch_map"))
    return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_pandas()


@pytest.mark.slow
def test_zero_ablating_a_head_matches_zeroing_its_slice_by_hand(app) -> None:
    at = open_page(app, int_heads=[(18, 6)])
    assert [t.label for t in at.tabs] == TABS
    assert "Zero ablation of L18H6" in " ".join(m.value for m in at.markdown)
    lm = explorer.load("smollm2-135m")
    ids = lm.encode(PROMPT)

    def zero_head(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        z[:, 6] = 0
        return z

    with torch.no_grad():
        before = torch.softmax(lm.model(ids)[0, -1].float(), -1)
        after = torch.softmax(lm.model(ids, edits={"blocks.18.attn.z": zero_head})[0, -1]
                              .float(), -1)
    bars = figures(at)["int_ablate_dist"]["data"]
    top = before.topk(10).indices
    assert array(bars[0]["x"])[:10] == pytest.approx(before[top].tolist(), abs=1e-4)
    assert array(bars[1]["x"])[:10] == pytest.approx(after[top].tolist(), abs=1e-4)
    assert not torch.allclose(before, after)  # the head does something here
    lens_fig = figures(at)["int_ablate_lens"]["data"][0]
    assert lens_fig["y"][0] == "embeddings" and lens_fig["y"][-1] == "L29"
    # the rows up to L17 read the stream before the ablated layer: nothing changes there
    assert np.abs(array(lens_fig["z"])[:19]).max() < 1e-4
    assert {"ablate", "patching", "attribution", "compare"} <= set(
        at.session_state["interventions_ms"])
    # direct logit attribution adds up to the real logit difference
    caption = next(c.value for c in at.caption if "add up to the real logit" in c.value)
    total, real = map(float, re.findall(r"(-?\d+\.\d+) vs (-?\d+\.\d+)", caption)[0])
    assert total == pytest.approx(real, abs=1e-3)
    # generation with and without the ablation, side by side
    at.number_input(key="int_gen_max").set_value(4)
    at.button(key="int_gen_start").click().run()
    assert not at.exception
    assert any("agree on their first" in c.value for c in at.caption)
    assert len(at.session_state["int_generated"][1][1].texts) == 4


@pytest.mark.slow
def test_hostile_prompt_is_text_everywhere(app) -> None:
    at = open_page(app, HOSTILE, int_heads=[(0, 0)], int_prompt_b=HOSTILE + " B")
    strings = raw_strings(list(figures(at).values()))
    assert [s for s in strings if "<img" in s] == []
    assert any("&lt;" in s for s in strings) and any("&#36;" in s for s in strings)
    assert not any("\u200b" in s or "\u202e" in s for s in strings)
    at.session_state["int_clean"] = HOSTILE
    at.session_state["int_corrupt"] = HOSTILE + " longer"
    at.run()
    assert any("same length" in w.value for w in at.warning)


def tiny(at, name: str, **config):
    cfg = ModelConfig(d_model=32, n_heads=4, d_mlp=64, d_vocab=37, n_ctx=64, n_layers=2,
                      name=name, **config)
    return model_in_store(at, name, cfg)


TINY = {"gpt2": {"positional": "learned", "norm": "layernorm", "mlp": "gelu"},
        "llama": {"positional": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_heads": 2}}


@pytest.mark.parametrize("family", list(TINY))
def test_patching_grid_has_its_closed_form_cells(app, family) -> None:
    with tiny(app, f"tiny-{family}", **TINY[family]):
        at = open_page(app, "one two three four", int_heads=[(1, 3)], int_mode="mean",
                       int_clean="alpha beta gamma delta", int_corrupt="alpha beta zeta delta",
                       int_answer="alpha", int_distractor="delta")
        assert not at.warning, [w.value for w in at.warning]
        captions = " ".join(c.value for c in at.caption)
        # <s> alpha beta agree: 2 layers x 2 positions left to patch
        assert "4 patched runs for 10 cells" in captions
        assert "agree on their first 3 tokens" in captions
        at.button(key="int_patch_run").click().run()
        assert not at.exception
        rows = patch_rows(at)
        assert len(rows) == 2 * 5  # 2 layers x 5 positions (with <s>)
        layer0 = rows[rows["row_index"] == 0].set_index("col_index")["normalised"]
        assert layer0[3] == pytest.approx(1.0, abs=1e-4)  # the one position that differs
        assert layer0[[0, 1, 2]].tolist() == pytest.approx([0, 0, 0], abs=1e-4)
        # a picked cell shows its patched run: the clean distribution, here
        at.selectbox(key="int_patch_layer").set_value(0)
        at.selectbox(key="int_patch_column").set_value(3).run()
        assert "normalised 1.000" in " ".join(c.value for c in at.caption)
        at.radio(key="int_site").set_value("head").run()
        at.button(key="int_patch_run").click().run()
        assert not at.exception
        assert len(patch_rows(at)) == 2 * 4  # 2 layers x 4 heads
        for tab in ("int_cmp_attn_A", "int_dla_fig", "int_ablate_lens"):
            assert tab in figures(at), tab


def test_bad_tokens_and_unsupported_models_get_messages(app, monkeypatch) -> None:
    def busy(*args, **kwargs):
        raise GateTimeout("no slot after 1 s")

    monkeypatch.setattr(patching, "patch_grid", busy)
    with tiny(app, "tiny-gpt2", **TINY["gpt2"]):
        at = open_page(app, "one two three", int_answer="alpha", int_distractor="delta")
        at.button(key="int_patch_run").click().run()
        assert not at.exception
        assert any("The server is busy (no slot after 1 s)" in w.value for w in at.warning)
        at = open_page(app, "one two three", int_answer="two words", int_dla_target="x y")
        warnings = " ".join(w.value for w in at.warning)
        assert warnings.count("type a single token") == 2
        at.session_state["int_answer"] = at.session_state["int_distractor"] = "alpha"
        at.run()
        assert any("are the same token" in w.value for w in at.warning)
        at.session_state["prompt_box_interventions"] = "  "
        at.run()
        assert any("Type a prompt" in i.value for i in at.info)
    with tiny_t5_in_store(app):  # T5 is supported: its own test is test_interventions_families
        app.run()
        assert not app.exception and not app.error
