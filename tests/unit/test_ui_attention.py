"""explorer.ui.attention helpers that need no running app: rollout labels, induction table."""

from __future__ import annotations

import torch

from explorer.runs import InductionResult
from explorer.runs.prompt_run import Rollout
from explorer.ui.attention import head_labels, induction_table, rollout_labels


def test_rollout_labels_are_the_tokens_when_exact() -> None:
    exact = Rollout(values=torch.eye(3).expand(2, 3, 3), starts=[0, 1, 2], exact=True,
                    residual_weight=0.5)
    assert rollout_labels(exact, ["0: a", "1: b", "2: c"], 3) == ["0: a", "1: b", "2: c"]


def test_rollout_labels_name_each_pooled_block_by_its_token_range() -> None:
    pooled = Rollout(values=torch.eye(3).expand(2, 3, 3), starts=[0, 4, 8], exact=False,
                     residual_weight=0.5)
    assert rollout_labels(pooled, [f"{i}" for i in range(10)], 10) == [
        "tok 0–3", "tok 4–7", "tok 8–9"]


def test_induction_table_lists_the_best_heads_first_with_their_labels() -> None:
    ranking = [(1, 3, 0.91234), (0, 1, 0.5), (1, 0, 0.25), (0, 0, 0.0)]
    result = InductionResult(scores=torch.zeros(2, 4), half_len=20, prefix_len=1,
                             ranking=ranking)
    names = head_labels(4, 2)
    assert induction_table(result, names, top=3) == {
        "layer": [1, 0, 1],
        "head": ["head 3 · kv 1", "head 1 · kv 0", "head 0 · kv 0"],
        "induction score": [0.912, 0.5, 0.25],
    }
    assert len(induction_table(result, names)["layer"]) == 4  # fewer heads than the top 10
