"""The architecture lab's blocks: feed-forward units equal their closed forms, post-norm keeps
the residual stream at sqrt(d_model), table 1 of Vaswani et al. 2017, a capped timing."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.analysis.lab_blocks import (
    UNITS,
    ffn_curves,
    residual_norms,
    sequence_costs,
    time_layers,
)

torch.set_num_threads(1)


def test_ffn_units_equal_their_closed_forms() -> None:
    x = torch.linspace(-4, 4, 41)
    u = -1.5
    curves = ffn_curves(x, u)
    assert list(curves) == list(UNITS)
    phi = 0.5 * (1 + torch.erf(x / math.sqrt(2)))  # standard normal CDF
    silu = x * torch.sigmoid(x)
    gelu_tanh = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    expected = [x.clamp(min=0), x * phi, silu, silu * u, gelu_tanh * u]
    for (label, curve), want in zip(curves.items(), expected, strict=True):
        torch.testing.assert_close(curve, want, atol=1e-5, rtol=1e-5, msg=label)


def test_post_norm_stream_stays_at_sqrt_d_model_and_pre_norm_grows() -> None:
    d_model = 32
    post = residual_norms("post", n_layers=6, d_model=d_model)
    assert post == pytest.approx([math.sqrt(d_model)] * 6, rel=1e-3)
    pre = residual_norms("pre", n_layers=6, d_model=d_model)
    assert pre[-1] > pre[0] > math.sqrt(d_model)


def test_sequence_costs_table() -> None:
    rnn, attention, local = sequence_costs(n=100, d=64, window=10)
    assert (rnn.sequential_steps, rnn.max_path, rnn.operations) == (100, 99, 100 * 64 * 64)
    assert (attention.sequential_steps, attention.max_path) == (1, 1)
    assert attention.operations == 100 * 100 * 64
    assert local.max_path == 10 and local.operations == 100 * 21 * 64  # ceil(99 / 10)


def test_timing_measures_in_order_within_budget() -> None:
    steps = []
    timings = time_layers([8, 16, 32], d_model=16, n_heads=2, budget_s=5.0, repeats=1,
                          on_step=lambda i, total: steps.append((i, total)))
    assert timings.lengths == [8, 16, 32] and timings.complete
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert all(t > 0 for t in timings.rnn_s + timings.attention_s)
    cut = time_layers([8, 16, 32], d_model=16, n_heads=2, budget_s=0.0, repeats=1)
    assert cut.lengths == [8] and not cut.complete  # the first length always runs
