"""Mixture-of-experts routing and the Switch balancing loss on hand examples; LoRA parameter
counts equal the adapters' real parameters; a LoRA run trains only the adapters."""

from __future__ import annotations

import pytest
import torch

from explorer.analysis.lab_efficient import (
    TOY,
    add_lora,
    fine_tune,
    lab_moe,
    lora_count,
    one_thread,
    route_tokens,
    switch_aux_loss,
)
from explorer.config import ModelConfig
from explorer.nn import build_model

torch.set_num_threads(1)


def test_switch_aux_loss_on_hand_examples() -> None:
    # 4 tokens, 2 experts, top-1: two tokens each and mean probabilities 1/2 -> loss 1
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9]])
    assert switch_aux_loss(probs, torch.tensor([[0], [0], [1], [1]]), 2) == pytest.approx(1.0)
    # everything to expert 0 with probability 1: E * 1 * 1 = 2, the worst case
    sure = torch.tensor([[1.0, 0.0]] * 4)
    assert switch_aux_loss(sure, torch.zeros(4, 1, dtype=torch.long), 2) == pytest.approx(2.0)
    # f = (3/4, 1/4), P = (0.6, 0.4): 2 * (0.45 + 0.1) = 1.1; alpha scales it
    probs = torch.tensor([[0.6, 0.4]] * 4)
    chosen = torch.tensor([[0], [0], [0], [1]])
    assert switch_aux_loss(probs, chosen, 2, alpha=0.01) == pytest.approx(0.011)


def test_route_tokens_with_a_hand_set_router() -> None:
    moe = lab_moe(d_model=2, n_experts=3, top_k=2)
    with torch.no_grad():
        moe.router.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]]))
    x = torch.tensor([[3.0, 1.0], [-1.0, 2.0], [-1.0, -3.0]])  # logits: x W_routerᵀ
    routing = route_tokens(moe, x)
    assert routing.experts.tolist() == [[0, 1], [1, 2], [2, 0]]
    torch.testing.assert_close(routing.assignment.sum(-1), torch.ones(3))
    e = torch.exp(torch.tensor([3.0, 1.0]))
    assert routing.assignment[0, 0] == pytest.approx(float(e[0] / e.sum()))
    assert routing.assignment[0, 2] == 0
    torch.testing.assert_close(routing.load, torch.tensor([2, 2, 2]) / 6)
    # an even load: f_i = 1/3, so the loss is 3 * sum_i P_i / 3 = 1
    assert routing.aux_loss == pytest.approx(1.0)


@pytest.mark.parametrize("rank", [1, 4])
def test_lora_count_equals_the_adapters_parameters(rank: int) -> None:
    cfg = ModelConfig(d_model=24, n_heads=4, n_kv_heads=2, d_mlp=40, d_vocab=30, n_ctx=16,
                      n_layers=2, mlp="swiglu", positional="rope", qkv_bias=True)
    model = build_model(cfg)
    which = ("q", "k", "v", "o", "gate", "up", "down")
    count = lora_count(model, which, rank)
    # per layer: q 24->24, k and v 24->12, o 24->24, gate/up 24->40, down 40->24
    per_layer = rank * (48 + 36 + 36 + 48 + 64 + 64 + 64)
    assert count.lora == 2 * per_layer
    assert count.per_projection["k"] == (2, 2 * (24 * 12 + 12), 2 * rank * 36)
    adapters = add_lora(model, which, rank, alpha=8.0)
    assert len(adapters) == 14
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == count.lora


def test_lora_run_trains_only_the_adapters_and_lowers_the_loss() -> None:
    run = fine_tune(rank=4, which=("q", "k", "v", "o", "up", "down"), steps=25)
    per_layer = 4 * (64 * 4 + 32 + 64 + 64 + 32)  # q, k, v, o 32->32; up 32->64; down 64->32
    assert run.trainable == TOY.n_layers * per_layer
    assert run.total == sum(p.numel() for p in build_model(TOY).parameters()) + run.trainable
    assert run.losses[-1] < 0.8 * run.losses[0]
    full = fine_tune(rank=None, steps=25)
    assert full.trainable == full.total and full.losses[0] == pytest.approx(run.losses[0])


def test_a_time_budget_stops_training_and_one_thread_restores_the_count() -> None:
    assert len(fine_tune(rank=2, steps=50, budget_s=0.0).losses) == 1
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
