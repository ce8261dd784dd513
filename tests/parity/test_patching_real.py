"""Activation patching on SmolLM2 with an IOI pair (Wang et al. 2022): the packed suffix runs
give what one whole patched forward gives, cell by cell, and the grid shows the
known shape: the differing name carries everything at the first block, the final position
nearly everything at the last one, and the positions before the name carry nothing."""

from __future__ import annotations

import pytest
import torch

from explorer.interventions import logit_diff_metric, patch_grid, patched_outcome

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


@pytest.mark.slow
def test_smollm2_ioi_residual_patching(smollm2_pair) -> None:
    ours, _ = smollm2_pair
    clean, corrupt = ours.encode(CLEAN), ours.encode(CORRUPT)
    name = int((clean[0] != corrupt[0]).nonzero()[0])
    with torch.no_grad():
        answer = int(ours.model(clean)[0, -1].argmax())
        distractor = int(ours.model(corrupt)[0, -1].argmax())
    assert (ours.decode([answer]), ours.decode([distractor])) == (" Mary", " John")
    metric = logit_diff_metric(answer, distractor)
    packed = patch_grid(ours.model, clean, corrupt, "resid", metric)
    n = clean.shape[1]
    for layer, column in [(0, name), (3, name + 1), (12, name), (17, n - 1), (22, n - 2),
                          (29, n - 1)]:
        single = patched_outcome(ours.model, clean, corrupt, "resid", layer, column, k=1)
        value = float(single.logprobs_last[answer] - single.logprobs_last[distractor])
        assert float(packed.values[layer, column]) == pytest.approx(value, abs=1e-3)
    grid = packed.normalised  # [30 layers, N positions]
    assert grid[0, name] == pytest.approx(1.0, abs=1e-3)
    assert grid[-1, -1] > 0.9  # the last block still reads the name's position (0.96)
    assert (grid[:, :name] == 0).all()  # before the first difference: nothing to restore
    assert grid[0, name + 1:].abs().max() < 1e-3  # the same tokens after it, at block 0
