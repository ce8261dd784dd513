"""LoRALinear: the tutorial's LinearWithLoRA with merge/unmerge (Hu et al. 2021)."""

import pytest
import torch
from torch import nn

from explorer.nn.lora import LoRALinear

torch.set_num_threads(1)


def make(d_in=7, d_out=5, rank=3, alpha=6.0, bias=True, seed=0):
    torch.manual_seed(seed)
    return LoRALinear(nn.Linear(d_in, d_out, bias=bias).double(), rank=rank, alpha=alpha)


def test_fresh_adapter_leaves_output_unchanged():
    lora = make()
    assert torch.count_nonzero(lora.lora_B) == 0
    assert torch.count_nonzero(lora.lora_A) > 0
    x = torch.randn(2, 4, 7, dtype=torch.float64)
    torch.testing.assert_close(lora(x), lora.linear(x), atol=0, rtol=0)


@pytest.mark.parametrize(("d_in", "d_out", "rank"), [(7, 5, 3), (16, 4, 1), (3, 9, 8)])
def test_trainable_parameter_count(d_in, d_out, rank):
    lora = make(d_in, d_out, rank)
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert trainable == rank * (d_in + d_out)
    assert not lora.linear.weight.requires_grad and not lora.linear.bias.requires_grad
    assert lora.lora_A.shape == (rank, d_in) and lora.lora_B.shape == (d_out, rank)


def test_output_is_base_plus_scaled_low_rank_update():
    lora = make(alpha=6.0, rank=3)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(4, 7, dtype=torch.float64)
    expected = lora.linear(x) + 2.0 * x @ lora.lora_A.T @ lora.lora_B.T  # alpha / r = 2
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.delta_weight, 2.0 * lora.lora_B @ lora.lora_A)


def test_merge_matches_unmerged_and_unmerge_restores_weight():
    lora = make()
    with torch.no_grad():
        lora.lora_B.normal_()
    original = lora.linear.weight.detach().clone()
    x = torch.randn(3, 7, dtype=torch.float64)
    unmerged = lora(x)
    lora.merge()
    assert lora.merged
    torch.testing.assert_close(lora(x), unmerged)
    torch.testing.assert_close(lora.linear(x), unmerged)  # the update lives in the weight
    lora.merge()  # idempotent
    torch.testing.assert_close(lora(x), unmerged)
    lora.unmerge()
    assert not lora.merged
    torch.testing.assert_close(lora.linear.weight, original)
    torch.testing.assert_close(lora(x), unmerged)
    lora.unmerge()  # idempotent
    torch.testing.assert_close(lora.linear.weight, original)


def test_training_updates_only_the_adapter():
    lora = make(bias=False)
    before = lora.linear.weight.detach().clone()
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.1)
    x, target = torch.randn(8, 7, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        ((lora(x) - target) ** 2).mean().backward()
        opt.step()
    assert torch.equal(lora.linear.weight, before)
    assert torch.count_nonzero(lora.lora_B) > 0


def test_rank_must_be_positive():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(2, 2), rank=0)
