"""explorer.runs' attention views on tiny seeded models of every kind.

What a view reads must equal what the model computes: every layer's pattern equals the one
captured by ``run_with_cache`` (recomputed from the kept ``resid_pre``), head scores equal the
scores of the captured patterns, rollout equals `attention_rollout` of the stacked patterns (and
is row-stochastic when pooled), encoder-decoder runs expose encoder, decoder and cross stacks,
and the induction test finds a hand-built induction head.
"""

from __future__ import annotations

import math

import pytest
import torch

from explorer import runs as ar
from explorer.analysis.attention import (
    attention_rollout,
    head_scores,
    induction_score,
    repeated_random_tokens,
)
from explorer.config import ModelConfig
from explorer.nn import build_model
from explorer.runs import prompt_run

torch.set_num_threads(1)

TINY = dict(d_model=16, n_heads=4, d_mlp=24, d_vocab=37, n_ctx=64, n_layers=3)
KINDS = {
    "decoder": dict(positional="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2),
    "encoder": dict(kind="encoder", positional="learned", norm_position="post",
                    qkv_bias=True, out_bias=True, mlp_bias=True),
}
ENC_DEC = dict(kind="encoder-decoder", positional="relative", norm="rmsnorm", attn_scale=False,
               mlp="geglu", tied_embeddings=True, n_decoder_layers=2, relative_buckets=8,
               relative_max_distance=12)


def make(**changes):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TINY, **changes})).eval()


def tokens(n=12, seed=1, repeat=False):
    ids = torch.randint(0, 37, (n // 2 if repeat else n,),
                        generator=torch.Generator().manual_seed(seed))
    if repeat:
        ids = torch.cat([ids, ids])
    special = torch.zeros(len(ids), dtype=torch.bool)
    special[0] = True
    return ar.Tokens(ids, [f"t{int(i)}" for i in ids], special)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_layers_and_scores_match_the_captured_patterns(kind):
    model = make(**KINDS[kind])
    source = tokens(repeat=True)
    run = ar.run_prompt(model, model.cfg.kind, 4, source)
    _, cache = model.run_with_cache(source.ids[None], names=["blocks.*.attn.pattern"])
    captured = cache.stack("attn.pattern")[:, 0]  # [L, H, N, N]
    stack = run.stacks["self"]
    assert stack.n_layers == 3 and stack.n_heads == 4
    for layer in range(3):
        torch.testing.assert_close(run.layer("self", layer), captured[layer], atol=1e-5, rtol=0)
    scores = run.scores("self")
    for name in ("entropy", "previous_token", "first_token", "induction", "mean_distance"):
        expected = head_scores(captured, name, source.ids)
        torch.testing.assert_close(scores[name], expected, atol=1e-5, rtol=1e-5)
    assert scores["entropy"].shape == (3, 4)
    assert run.scores("self") is scores  # computed once


def test_derived_layers_are_lru_cached_within_the_byte_budget():
    model = make(**KINDS["decoder"])
    one_layer = 4 * 12 * 12 * 4
    run = ar.run_prompt(model, "decoder", 4, tokens(), derived_bytes=2 * one_layer)
    first = run.layer("self", 0)
    assert run.layer("self", 0) is first  # cached
    run.layer("self", 1)
    run.layer("self", 2)
    assert run.memo.keys() == [("pattern", "self", 1), ("pattern", "self", 2)]  # 0 dropped
    assert run.memo.nbytes() <= 2 * one_layer
    with pytest.raises(IndexError):
        run.layer("self", 3)


def test_rollout_is_exact_for_short_prompts():
    model = make(**KINDS["decoder"])
    run = ar.run_prompt(model, "decoder", 4, tokens())
    stacked = torch.stack([run.layer("self", layer) for layer in range(3)])
    rollout = run.rollout("self")
    assert rollout.exact and rollout.starts == list(range(12))
    torch.testing.assert_close(rollout.values, attention_rollout(stacked), atol=1e-6, rtol=0)
    assert run.rollout("self") is rollout  # computed once


def test_long_rollout_is_pooled_and_row_stochastic(monkeypatch):
    monkeypatch.setattr(prompt_run, "ROLLOUT_CELLS", 4)
    model = make(**KINDS["decoder"])
    run = ar.run_prompt(model, "decoder", 4, tokens(n=12))
    rollout = run.rollout("self")
    assert not rollout.exact
    assert rollout.values.shape == (3, 4, 4) and rollout.starts == [0, 3, 6, 9]
    torch.testing.assert_close(rollout.values.sum(-1), torch.ones(3, 4), atol=1e-5, rtol=0)
    # causal: the first block of queries draws nothing from later blocks
    assert float(rollout.values[:, 0, 1:].abs().max()) < 1e-6


def test_encoder_decoder_has_self_and_cross_stacks():
    model = make(**ENC_DEC)
    source, target = tokens(n=10), tokens(n=6, seed=3)
    run = ar.run_prompt(model, "encoder-decoder", 4, source, target)
    assert list(run.stacks) == ["encoder", "decoder", "cross"]
    _, cache = model.run_with_cache(source.ids[None], target.ids[None], names=None)
    assert run.layer("encoder", 2).shape == (4, 10, 10)
    assert run.layer("decoder", 1).shape == (4, 6, 6)
    assert run.layer("cross", 1).shape == (4, 6, 10)
    torch.testing.assert_close(run.layer("encoder", 2),
                               cache["encoder.blocks.2.attn.pattern"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(run.layer("decoder", 1),
                               cache["decoder.blocks.1.attn.pattern"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(run.layer("cross", 1),
                               cache["decoder.blocks.1.cross_attn.pattern"][0], atol=1e-6, rtol=0)
    cross = run.stacks["cross"]
    assert cross.spec.cross and len(cross.queries) == 6 and len(cross.keys) == 10
    assert torch.isnan(run.scores("cross")["previous_token"]).all()  # undefined on 6 x 10
    assert torch.isfinite(run.scores("cross")["entropy"]).all()
    with pytest.raises(ValueError, match="self-attention"):
        run.rollout("cross")
    with pytest.raises(ValueError, match="target"):
        ar.run_prompt(model, "encoder-decoder", 4, source)


def test_induction_test_finds_a_planted_induction_head():
    """Layer 1 head 2 is rewired (weights zeroed, one attention forced) to be a perfect
    induction head by patching layer_pattern; the ranking must put it first."""
    model = make(**KINDS["decoder"])
    original = model.layer_pattern

    def planted(layer, resid_pre, attention_mask=None):
        pattern = original(layer, resid_pre, attention_mask).clone()
        if layer == 1:
            n = pattern.shape[-1]
            half = (n - 1) // 2
            ideal = torch.zeros(n, n)
            for i in range(n):
                ideal[i, i - half + 1 if i >= 1 + half else 0] = 1.0
            pattern[0, 2] = ideal
        return pattern

    model.layer_pattern = planted
    result = ar.induction_test(model, "decoder", vocab_size=37, bos_id=0, half_len=8, seed=0)
    assert result.scores.shape == (3, 4) and result.prefix_len == 1
    assert result.ranking[0][:2] == (1, 2)
    assert math.isclose(result.ranking[0][2], 1.0)
    scores = [score for _, _, score in result.ranking]
    assert scores == sorted(scores, reverse=True)


def test_induction_test_scores_match_the_formula():
    model = make(**KINDS["decoder"])
    result = ar.induction_test(model, "decoder", vocab_size=37, bos_id=None, half_len=6, seed=2)
    ids = repeated_random_tokens(37, 6, 2)
    _, cache = model.run_with_cache(ids, names=["blocks.*.attn.pattern"])
    expected = induction_score(cache.stack("attn.pattern")[:, 0], 6, 0)
    torch.testing.assert_close(result.scores, expected, atol=1e-5, rtol=0)
