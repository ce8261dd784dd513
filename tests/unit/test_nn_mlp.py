"""explorer.nn.mlp: plain and gated MLPs by formula, the sparse MoE against a hand computation."""

import pytest
import torch
import torch.nn.functional as F

from explorer.config import ModelConfig
from explorer.nn.capture import Capture
from explorer.nn.mlp import MLP, GatedMLP, SparseMoE, build_mlp

torch.set_num_threads(1)


def config(**changes):
    base = dict(d_model=6, n_heads=2, d_mlp=10, d_vocab=4, n_ctx=4, n_layers=1)
    return ModelConfig(**{**base, **changes})


@pytest.mark.parametrize(
    ("mlp", "activation"),
    [("gelu", F.gelu), ("relu", F.relu), ("swiglu", F.silu),
     ("geglu", lambda x: F.gelu(x, approximate="tanh"))],
)
def test_mlp_formulas(mlp, activation):
    torch.manual_seed(0)
    module = build_mlp(config(mlp=mlp, mlp_bias=True)).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    capture = Capture()
    out = module(x, capture=capture, prefix="mlp.")
    if mlp in ("swiglu", "geglu"):
        assert isinstance(module, GatedMLP)
        hidden = activation(module.gate(x)) * module.up(x)
    else:
        assert isinstance(module, MLP)
        hidden = activation(module.up(x))
    torch.testing.assert_close(capture.cache["mlp.post"], hidden)
    torch.testing.assert_close(out, module.down(hidden))
    assert out.shape == x.shape and capture.cache["mlp.post"].shape == (2, 3, 10)


def test_activation_override():
    module = build_mlp(config(mlp="gelu", activation="gelu_tanh"))
    x = torch.linspace(-3, 3, 6)
    torch.testing.assert_close(module.act(x), F.gelu(x, approximate="tanh"))


def moe_by_hand(moe: SparseMoE, x: torch.Tensor, k: int) -> torch.Tensor:
    """Per token: softmax router, top-k, renormalise, weighted sum of those experts."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for n in range(x.shape[1]):
            token = x[b, n]
            probs = torch.softmax(moe.router(token), dim=-1)
            order = sorted(range(len(probs)), key=lambda e: -probs[e].item())[:k]
            total = sum(probs[e] for e in order)
            for e in order:
                expert = moe.experts[e]
                out[b, n] += probs[e] / total * expert.down(F.gelu(expert.up(token)))
    return out


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_moe_equals_weighted_sum_of_selected_experts(top_k):
    torch.manual_seed(top_k)
    moe = SparseMoE(config(mlp="moe", n_experts=4, experts_top_k=top_k, mlp_bias=True)).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    capture = Capture()
    out = moe(x, capture=capture, prefix="mlp.")
    torch.testing.assert_close(out, moe_by_hand(moe, x, top_k), atol=1e-12, rtol=0)
    experts = capture.cache["mlp.experts"]
    weights = capture.cache["mlp.expert_weights"]
    probs = capture.cache["mlp.router_probs"]
    assert experts.shape == weights.shape == (2, 5, top_k)
    assert probs.shape == (2, 5, 4)
    # each token uses exactly k distinct experts, weighted by renormalised router probabilities
    for token_experts in experts.reshape(-1, top_k).tolist():
        assert len(set(token_experts)) == top_k
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5, dtype=torch.float64))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 5, dtype=torch.float64))
    chosen = probs.gather(-1, experts)
    torch.testing.assert_close(weights, chosen / chosen.sum(-1, keepdim=True))
    assert (chosen.min(-1).values >= probs.topk(top_k, dim=-1).values.min(-1).values).all()


def test_moe_tokens_use_exactly_k_experts_by_call_count():
    torch.manual_seed(5)
    moe = SparseMoE(config(mlp="moe", n_experts=4, experts_top_k=2))
    x = torch.randn(3, 4, 6)
    flat = x.reshape(-1, 6)
    uses = torch.zeros(12)

    def count(module, args):
        # every expert receives the rows of the tokens routed to it; find them in the input
        for row in args[0]:
            uses[(flat == row).all(-1)] += 1

    handles = [expert.register_forward_pre_hook(count) for expert in moe.experts]
    moe(x)
    for handle in handles:
        handle.remove()
    assert uses.tolist() == [2.0] * 12


def test_moe_backward_reaches_router_and_selected_experts():
    torch.manual_seed(6)
    moe = SparseMoE(config(mlp="moe", n_experts=4, experts_top_k=2))
    moe(torch.randn(1, 3, 6)).sum().backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
