"""explorer.interventions on tiny seeded models: ablation edits (zero and mean, by hand),
outcomes, batched activation patching equal to one-at-a-time patching with the right end
points, and per-head direct logit attribution that adds up to the logit difference."""

from __future__ import annotations

import pytest
import torch

from explorer.config import ModelConfig
from explorer.interventions import (
    Ablation,
    ablation_edits,
    head_attribution,
    logit_diff_metric,
    outcome,
    patch_grid,
    patched_outcome,
)
from explorer.nn import build_model
from explorer.runs import Tokens, run_prompt

torch.set_num_threads(1)
TINY = dict(d_model=16, n_heads=4, d_mlp=24, d_vocab=37, n_ctx=64, n_layers=3)
FAMILIES = {
    "llama": dict(positional="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2),
    "gpt2": dict(positional="learned", norm="layernorm", mlp="gelu", qkv_bias=True,
                 out_bias=True, mlp_bias=True),
}
T5 = dict(kind="encoder-decoder", positional="relative", norm="rmsnorm", attn_scale=False,
          mlp="geglu", tied_embeddings=True, n_decoder_layers=2, relative_buckets=8,
          relative_max_distance=12)


def make(**changes):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TINY, **changes})).eval()


def ids(n=8, seed=1):
    return torch.randint(0, 37, (1, n), generator=torch.Generator().manual_seed(seed))


def tokens(t):
    return Tokens(t[0], [str(int(i)) for i in t[0]], torch.zeros(t.shape[1], dtype=torch.bool))


def test_zero_and_mean_ablation_edits() -> None:
    model = make(**FAMILIES["llama"])
    x, ref = ids(), ids(12, seed=5)
    ablation = Ablation(heads=((1, 2), (1, 0)), mlps=(2,), mode="mean")
    assert ablation.names() == ["blocks.1.attn.z", "blocks.2.mlp.out"]
    edits = ablation_edits(model, ablation, ref)
    _, cache = model.run_with_cache(x, names=["blocks.1.attn.z", "blocks.2.mlp.out"],
                                    edits=edits)
    _, reference = model.run_with_cache(ref, names=["blocks.1.attn.z", "blocks.2.mlp.out"])
    for head in (0, 2):
        expected = reference["blocks.1.attn.z"][0, head].mean(0)  # [d] over positions
        torch.testing.assert_close(cache["blocks.1.attn.z"][0, head],
                                   expected.expand(8, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(cache["blocks.2.mlp.out"][0],
                               reference["blocks.2.mlp.out"][0].mean(0).expand(8, -1))
    zero = ablation_edits(model, Ablation(layers=(0,)))
    _, cache = model.run_with_cache(x, names=["blocks.0.attn.out", "blocks.0.mlp.out"],
                                    edits=zero)
    assert cache["blocks.0.attn.out"].abs().max() == 0 == cache["blocks.0.mlp.out"].abs().max()
    with pytest.raises(ValueError, match="reference"):
        ablation_edits(model, Ablation(heads=((0, 0),), mode="mean"))
    with pytest.raises(ValueError, match="mode"):
        Ablation(mode="resample")


def test_outcome_reports_the_distribution_and_the_loss() -> None:
    model = make(**FAMILIES["llama"])
    x = ids()
    result = outcome(model, x, k=5)
    logits = model(x).detach()[0]
    probs = torch.softmax(logits[-1], -1)
    torch.testing.assert_close(result.top_probs, probs.topk(5).values)
    expected_loss = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:])
    assert result.loss == pytest.approx(float(expected_loss), rel=1e-5)
    ablated = outcome(model, x, ablation_edits(model, Ablation(layers=(0, 1, 2))), k=5)
    assert ablated.loss != pytest.approx(result.loss)


@pytest.mark.parametrize("site", ["resid", "attn", "mlp", "head"])
@pytest.mark.parametrize("family, n", [("llama", 6), ("llama", 13), ("gpt2", 12),
                                       ("window", 11)])
def test_batched_patching_equals_one_patch_at_a_time(site, family, n) -> None:
    """Layers fill batches whole or split over several (13 positions > 5 a batch), across
    families, a sliding window included."""
    config = {**FAMILIES["llama"], "window": 3} if family == "window" else FAMILIES[family]
    model = make(**config)
    clean, corrupt = ids(n, seed=2), ids(n, seed=3)
    answer, distractor = 4, 9
    metric = logit_diff_metric(answer, distractor)
    seen = []
    grid = patch_grid(model, clean, corrupt, site, metric, batch_size=5,
                      progress=lambda done, total: seen.append((done, total)))
    n_cols = 4 if site == "head" else n
    assert grid.values.shape == (3, n_cols) and seen[-1] == (3 * n_cols, 3 * n_cols)
    for layer, col in [(0, 0), (1, 3), (2, n_cols - 1), (1, n_cols - 2), (2, n_cols // 2)]:
        single = patched_outcome(model, clean, corrupt, site, layer, col, k=37)
        value = float(single.logprobs_last[answer] - single.logprobs_last[distractor])
        assert float(grid.values[layer, col]) == pytest.approx(value, abs=1e-4)
    with torch.no_grad():
        clean_logits, corrupt_logits = model(clean)[0, -1], model(corrupt)[0, -1]
    assert grid.clean == pytest.approx(float(clean_logits[answer] - clean_logits[distractor]),
                                       abs=1e-5)
    assert grid.corrupt == pytest.approx(
        float(corrupt_logits[answer] - corrupt_logits[distractor]), abs=1e-5)


def test_patching_end_points() -> None:
    """Prompts differing in one token: patching the residual at that position entering the
    first block restores the clean run exactly (1); patching an identical position, or all
    heads' outputs nowhere different, does nothing (0); patching every position at a layer
    reproduces the clean logits."""
    model = make(**FAMILIES["gpt2"])
    clean = ids(7, seed=4)
    corrupt = clean.clone()
    corrupt[0, 3] = (clean[0, 3] + 1) % 37
    grid = patch_grid(model, clean, corrupt, "resid", logit_diff_metric(1, 2))
    assert float(grid.normalised[0, 3]) == pytest.approx(1.0, abs=1e-4)
    assert float(grid.normalised[0, 0]) == pytest.approx(0.0, abs=1e-4)
    assert torch.allclose(grid.normalised[:, :3], torch.zeros(3, 3), atol=1e-4)  # causal
    _, clean_cache = model.run_with_cache(clean, names=["blocks.2.resid_pre"])
    patched = model(corrupt, edits={"blocks.2.resid_pre": lambda t: clean_cache[
        "blocks.2.resid_pre"].expand_as(t)})
    torch.testing.assert_close(patched, model(clean), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="same number of tokens"):
        patch_grid(model, clean, ids(5), "resid", logit_diff_metric(1, 2))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_head_attribution_adds_up(family) -> None:
    model = make(**FAMILIES[family])
    x = ids(9, seed=6)
    run = run_prompt(model, "decoder", 4, tokens(x))
    logits = model(x).detach()[0]
    for position in (0, 4, 8):
        target, distractor = int(logits[position].argmax()), int(logits[position].argmin())
        result = head_attribution(run, position, target, distractor)
        assert result.heads.shape == (3, 4) and result.mlps.shape == (3,)
        diff = float(logits[position, target] - logits[position, distractor])
        assert result.logit_diff == pytest.approx(diff, abs=1e-4)
        assert result.total == pytest.approx(diff, abs=1e-3)
        total = float(result.heads.sum() + result.mlps.sum()) + result.embed + result.biases
        assert total == pytest.approx(diff, abs=1e-3)


def test_head_attribution_on_an_encoder_decoder_has_cross_heads() -> None:
    model = make(**T5)
    source, target = ids(7, seed=8), ids(5, seed=9)
    run = run_prompt(model, "encoder-decoder", 4, tokens(source), tokens(target))
    logits = model(source, target).detach()[0]
    result = head_attribution(run, 4, 3, 5)
    assert result.cross is not None and result.cross.shape == (2, 4)
    assert result.total == pytest.approx(float(logits[4, 3] - logits[4, 5]), abs=1e-3)
