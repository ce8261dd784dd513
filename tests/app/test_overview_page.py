"""Overview page: the loaded model's numbers, parameter chart and architecture diagram."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_overview_smollm2(app) -> None:
    app.run()
    assert not app.exception
    values = metrics(app)
    # SmolLM2-135M: 30 layers, 9 heads / 3 KV heads, d_model 576, d_head 64, d_mlp 1536,
    # vocabulary 49,152, context 8,192; 134,515,008 parameters (embedding tied).
    assert values == {
        "Parameters": "134.5M", "Layers": "30", "Heads": "9", "KV heads": "3",
        "d_model": "576", "d_head": "64", "d_mlp": "1536", "Vocabulary": "49,152",
        "Context": "8,192", "Positions": "rope", "Norm": "rmsnorm", "MLP": "swiglu",
    }
    dot = app.get("graphviz_chart")[0].proto.spec
    assert "block × 30" in dot and "gated MLP (SwiGLU)" in dot and "3 KV heads" in dot
    assert "tied to embedding" in dot
    chart = app.get("vega_lite_chart")
    assert len(chart) == 1 and "134,515,008" not in chart[0].proto.spec  # data travels as arrow


def test_overview_changes_with_model(app) -> None:
    app.query_params["model"] = "minilm-l6"
    app.run()
    assert not app.exception
    values = metrics(app)
    assert values["Layers"] == "6" and values["Heads"] == "12" and values["d_model"] == "384"
    assert values["Positions"] == "learned" and values["Norm"] == "layernorm"
    assert values["Parameters"] == "22.6M"
    dot = app.get("graphviz_chart")[0].proto.spec
    assert "block × 6" in dot and "bidirectional" in dot and "hidden states" in dot
    assert "logits" not in dot
