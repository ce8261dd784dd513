"""explorer.nn.position_probe on tiny seeded models: the real forward reproduced, a layer's q/k
giving its pattern exactly, permutation equivariance without positions and the shift check."""

from __future__ import annotations

import pytest
import torch

from explorer.analysis.positional import (
    pair_contributions,
    pattern_changes,
    permutation_errors,
    rope_frequencies,
    score_by_offset,
)
from explorer.config import ModelConfig
from explorer.nn import build_model
from explorer.nn.position_probe import layer_qk, probe_forward, self_attention_stack

torch.set_num_threads(1)

BASE = {"d_model": 32, "n_heads": 4, "d_mlp": 48, "d_vocab": 50, "n_ctx": 40, "n_layers": 2}
CONFIGS = {
    "rope-gqa": {"positional": "rope", "n_kv_heads": 2, "norm": "rmsnorm", "mlp": "swiglu",
                 "rope_base": 500.0},
    "learned-bert": {"positional": "learned", "kind": "encoder", "norm_position": "post",
                     "n_token_types": 2, "embed_norm": True},
    "alibi": {"positional": "alibi"},
    "t5": {"positional": "relative", "kind": "encoder-decoder", "norm": "rmsnorm",
           "attn_scale": False, "relative_buckets": 8, "relative_max_distance": 12},
    "sinusoidal-window": {"positional": "sinusoidal", "window": 3},
}
OFFSET_ONLY = {"rope-gqa", "alibi", "t5"}


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**BASE, **CONFIGS[name])).eval()
    with torch.no_grad():  # non-trivial norms and relative biases (fresh ones are 1 / 0)
        for pname, p in model.named_parameters():
            if "rel_bias" in pname or "ln" in pname or "norm" in pname:
                p.add_(0.3 * torch.randn_like(p))
    return model


def reference_cache(model, ids):
    if model.cfg.kind == "encoder-decoder":
        return model.run_with_cache(ids, ids[:, :3])[1], "encoder."
    return model.run_with_cache(ids)[1], ""


IDS = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_probe_with_positions_on_is_the_real_forward(name) -> None:
    model = tiny(name)
    cache, prefix = reference_cache(model, IDS)
    probe = probe_forward(model, IDS, names=("blocks.*.resid_post", "blocks.*.resid_pre"))
    for layer in range(2):
        for what in ("resid_pre", "resid_post"):
            torch.testing.assert_close(probe[f"blocks.{layer}.{what}"],
                                       cache[f"{prefix}blocks.{layer}.{what}"])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_layer_qk_gives_the_layer_pattern(name) -> None:
    model = tiny(name)
    stack = self_attention_stack(model)
    cache, prefix = reference_cache(model, IDS)
    for layer in range(2):
        resid_pre = cache[f"{prefix}blocks.{layer}.resid_pre"]
        qk = layer_qk(stack, layer, resid_pre)
        assert qk.q.shape == qk.k.shape == (4, 12, 8)
        scores = qk.scale * pair_contributions(qk.q, qk.k).sum(-1)  # per-pair split, summed
        scores = scores if qk.bias is None else scores + qk.bias
        torch.testing.assert_close(torch.softmax(scores, -1),
                                   stack.layer_pattern(layer, resid_pre)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(qk.pattern(), stack.layer_pattern(layer, resid_pre)[0],
                                   atol=1e-5, rtol=0)


def test_rope_scores_depend_only_on_the_offset_of_the_real_vectors() -> None:
    model = tiny("rope-gqa")
    cache, _ = reference_cache(model, IDS)
    qk = layer_qk(model, 1, cache["blocks.1.resid_pre"])
    freqs = rope_frequencies(8, 500.0).inv_freq
    real = qk.q @ qk.k.transpose(-1, -2)  # [H, N, N], rotated
    for head, m, n in [(0, 5, 2), (3, 11, 0), (1, 7, 7), (2, 3, 9)]:
        swept = score_by_offset(qk.q_raw[head, m], qk.k_raw[head, n], freqs,
                                torch.tensor([m - n])).sum()
        assert real[head, m, n].item() == pytest.approx(swept.item(), abs=1e-5)
    assert not torch.equal(qk.q, qk.q_raw)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_attention_without_positions_is_permutation_equivariant(name) -> None:
    model = tiny(name)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    batch = torch.cat([IDS, IDS[:, perm]] * 2)  # [4, n]: every row is an independent prompt
    where = torch.arange(12)
    positions = torch.stack([where, where, 0 * where, 0 * where])
    out = probe_forward(model, batch, positions=positions, causal=False).stack("resid_post")
    on = permutation_errors(out[:, 0], out[:, 1], perm)
    off = permutation_errors(out[:, 2], out[:, 3], perm)  # every token at one position
    assert off.max() < 1e-5, off
    assert on.max() > 1e-3, on
    alone = probe_forward(model, IDS[:, perm], causal=False).stack("resid_post")[:, 0]
    torch.testing.assert_close(out[:, 1], alone)  # batching changes nothing


def test_a_causal_mask_alone_breaks_equivariance() -> None:
    model = tiny("alibi")
    perm = torch.arange(11, -1, -1)
    out = probe_forward(model, torch.cat([IDS, IDS[:, perm]]), positions=torch.zeros(12),
                        causal=True).stack("resid_post")
    assert permutation_errors(out[:, 0], out[:, 1], perm).max() > 1e-3


@pytest.mark.parametrize("name", list(CONFIGS))
def test_shifting_positions_changes_only_absolute_schemes(name) -> None:
    model = tiny(name)
    where = torch.arange(12)
    patterns = probe_forward(model, torch.cat([IDS, IDS]),
                             positions=torch.stack([where, where + 20])).stack("attn.pattern")
    change = pattern_changes(patterns[:, 0], patterns[:, 1])
    if name in OFFSET_ONLY:
        assert change.max() < 1e-5, change
    else:
        assert change.max() > 1e-3, change


def test_positions_past_the_table_are_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        probe_forward(tiny("learned-bert"), IDS, positions=torch.arange(30, 42))
