"""Packed projections: q/k/v and gate/up as views of one block, with unchanged outputs."""

from __future__ import annotations

import copy

import pytest
import torch

from explorer.config import ModelConfig
from explorer.nn import build_model
from explorer.nn.packing import pack, pack_model, packed, projection_groups


def tiny(**overrides) -> torch.nn.Module:
    cfg = ModelConfig(d_model=16, n_heads=4, n_kv_heads=2, d_mlp=24, d_vocab=50, n_ctx=32,
                      n_layers=2, **overrides)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_build_model_packs_qkv_and_gate_up_rows() -> None:
    model = tiny(mlp="swiglu")
    attn, mlp = model.blocks[1].attn, model.blocks[1].mlp
    weight, bias = packed(attn.q, attn.k, attn.v)
    assert bias is None
    assert weight.shape == (16 + 2 * 8, 16)
    assert torch.equal(weight, torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]))
    assert weight.data_ptr() == attn.q.weight.data_ptr()
    gate_up, _ = packed(mlp.gate, mlp.up)
    assert torch.equal(gate_up, torch.cat([mlp.gate.weight, mlp.up.weight]))
    assert len(projection_groups(model)) == 4  # 2 layers x (qkv, gate/up)


def test_packing_keeps_names_values_and_outputs() -> None:
    model = tiny(qkv_bias=True, positional="learned", norm="layernorm", mlp="gelu")
    unpacked = copy.deepcopy(model).to(torch.float64)  # own storage per parameter
    assert packed(unpacked.blocks[0].attn.q, unpacked.blocks[0].attn.k,
                  unpacked.blocks[0].attn.v) is None
    before = dict(unpacked.state_dict())
    pack_model(unpacked)
    _, bias = packed(unpacked.blocks[0].attn.q, unpacked.blocks[0].attn.k,
                     unpacked.blocks[0].attn.v)
    assert bias is not None and bias.shape == (32,)
    after = unpacked.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.allclose(unpacked(ids), model.to(torch.float64)(ids), atol=1e-12)


def test_packed_parameters_still_train() -> None:
    model = tiny()
    model.train().requires_grad_(True)
    loss = model(torch.tensor([[1, 2, 3]])).logsumexp(-1).sum()
    loss.backward()
    q, k = model.blocks[0].attn.q.weight, model.blocks[0].attn.k.weight
    assert q.grad is not None and k.grad is not None and q.grad.shape == q.shape


def test_mixed_biases_and_meta_weights_are_left_unpacked() -> None:
    first, second = torch.nn.Linear(4, 3), torch.nn.Linear(4, 2, bias=False)
    pack(first, second)  # weights packed, biases cannot be
    assert packed(first, second) is None
    meta = [torch.nn.Linear(4, 3, device="meta") for _ in range(2)]
    pack(*meta)
    assert packed(*meta) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pack_is_idempotent(dtype: torch.dtype) -> None:
    model = tiny().to(dtype)
    pack_model(model)
    ptr = model.blocks[0].attn.q.weight.data_ptr()
    pack_model(model)
    assert model.blocks[0].attn.q.weight.data_ptr() == ptr
