"""Information flow routes (explorer.analysis.flow, explorer.runs.flow): the proximity
measure in closed form, the attention terms of a run adding up to the block's real output
(tiny Llama with GQA, tiny GPT-2 with its biases), shares that sum to 1, and the graph
followed back from a token on hand-made importances."""

from __future__ import annotations

import pytest
import torch
from test_interventions import FAMILIES, ids, make, tokens

from explorer.analysis.flow import (
    Edge,
    FlowImportances,
    attention_importances,
    flow_graph,
    mlp_importances,
    proximity,
)
from explorer.interventions import Ablation, ablation_edits
from explorer.runs import run_prompt
from explorer.runs.flow import (
    FLOW_MAX_TOKENS,
    edge_heads,
    flow_unavailable,
    information_flow,
    values_out,
)


def test_proximity_in_closed_form() -> None:
    y = torch.tensor([1.0, 1.0])
    # |y|_1 = 2; a term equal to y is 2 - 0, a zero term 2 - 2 = 0
    assert proximity(y, torch.tensor([[1.0, 1.0], [0.0, 0.0]])).tolist() == [1.0, 0.0]
    assert proximity(y, torch.tensor([[1.0, 0.0], [0.0, 1.0]])).tolist() == [0.5, 0.5]
    # a term pointing away is clamped to 0; [0.5, 0.5] scores 2 - 1 = 1, [3, 3] 2 - 4 < 0
    assert proximity(y, torch.tensor([[0.5, 0.5], [3.0, 3.0], [-5.0, -5.0]])).tolist() == [
        1.0, 0.0, 0.0]
    assert proximity(y, torch.tensor([[-1.0, -1.0]])).tolist() == [0.0]  # none close: 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_terms_add_up_to_the_attention_output(family) -> None:
    """sum over sources and heads of A_h[i, j] v_h(x_j) W_O,h is the attention output
    without its bias: the flow weighs the block's real sum."""
    model = make(**FAMILIES[family])
    x = ids(9, seed=3)
    run = run_prompt(model, "decoder", 4, tokens(x))
    _, cache = model.run_with_cache(x, names=["blocks.*.attn.out"])
    for layer in range(3):
        terms = torch.einsum("hij,hjd->id", run.layer("self", layer), values_out(run, layer))
        bias = model.blocks[layer].attn.o.bias
        expected = cache[f"blocks.{layer}.attn.out"][0] - (0 if bias is None else bias)
        torch.testing.assert_close(terms, expected.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_shares_sum_to_one_and_respect_causality(family) -> None:
    model = make(**FAMILIES[family])
    run = run_prompt(model, "decoder", 4, tokens(ids(8, seed=5)))
    flow = information_flow(run)
    assert flow.attn.shape == (3, 8, 8) and flow.mlp.shape == (3, 8)
    assert (flow.attn.triu(1) == 0).all()  # a decoder's token reads no later token
    attention_total = flow.attn.sum(-1) + flow.attn_resid  # the bias takes the rest
    assert (attention_total <= 1 + 1e-5).all() and (attention_total > 0.5).all()
    if family == "llama":  # no biases: sources and residual are every term
        torch.testing.assert_close(attention_total, torch.ones(3, 8))
    torch.testing.assert_close(flow.mlp + flow.mlp_resid, torch.ones(3, 8))
    assert information_flow(run) is flow  # memoised in the run
    heads = edge_heads(run, 1, 7, 3)
    assert heads.shape == (4,) and float(heads.sum()) == pytest.approx(1.0, abs=1e-5)


def test_block_importances_by_hand() -> None:
    """Two tokens, one head: token 1 reads token 0 only."""
    pattern = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # [H=1, 2, 2]
    out = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])  # v(x_j) W_O for j = 0, 1
    pre = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    mid = pre + torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    sources, residual = attention_importances(pattern, out, pre, mid)
    # y = [2, 1]: |y| = 3; source 0 = [2, 0] -> 3 - 1 = 2; residual [0, 1] -> 3 - 2 = 1
    torch.testing.assert_close(sources, torch.tensor([[2 / 3, 0.0], [2 / 3, 0.0]]))
    torch.testing.assert_close(residual, torch.tensor([1 / 3, 1 / 3]))
    mlp, mlp_resid = mlp_importances(mid, mid + torch.tensor([[0.0, 0.0], [2.0, 1.0]]))
    torch.testing.assert_close(mlp, torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(mlp_resid, torch.tensor([1.0, 0.5]))


def test_the_graph_follows_kept_edges_back() -> None:
    # 2 layers, 3 positions; explain position 2
    attn = torch.zeros(2, 3, 3)
    attn[1, 2, 1] = 0.6  # layer 1: token 2 reads token 1
    attn[0, 1, 0] = 0.5  # layer 0: token 1 reads token 0 (reached through layer 1)
    attn[0, 2, 2] = 0.9  # layer 0: token 2 reads itself, but its residual is cut at layer 1
    flow = FlowImportances(
        attn=attn, attn_resid=torch.tensor([[0.5, 0.5, 0.1], [0.0, 0.0, 0.02]]),
        mlp=torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3]]),
        mlp_resid=torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.7]]))
    edges = flow_graph(flow, 2, threshold=0.04)
    assert edges == [
        Edge("mlp", 1, 2, 2, pytest.approx(0.3)), Edge("mlp_resid", 1, 2, 2, pytest.approx(0.7)),
        Edge("attn", 1, 1, 2, pytest.approx(0.6)),
        Edge("mlp_resid", 0, 1, 1, 1.0),
        Edge("resid", 0, 1, 1, 0.5), Edge("attn", 0, 0, 1, 0.5)]
    assert flow_graph(flow, 2, threshold=0.95) == []
    everything = flow_graph(flow, 2, threshold=0.0)  # every edge above 0 that is reached
    assert Edge("attn", 0, 2, 2, pytest.approx(0.9)) in everything
    assert all(e.importance > 0 for e in everything)


def test_runs_without_a_graph_say_why() -> None:
    bert = make(kind="encoder", positional="learned", norm="layernorm", mlp="gelu",
                norm_position="post")
    assert "post-norm" in flow_unavailable(run_prompt(bert, "encoder", 4, tokens(ids(5))))
    model = make(**FAMILIES["llama"])
    edited = run_prompt(model, "decoder", 4, tokens(ids(5)),
                        edits=ablation_edits(model, Ablation(heads=((0, 1),))))
    assert "edited" in flow_unavailable(edited)
    wide = make(**FAMILIES["llama"], **{"n_ctx": FLOW_MAX_TOKENS + 1})
    long = run_prompt(wide, "decoder", 4, tokens(ids(FLOW_MAX_TOKENS + 1)))
    assert f"up to {FLOW_MAX_TOKENS}" in flow_unavailable(long)
    with pytest.raises(ValueError, match="no flow graph"):
        information_flow(long)
