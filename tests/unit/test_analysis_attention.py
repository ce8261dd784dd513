"""Closed-form checks for explorer.analysis.attention."""

import math

import pytest
import torch

from explorer.analysis import (
    HEAD_SCORES,
    aggregate_heads,
    attention_rollout,
    first_token_score,
    gqa_groups,
    head_entropy,
    head_scores,
    induction_score,
    induction_score_from_tokens,
    induction_targets,
    mean_attention_distance,
    pool_pattern,
    previous_token_score,
    renormalise_without,
    repeated_random_tokens,
    self_score,
)


def shifted_pattern(n: int) -> torch.Tensor:
    """[1, n, n]: query 0 on itself, every other query on the previous token."""
    pattern = torch.zeros(1, n, n)
    pattern[0, 0, 0] = 1.0
    pattern[0, torch.arange(1, n), torch.arange(n - 1)] = 1.0
    return pattern


def causal_uniform(n: int) -> torch.Tensor:
    """[n, n]: query i uniform over keys 0..i."""
    tril = torch.ones(n, n).tril()
    return tril / tril.sum(-1, keepdim=True)


LOWER = torch.tensor([[1.0, 0.0, 0.0, 0.0],
                      [0.5, 0.5, 0.0, 0.0],
                      [0.2, 0.3, 0.5, 0.0],
                      [0.1, 0.2, 0.3, 0.4]])


def test_previous_token_score_of_shifted_pattern_is_one():
    assert previous_token_score(shifted_pattern(6)).tolist() == [1.0]
    assert self_score(shifted_pattern(6)).item() == pytest.approx(1 / 6)


def test_entropy_uniform_rows_is_log_n():
    n = 7
    uniform = torch.full((2, n, n), 1 / n)
    torch.testing.assert_close(head_entropy(uniform), torch.full((2,), math.log(n)))
    # Causal uniform: row i spreads over i+1 keys; zeros above the diagonal add nothing.
    expected = sum(math.log(i + 1) for i in range(n)) / n
    assert head_entropy(causal_uniform(n)[None]).item() == pytest.approx(expected, rel=1e-6)
    assert head_entropy(shifted_pattern(5)).item() == 0.0


def test_first_self_and_distance_scores_on_hand_example():
    pattern = LOWER[None]
    assert first_token_score(pattern).item() == pytest.approx((0.5 + 0.2 + 0.1) / 3)
    assert self_score(pattern).item() == pytest.approx((1 + 0.5 + 0.5 + 0.4) / 4)
    assert previous_token_score(pattern).item() == pytest.approx((0.5 + 0.3 + 0.3) / 3)
    # Distances: row1 0.5*1; row2 0.2*2 + 0.3*1; row3 0.1*3 + 0.2*2 + 0.3*1.
    expected = (0 + 0.5 + 0.7 + 1.0) / 4
    assert mean_attention_distance(pattern).item() == pytest.approx(expected)
    assert mean_attention_distance(shifted_pattern(5)).item() == pytest.approx(4 / 5)


def perfect_induction_pattern(period: int, prefix_len: int) -> torch.Tensor:
    n = prefix_len + 2 * period
    pattern = torch.zeros(1, n, n)
    pattern[0, :, 0] = 1.0
    for i in range(prefix_len + period, n):
        pattern[0, i] = 0.0
        pattern[0, i, i - period + 1] = 1.0
    return pattern


@pytest.mark.parametrize("prefix_len", [0, 1])
def test_induction_score_perfect_pattern_is_one(prefix_len):
    pattern = perfect_induction_pattern(period=4, prefix_len=prefix_len)
    assert induction_score(pattern, period=4, prefix_len=prefix_len).item() == 1.0
    assert induction_score(shifted_pattern(pattern.shape[-1]), 4, prefix_len).item() == 0.0


def test_induction_score_from_tokens_matches_period_version():
    tokens = repeated_random_tokens(50, half_len=4, seed=0, bos_id=0)
    pattern = perfect_induction_pattern(period=4, prefix_len=1)
    assert induction_score_from_tokens(pattern, tokens).item() == 1.0
    # Half the weight on the induction target, half on BOS.
    half = 0.5 * pattern + 0.5 * torch.nn.functional.one_hot(torch.zeros(9, dtype=torch.long), 9)
    assert induction_score_from_tokens(half, tokens).item() == pytest.approx(0.5)


def test_induction_targets_and_nan_without_repeats():
    mask = induction_targets(torch.tensor([7, 1, 2, 1, 2]))
    assert mask.nonzero().tolist() == [[3, 2], [4, 3]]
    score = induction_score_from_tokens(causal_uniform(3)[None], torch.tensor([1, 2, 3]))
    assert torch.isnan(score).all()


def test_head_scores_registry_and_layer_stack():
    assert set(HEAD_SCORES) == {
        "entropy", "previous_token", "first_token", "self", "induction", "mean_distance"}
    assert not HEAD_SCORES["entropy"].higher_is_role
    layer = torch.cat([shifted_pattern(5), causal_uniform(5)[None]])  # [2, 5, 5]
    stack = torch.stack([layer] * 3)
    # An iterable of cache-style [1, H, N, N] layers gives the same as the stack.
    lazy = head_scores((layer[None] for _ in range(3)), "previous_token")
    torch.testing.assert_close(lazy, head_scores(stack, "previous_token"))
    scores = head_scores(stack, "previous_token")
    assert scores.shape == (3, 2)
    torch.testing.assert_close(scores[:, 0], torch.ones(3))
    expected = sum(1 / (i + 1) for i in range(1, 5)) / 4
    torch.testing.assert_close(scores[:, 1], torch.full((3,), expected))
    with pytest.raises(ValueError, match="token_ids"):
        head_scores(stack, "induction")
    tokens = torch.tensor([3, 4, 3, 4, 3])
    assert head_scores(stack, "induction", tokens).shape == (3, 2)
    with pytest.raises(KeyError):
        head_scores(stack, "nope")


def test_aggregate_heads_mean_and_raw_max():
    heads = torch.stack([LOWER, torch.eye(4)])
    torch.testing.assert_close(aggregate_heads(heads, "mean"), (LOWER + torch.eye(4)) / 2)
    maxed = aggregate_heads(heads, "max")
    assert maxed[1].tolist() == [0.5, 1.0, 0.0, 0.0]  # raw max, row sums to 1.5


def test_rollout_of_identity_layers_is_identity():
    patterns = torch.eye(5).expand(3, 2, 5, 5)
    torch.testing.assert_close(attention_rollout(patterns), torch.eye(5).expand(3, 5, 5))


def test_rollout_two_layer_closed_form():
    a0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    a1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    rollout = attention_rollout(torch.stack([a0, a1])[:, None], residual_weight=0.5)
    # A_hat0 = [[1, 0], [.25, .75]], A_hat1 = [[1, 0], [.5, .5]], A_hat1 @ A_hat0:
    torch.testing.assert_close(rollout[0], torch.tensor([[1.0, 0.0], [0.25, 0.75]]))
    torch.testing.assert_close(rollout[1], torch.tensor([[1.0, 0.0], [0.625, 0.375]]))
    # max over heads then renormalise: 0.5*I + 0.5*[[1,0],[1,1]] -> row 1 = [1/3, 2/3].
    heads = torch.stack([a1, torch.eye(2)])[None]
    maxed = attention_rollout(heads, residual_weight=0.5, head_reduce="max")
    torch.testing.assert_close(maxed[0, 1], torch.tensor([1 / 3, 2 / 3]))


def test_renormalise_without():
    pattern = LOWER[:3, :3][None]
    out = renormalise_without(pattern, torch.tensor([False, True, True]))
    torch.testing.assert_close(out[0], torch.tensor([[1.0, 0.0], [0.375, 0.625]]))
    out = renormalise_without(pattern, torch.tensor([True, False, True]))
    torch.testing.assert_close(out[0], torch.tensor([[1.0, 0.0], [0.2 / 0.7, 0.5 / 0.7]]))
    sink = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert renormalise_without(sink, torch.tensor([False, True])).tolist() == [[0.0]]


def test_pool_pattern_exact_values_and_row_sums():
    pooled = pool_pattern(LOWER, max_cells=2)
    torch.testing.assert_close(pooled.values, torch.tensor([[1.0, 0.0], [0.4, 0.6]]))
    assert pooled.query_starts == [0, 2] and pooled.key_starts == [0, 2]
    # Uneven blocks: 5 -> block size 3, starts [0, 3]; last query block has 2 rows.
    pattern = causal_uniform(5)
    values, q_starts, k_starts = pool_pattern(pattern, max_cells=2)
    assert q_starts == [0, 3] and k_starts == [0, 3]
    assert values[1, 1].item() == pytest.approx((1 / 4 + 2 / 5) / 2)
    torch.testing.assert_close(values.sum(-1), torch.ones(2))
    big = torch.softmax(torch.randn(2, 3, 37, 37, generator=torch.Generator().manual_seed(0)), -1)
    pooled = pool_pattern(big, max_cells=8)
    assert pooled.values.shape == (2, 3, 8, 8)
    torch.testing.assert_close(pooled.values.sum(-1), torch.ones(2, 3, 8))
    torch.testing.assert_close(pool_pattern(LOWER, max_cells=4).values, LOWER)


def test_gqa_groups_match_repeat_kv():
    assert gqa_groups(9, 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert gqa_groups(4, 4) == [[0], [1], [2], [3]]
    kv_of_head = torch.arange(3).repeat_interleave(3)  # transformers repeat_kv order
    for kv, heads in enumerate(gqa_groups(9, 3)):
        assert kv_of_head[heads].tolist() == [kv] * 3
    with pytest.raises(ValueError):
        gqa_groups(9, 2)


def test_repeated_random_tokens():
    tokens = repeated_random_tokens(20, half_len=8, seed=3, bos_id=1, exclude_ids=(0, 2))
    assert tokens.shape == (1, 17) and tokens.dtype == torch.long
    assert tokens[0, 0].item() == 1
    assert torch.equal(tokens[0, 1:9], tokens[0, 9:])
    assert not set(tokens[0, 1:].tolist()) & {0, 1, 2}
    assert torch.equal(tokens, repeated_random_tokens(20, 8, seed=3, bos_id=1, exclude_ids=(0, 2)))
    assert repeated_random_tokens(20, half_len=5, seed=0).shape == (1, 10)
