"""Packed suffix runs (explorer.interventions.packed): the layout, an unpatched packed run
equal to the corrupted run for every start and positional scheme, and patching grids on
prompts that share a prefix equal to one patch at a time, with the cells before the first
difference exactly the corrupted run's."""

from __future__ import annotations

import pytest
import torch
from test_interventions import FAMILIES, ids, make

from explorer.interventions import logit_diff_metric, patch_grid, patched_outcome, plan_grid
from explorer.interventions import packed as packing
from explorer.nn.capture import Capture

SCHEMES = {**FAMILIES, "window": {**FAMILIES["llama"], "window": 3},
           "alibi": dict(positional="alibi", norm="layernorm", mlp="gelu")}


def test_layout() -> None:
    packed = packing.PackedRuns.of([2, 0, 4], 5)
    assert packed.rows == 3 + 5 + 1
    assert packed.positions.tolist() == [2, 3, 4, 0, 1, 2, 3, 4, 4]
    assert packed.run.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2]
    assert packed.rows_of(1) == slice(3, 8) and packed.row_at(1, 2) == 5
    assert packed.row_at(2, 4) == 8
    for starts in ([], [5], [-1]):
        with pytest.raises(ValueError, match="starts"):
            packing.PackedRuns.of(starts, 5)
    assert packing.first_difference(ids(6), ids(6)) == 6
    other = ids(6).clone()
    other[0, 4] += 1
    assert packing.first_difference(ids(6), other) == 4


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_an_unpatched_packed_run_is_the_corrupted_run(scheme) -> None:
    """Every run, whatever its start and whichever block it enters, ends with the logits
    the whole prompt has at its last position: the mask, rope, window and ALiBi bias of the
    packed rows are the prompt's own."""
    model = make(**SCHEMES[scheme])
    x = ids(9, seed=7)
    with torch.no_grad():
        expected = model(x)[0, -1]
        _, cache = model.run_with_cache(x, names=["blocks.*.resid_pre", "blocks.*.attn.k",
                                                  "blocks.*.attn.v"])
        keys, values = cache.stack("attn.k"), cache.stack("attn.v")
        for first in range(3):
            packed = packing.PackedRuns.of([0, 8, 3, 5, 1], 9)
            logits = packing.rerun(model, packed, first, cache[f"blocks.{first}.resid_pre"],
                                   keys, values, Capture(()))
            torch.testing.assert_close(logits, expected.expand(5, -1), atol=2e-5, rtol=0)


@pytest.mark.parametrize("site", ["resid", "attn", "mlp", "head"])
@pytest.mark.parametrize("scheme, batch_size", [("llama", 5), ("llama", 1), ("gpt2", 3),
                                                ("window", 5), ("alibi", 32)])
def test_a_shared_prefix_grid_equals_one_patch_at_a_time(site, scheme, batch_size) -> None:
    """The prompts agree on positions 0..3 and differ at 4 and 8. Cells before position 4
    are the corrupted metric exactly; every other cell (batches of whole layers, split
    layers, layers sharing a batch) equals its own patched forward."""
    model = make(**SCHEMES[scheme])
    clean = ids(10, seed=2)
    corrupt = clean.clone()
    corrupt[0, 4] = (clean[0, 4] + 5) % 37
    corrupt[0, 8] = (clean[0, 8] + 7) % 37
    metric = logit_diff_metric(4, 9)
    seen = []
    grid = patch_grid(model, clean, corrupt, site, metric, batch_size=batch_size,
                      progress=lambda done, total: seen.append((done, total)))
    n_cols = 4 if site == "head" else 10
    assert seen[-1] == (3 * n_cols, 3 * n_cols)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    if site != "head":
        assert (grid.values[:, :4] == grid.corrupt).all()
    for layer in range(3):
        for col in range(4 if site != "head" else 0, n_cols):
            single = patched_outcome(model, clean, corrupt, site, layer, col, k=37)
            value = float(single.logprobs_last[4] - single.logprobs_last[9])
            assert float(grid.values[layer, col]) == pytest.approx(value, abs=1e-4)


def test_identical_prompts_need_no_forward() -> None:
    model = make(**FAMILIES["llama"])
    x = ids(6)
    seen = []
    grid = patch_grid(model, x, x.clone(), "resid", logit_diff_metric(1, 2),
                      progress=lambda done, total: seen.append((done, total)))
    assert (grid.values == grid.clean).all() and grid.normalised.isnan().all()
    assert seen == [(18, 18)]


@pytest.mark.parametrize("site", ["resid", "head"])
def test_packed_and_whole_prompt_runs_agree(site) -> None:
    model = make(**FAMILIES["llama"])
    clean = ids(12, seed=3)
    corrupt = clean.clone()
    corrupt[0, 6] = (clean[0, 6] + 1) % 37
    metric = logit_diff_metric(4, 9)
    fast = patch_grid(model, clean, corrupt, site, metric, batch_size=4)
    whole = patch_grid(model, clean, corrupt, site, metric, batch_size=4, packed=False)
    torch.testing.assert_close(fast.values, whole.values, atol=1e-4, rtol=0)


def test_the_plan_counts_the_runs_a_grid_needs() -> None:
    model = make(**FAMILIES["llama"])
    clean = ids(10, seed=2)
    corrupt = clean.clone()
    corrupt[0, 6] = (clean[0, 6] + 1) % 37
    resid = plan_grid(model, clean, corrupt, "resid")
    assert (resid.shape, resid.runs, resid.first_difference) == ((3, 10), 3 * 4, 6)
    assert resid.cells[:4] == [(0, 6), (0, 7), (0, 8), (0, 9)] and resid.starts[:4] == [6, 7, 8, 9]
    heads = plan_grid(model, clean, corrupt, "head")
    assert (heads.shape, heads.runs, set(heads.starts)) == ((3, 4), 12, {6})
    whole = plan_grid(model, clean, corrupt, "resid", packed=False)
    assert (whole.runs, whole.first_difference, whole.packed) == (30, 0, False)
    assert plan_grid(model, clean, clean.clone(), "head").runs == 0
    encoder = make(kind="encoder", positional="learned", norm="layernorm", mlp="gelu")
    assert plan_grid(encoder, clean, corrupt, "resid", position=2).runs == 30  # bidirectional
