"""Interventions on every family, on tiny seeded models: edited shared runs
(``run_prompt(edits=)``) against direct edited forwards, outcomes read off a run, T5's
encoder, decoder and cross-attention ablations, patching T5's encoder and decoder stacks and
an encoder's masked position (batched = one patch at a time; the end points)."""

from __future__ import annotations

import pytest
import torch
from test_interventions import FAMILIES, T5, ids, make, tokens

from explorer.interventions import (
    Ablation,
    ablation_edits,
    logit_diff_metric,
    outcome,
    outcome_of_run,
    patch_grid,
    patched_outcome,
)
from explorer.runs import Row, lens, run_prompt, token_trajectory

LLAMA = FAMILIES["llama"]
BERT = dict(kind="encoder", positional="learned", norm="layernorm", norm_position="post",
            mlp="gelu", qkv_bias=True, out_bias=True, mlp_bias=True)


def shared(model, x, y=None, edits=None):
    return run_prompt(model, model.cfg.kind, 4, tokens(x), None if y is None else tokens(y),
                      edits=edits)


@pytest.mark.parametrize("family", ["llama", "bert", "t5"])
def test_an_edited_run_is_the_edited_model(family) -> None:
    """The run with edits reads out what a direct edited forward gives: output
    distribution, loss, and the last lens row; the unedited run's outcome is the model's."""
    config, x, y = {"llama": LLAMA, "bert": BERT, "t5": T5}[family], ids(9), None
    model = make(**config)
    prefix = ""
    if family == "t5":
        y, prefix = ids(5, seed=3), "decoder."
    ablation = Ablation(heads=((1, 2),), mlps=(0,), prefix=prefix)
    edits = ablation_edits(model, ablation)
    for position in (-1, 2):
        expected = outcome(model, x, edits, k=5, decoder_ids=y, position=position)
        got = outcome_of_run(shared(model, x, y, edits), position, k=5)
        assert torch.equal(got.top_ids, expected.top_ids)
        torch.testing.assert_close(got.logprobs_last, expected.logprobs_last, atol=1e-4,
                                   rtol=0)
        if expected.loss is None:
            assert got.loss is None
        else:
            assert got.loss == pytest.approx(expected.loss, abs=1e-5)
        plain = outcome_of_run(shared(model, x, y), position, k=5)
        torch.testing.assert_close(plain.logprobs_last, outcome(
            model, x, k=5, decoder_ids=y, position=position).logprobs_last, atol=1e-4, rtol=0)
    edited = shared(model, x, y, edits)
    n_layers = model.cfg.n_decoder_layers if family == "t5" else 3
    last = lens(edited, [Row(n_layers - 1)], [0, 1], 3)
    assert torch.equal(last.top_ids[0, 1], outcome(model, x, edits, k=3, decoder_ids=y,
                                                   position=1).top_ids)


def test_ablating_changes_only_what_comes_after() -> None:
    """An edited decoder run keeps the residual stream before the ablated block, and its
    recomputed patterns apply edits that act inside attention."""
    model = make(**LLAMA)
    x = ids(9)
    base = shared(model, x)
    ablated = shared(model, x, edits=ablation_edits(model, Ablation(heads=((1, 0),))))
    stream, plain = ablated.streams["main"], base.streams["main"]
    torch.testing.assert_close(stream.boundaries[:2], plain.boundaries[:2])
    assert not torch.allclose(stream.boundaries[2], plain.boundaries[2])
    uniform = {"blocks.2.attn.pattern": lambda p: torch.full_like(p, 1.0 / p.shape[-1])}
    assert torch.allclose(shared(model, x, edits=uniform).layer("self", 2),
                          torch.full((4, 9, 9), 1 / 9))


def test_t5_ablations_name_their_stack_and_cross_heads() -> None:
    model = make(**T5)
    x, y = ids(7), ids(5, seed=3)
    cross = Ablation(heads=((1, 3),), prefix="decoder.", cross=True)
    assert cross.names() == ["decoder.blocks.1.cross_attn.z"]
    block = Ablation(layers=(0,), prefix="decoder.")
    assert block.names() == ["decoder.blocks.0.attn.out", "decoder.blocks.0.cross_attn.out",
                             "decoder.blocks.0.mlp.out"]
    assert "encoder L2 MLP" in Ablation(mlps=(2,), prefix="encoder.").describe()
    mean = ablation_edits(model, Ablation(heads=((0, 1),), prefix="encoder.", mode="mean"),
                          (x, y))
    _, cache = model.run_with_cache(x, y, names=["encoder.blocks.0.attn.z"], edits=mean)
    _, plain = model.run_with_cache(x, y, names=["encoder.blocks.0.attn.z"])
    torch.testing.assert_close(cache["encoder.blocks.0.attn.z"][0, 1],
                               plain["encoder.blocks.0.attn.z"][0, 1].mean(0).expand(7, -1))
    _, cache = model.run_with_cache(x, y, names=["decoder.blocks.1.cross_attn.z",
                                                 "decoder.blocks.0.cross_attn.out"],
                                    edits={**ablation_edits(model, cross),
                                           **ablation_edits(model, block)})
    assert cache["decoder.blocks.1.cross_attn.z"][0, 3].abs().max() == 0
    assert cache["decoder.blocks.0.cross_attn.out"].abs().max() == 0
    with pytest.raises(ValueError, match="decoder"):
        Ablation(heads=((0, 0),), cross=True)


@pytest.mark.parametrize("site", ["resid", "attn", "mlp", "head"])
@pytest.mark.parametrize("stack", ["encoder.", "decoder."])
def test_t5_patching_batched_equals_one_at_a_time(site, stack) -> None:
    model = make(**T5)
    clean, corrupt, decoder = ids(6, seed=2), ids(6, seed=3), ids(5, seed=4)
    metric = logit_diff_metric(4, 9)
    grid = patch_grid(model, clean, corrupt, site, metric, batch_size=5, decoder_ids=decoder,
                      stack=stack)
    n_layers = 3 if stack == "encoder." else 2
    n_cols = 4 if site == "head" else (6 if stack == "encoder." else 5)
    assert grid.values.shape == (n_layers, n_cols)
    for layer, col in [(0, 0), (n_layers - 1, n_cols - 1), (1, 2)]:
        single = patched_outcome(model, clean, corrupt, site, layer, col, k=37,
                                 decoder_ids=decoder, stack=stack)
        value = float(single.logprobs_last[4] - single.logprobs_last[9])
        assert float(grid.values[layer, col]) == pytest.approx(value, abs=1e-4)
    with torch.no_grad():
        clean_logits = model(clean, decoder)[0, -1]
    assert grid.clean == pytest.approx(float(clean_logits[4] - clean_logits[9]), abs=1e-5)


def test_t5_patching_end_points() -> None:
    """Prompts that differ in one encoder token: patching the encoder's residual there at its
    first block restores the clean run (1); every other encoder position does nothing
    (bidirectional, so all of them see it only through attention: exactly 0 at block 0).
    The decoder's positions, all reading the corrupted encoder, restore nothing at block 0."""
    model = make(**T5)
    clean, decoder = ids(6, seed=2), ids(5, seed=4)
    corrupt = clean.clone()
    corrupt[0, 2] = (clean[0, 2] + 1) % 37
    metric = logit_diff_metric(1, 2)
    grid = patch_grid(model, clean, corrupt, "resid", metric, decoder_ids=decoder,
                      stack="encoder.")
    assert float(grid.normalised[0, 2]) == pytest.approx(1.0, abs=1e-4)
    assert torch.allclose(grid.normalised[0, [0, 1, 3, 4, 5]], torch.zeros(5), atol=1e-4)
    decoder_grid = patch_grid(model, clean, corrupt, "resid", metric, decoder_ids=decoder,
                              stack="decoder.")
    assert torch.allclose(decoder_grid.normalised[0], torch.zeros(5), atol=1e-4)
    with pytest.raises(ValueError, match="decoder_ids"):
        patch_grid(model, clean, corrupt, "resid", metric, stack="encoder.")
    with pytest.raises(ValueError, match="stack"):
        patch_grid(model, clean, corrupt, "resid", metric, decoder_ids=decoder)


def test_encoder_patching_reads_the_masked_position() -> None:
    """A BERT-style encoder reads its metric at a chosen (masked) position, for the grid and
    for one patched cell alike."""
    model = make(**BERT)
    clean, corrupt = ids(7, seed=5), ids(7, seed=6)
    metric = logit_diff_metric(3, 8)
    grid = patch_grid(model, clean, corrupt, "resid", metric, batch_size=4, position=3)
    with torch.no_grad():
        clean_logits = model(clean)[0, 3]
    assert grid.clean == pytest.approx(float(clean_logits[3] - clean_logits[8]), abs=1e-5)
    single = patched_outcome(model, clean, corrupt, "resid", 1, 5, k=37, position=3)
    value = float(single.logprobs_last[3] - single.logprobs_last[8])
    assert float(grid.values[1, 5]) == pytest.approx(value, abs=1e-4)
    assert single.loss is None


def test_token_trajectory_takes_a_token_per_cell() -> None:
    model = make(**LLAMA)
    run = shared(model, ids(9))
    rows, positions = [Row(-1), Row(0), Row(2)], [3, 8]
    per_cell = torch.tensor([[1, 2], [3, 4], [5, 6]])
    prob, rank = token_trajectory(run, rows, positions, per_cell)
    for r, row in enumerate(rows):
        for c, position in enumerate(positions):
            p, k = token_trajectory(run, [row], [position], [int(per_cell[r, c])])
            assert float(prob[r, c]) == pytest.approx(float(p[0, 0]), abs=1e-6)
            assert int(rank[r, c]) == int(k[0, 0])
    with pytest.raises(ValueError, match="do not match"):
        token_trajectory(run, rows, positions, torch.zeros(2, 2, dtype=torch.long))
