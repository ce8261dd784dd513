"""The attention lab's computations against closed forms and against `explorer.nn` itself."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.analysis.lab_attention import (
    MASKS,
    SCALED,
    UNSCALED,
    attention_steps,
    mask_pattern,
    random_qkv,
    scaling_curves,
    softmax_stats,
    split_heads,
)
from explorer.config import ModelConfig
from explorer.nn import build_model

torch.set_num_threads(1)


def test_steps_by_hand_on_a_two_token_example() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    v = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    steps = attention_steps(q, k, v, allowed=mask_pattern("causal", 2))
    torch.testing.assert_close(steps.scores, torch.tensor([[1.0, 0.0], [2.0, 2.0]]))
    torch.testing.assert_close(steps.scaled, steps.scores / math.sqrt(2))
    assert steps.masked[0, 1] == -math.inf and steps.masked[1, 1] == steps.scaled[1, 1]
    # row 0 sees only key 0; row 1 has equal scores: half and half
    torch.testing.assert_close(steps.weights, torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    torch.testing.assert_close(steps.out, torch.tensor([[10.0, 0.0], [5.0, 5.0]]))


@pytest.mark.parametrize("kind", MASKS)
def test_steps_equal_softmax_of_the_masked_scores(kind: str) -> None:
    q, k, v = random_qkv(6, 4, seed=3)
    allowed = mask_pattern(kind, 6, padding=2, window=1)
    steps = attention_steps(q, k, v, allowed)
    torch.testing.assert_close(steps.weights, torch.softmax(steps.masked, -1))
    torch.testing.assert_close(steps.out, steps.weights @ v)
    torch.testing.assert_close(steps.weights.sum(-1), torch.ones(6))
    if allowed is not None:
        assert (steps.weights[~allowed] == 0).all()


def test_mask_patterns() -> None:
    n = 5
    assert mask_pattern("none", n) is None
    assert torch.equal(mask_pattern("causal", n), torch.ones(n, n).tril().bool())
    window = mask_pattern("local window", n, window=1)
    assert window.sum(-1).tolist() == [2, 3, 3, 3, 2]  # |i - j| <= 1
    assert torch.equal(window, (torch.arange(n)[:, None] - torch.arange(n)).abs() <= 1)
    padding = mask_pattern("padding", n, padding=2)
    assert padding.tolist() == [[True, True, True, False, False]] * n
    assert mask_pattern("padding", n, padding=9).sum(-1).tolist() == [1] * n  # one token stays
    with pytest.raises(ValueError):
        mask_pattern("diagonal", n)


def test_softmax_stats_closed_forms() -> None:
    n = 8
    uniform = torch.full((n,), 1.0 / n)
    top, entropy = softmax_stats(uniform)
    assert top == pytest.approx(1 / n) and entropy == pytest.approx(math.log(n))
    one_hot = torch.zeros(n)
    one_hot[3] = 1.0
    assert softmax_stats(one_hot)[1] == 0.0
    # scores (s, 0, ..., 0): largest weight e^s / (e^s + n - 1)
    s = 2.5
    weights = torch.softmax(torch.tensor([s] + [0.0] * (n - 1)), -1)
    assert softmax_stats(weights)[0] == pytest.approx(math.exp(s) / (math.exp(s) + n - 1))


def test_scaling_keeps_the_softmax_soft_as_d_k_grows() -> None:
    d_values = [1, 4, 16, 64, 256]
    curves = scaling_curves(d_values, n_keys=16, n_queries=64, seed=0)
    # q.k has standard deviation sqrt(d_k); scaled scores stay near 1
    # (16 keys are a small sample: d_k = 1 is left out of the check)
    for d, std in list(zip(d_values, curves.score_std[UNSCALED], strict=True))[1:]:
        assert std == pytest.approx(math.sqrt(d), rel=0.25)
    assert all(0.75 < std < 1.25 for std in curves.score_std[SCALED][1:])
    # without scaling the softmax saturates: max weight -> 1, entropy -> 0
    assert curves.max_weight[UNSCALED][-1] > 0.85 and curves.entropy[UNSCALED][-1] < 0.3
    spread = max(curves.entropy[SCALED]) - min(curves.entropy[SCALED])
    assert spread < 0.4 and min(curves.entropy[SCALED]) > 1.5  # ln 16 = 2.77
    assert curves.max_weight[UNSCALED] == sorted(curves.max_weight[UNSCALED])


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_split_heads_equals_the_module(n_kv_heads: int) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_heads=4, n_kv_heads=n_kv_heads, d_mlp=32, d_vocab=10,
                      n_ctx=8, n_layers=1)
    attn = build_model(cfg).blocks[0].attn
    x = torch.randn(6, 16)
    split = split_heads(attn, x)
    assert split.q_flat.shape == (6, 16) and split.q.shape == (4, 6, 4)
    assert split.k.shape == (n_kv_heads, 6, 4) and split.pattern.shape == (4, 6, 6)
    assert split.concat.shape == (6, 16)
    torch.testing.assert_close(split.concat[:, 4:8], split.z[1])  # head 1's columns
    with torch.no_grad():
        expected = attn(x[None], is_causal=True)[0]
    torch.testing.assert_close(split.out, expected, atol=1e-5, rtol=1e-5)
