"""The lab's figure builders: labels escaped, masked cells blank and marked, masks drawn as
they are, the residual-path diagrams."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explorer.viz.lab import mask_grid, residual_path_dot, tensor_heatmap

HOSTILE = "<img src=x onerror=alert(1)>"


def test_tensor_heatmap_escapes_labels_and_marks_masked_cells() -> None:
    matrix = torch.tensor([[1.0, -math.inf], [0.5, -2.0]])
    fig = tensor_heatmap(matrix, [HOSTILE, "$x$"], ["a", "b"], title=HOSTILE, note="**n**")
    trace = fig.data[0]
    assert list(trace.y) == ["&lt;img src=x onerror=alert(1)&gt;", "&#36;x&#36;"]
    assert "<img" not in fig.layout.title.text
    assert np.isnan(trace.z[0][1]) and trace.text[0][1] == "−∞"
    assert trace.text[1][0] == "0.50" and trace.zmid == 0.0 and trace.zmax == 2.0
    assert tensor_heatmap(matrix, digits=None).data[0].text is None
    with pytest.raises(ValueError):
        tensor_heatmap(torch.zeros(2, 3), ["a"], ["x", "y", "z"])


def test_mask_grid_draws_each_mask() -> None:
    causal = torch.ones(3, 3).tril().bool()
    fig = mask_grid({"causal": causal, "all": torch.ones(3, 3).bool()}, ["a", HOSTILE, "c"])
    assert len(fig.data) == 2
    assert np.array_equal(np.asarray(fig.data[0].z), causal.numpy().astype(np.float32))
    assert fig.data[0].customdata[0][1] == "does not see"
    assert "&lt;img" in fig.data[0].x[1]


def test_residual_path_dot() -> None:
    pre, post = residual_path_dot("pre", "RMSNorm"), residual_path_dot("post")
    assert "identity" in pre and "RMSNorm" in pre and "identity" not in post
    assert post.count("LayerNorm") == 2 and pre.startswith("digraph")
    with pytest.raises(ValueError):
        residual_path_dot("sandwich")
