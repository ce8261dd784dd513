"""explorer.analysis.positional against closed forms, the papers and transformers' T5 buckets."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from explorer.analysis.positional import (
    alibi_matrix,
    bias_by_offset,
    bucket_ranges,
    cosine_similarity_matrix,
    offset_buckets,
    pair_carriers,
    pair_contributions,
    pattern_changes,
    permutation_errors,
    position_dot_products,
    position_pca,
    relative_offsets,
    rope_frequencies,
    rotate_pair,
    score_by_offset,
    sinusoid_dot_by_offset,
    sinusoid_rotation,
    sinusoid_rotation_residuals,
)
from explorer.nn.attention import apply_rotary
from explorer.nn.positional import Rotary, sinusoidal_table

torch.set_num_threads(1)


# --------------------------------------------------------------------------- sinusoidal


@pytest.mark.parametrize("base, offset", [(10000.0, 1), (10000.0, 17), (100.0, 5), (2.0, 3)])
def test_sinusoid_rotation_moves_every_position_by_k(base, offset) -> None:
    table = sinusoidal_table(64, 24, base)
    residuals = sinusoid_rotation_residuals(table, offset, base)
    assert residuals.shape == (64 - offset,)
    assert residuals.max() < 1e-5  # float32 table, every position
    rotation = sinusoid_rotation(offset, 24, base)
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(24, dtype=torch.float64))


def test_sinusoid_rotation_blocks_are_the_angle_sum_formula() -> None:
    w = 10000.0 ** (-2 / 4)  # pair 1 of d_model 4
    rotation = sinusoid_rotation(3, 4)
    p = 5.0
    pe = torch.tensor([math.sin(p), math.cos(p), math.sin(p * w), math.cos(p * w)],
                      dtype=torch.float64)
    expected = torch.tensor([math.sin(p + 3), math.cos(p + 3), math.sin((p + 3) * w),
                             math.cos((p + 3) * w)], dtype=torch.float64)
    torch.testing.assert_close(rotation @ pe, expected)


def test_a_wrong_table_has_a_large_residual() -> None:
    table = sinusoidal_table(32, 16).clone()
    table[10, 0] += 0.5
    assert sinusoid_rotation_residuals(table, 2).max() == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(ValueError):
        sinusoid_rotation_residuals(table, 32)


def test_sinusoid_dot_products_depend_only_on_the_offset() -> None:
    d_model, base = 32, 500.0
    dots = position_dot_products(sinusoidal_table(40, d_model, base).double())
    offsets = torch.arange(40)
    closed = sinusoid_dot_by_offset(offsets, d_model, base)
    for k in (0, 1, 7, 39):
        torch.testing.assert_close(dots.diagonal(k), closed[k].expand(40 - k), atol=1e-5,
                                   rtol=0)
    assert closed[0].item() == pytest.approx(d_model / 2)  # sum of sin^2 + cos^2 per pair


# --------------------------------------------------------------------------- RoPE


def test_rope_frequencies_are_the_papers() -> None:
    freqs = rope_frequencies(8, base=100.0)
    torch.testing.assert_close(freqs.inv_freq, torch.tensor(
        [100.0 ** (-i / 8) for i in (0, 2, 4, 6)], dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(freqs.wavelength, 2 * math.pi / freqs.inv_freq)


def test_rotate_pair_is_apply_rotary_on_that_pair() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, dtype=torch.float64)
    positions = torch.arange(6)
    cos, sin = Rotary(8, 50.0).double()(positions, torch.float64)
    rotated = apply_rotary(x.expand(1, 1, 6, 8), cos, sin)[0, 0]  # [6, 8]
    freq = rope_frequencies(8, 50.0).inv_freq[2].item()
    torch.testing.assert_close(rotate_pair(x[[2, 6]], freq, positions), rotated[:, [2, 6]])


def test_pair_terms_sum_to_the_score() -> None:
    torch.manual_seed(1)
    q, k = torch.randn(3, 5, 16, dtype=torch.float64), torch.randn(3, 7, 16, dtype=torch.float64)
    terms = pair_contributions(q, k)
    assert terms.shape == (3, 5, 7, 8)
    torch.testing.assert_close(terms.sum(-1), q @ k.transpose(-1, -2), atol=1e-12, rtol=0)
    pair_4 = q[1, 2, 4] * k[1, 3, 4] + q[1, 2, 12] * k[1, 3, 12]  # dims 4 and 4 + 8
    torch.testing.assert_close(terms[1, 2, 3, 4], pair_4)


def test_score_by_offset_is_the_rotated_dot_product() -> None:
    torch.manual_seed(2)
    d, base = 16, 1000.0
    q_raw, k_raw = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    positions = torch.arange(40)
    cos, sin = Rotary(d, base).double()(positions, torch.float64)
    q = apply_rotary(q_raw.expand(1, 1, 40, d), cos, sin)[0, 0]  # [40, d]
    k = apply_rotary(k_raw.expand(1, 1, 40, d), cos, sin)[0, 0]
    real = q @ k.T  # [40, 40]
    freqs = rope_frequencies(d, base).inv_freq
    sweep = score_by_offset(q_raw, k_raw, freqs, torch.arange(-39, 40)).sum(-1)  # [79]
    for m, n in [(0, 0), (10, 3), (39, 0), (5, 20), (30, 29)]:
        assert real[m, n].item() == pytest.approx(sweep[m - n + 39].item(), abs=1e-9)


def test_pair_carriers_split_the_lift_of_the_real_scores() -> None:
    torch.manual_seed(3)
    h, n, d, scale = 2, 6, 8, 0.5
    q, k = torch.randn(h, n, d, dtype=torch.float64), torch.randn(h, n, d, dtype=torch.float64)
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    scores = (scale * q @ k.transpose(-1, -2)).masked_fill(~allowed, -math.inf)
    pattern = scores.softmax(-1)
    carriers = pair_carriers(q, k, pattern, allowed, scale)
    full = torch.where(allowed, scale * q @ k.transpose(-1, -2), 0.0)
    row_mean = full.sum(-1) / allowed.sum(-1)
    total_lift = (pattern * (full - row_mean[..., None])).sum(-1).mean(-1)  # [H]
    torch.testing.assert_close(carriers.lift.sum(-1), total_lift)
    terms = scale * pair_contributions(q, k)  # [H, N, N, P]
    expected = (terms.abs() * allowed[..., None]).sum((1, 2)) / allowed.sum()
    torch.testing.assert_close(carriers.mean_abs, expected)


# --------------------------------------------------------------------------- ALiBi and T5


def paper_slopes(n_heads: int) -> list[float]:
    """Press et al. 2022: start 2^(-8/n), ratio the same; other counts interleave 2n's."""
    def geometric(n: int) -> list[float]:
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]
    if math.log2(n_heads).is_integer():
        return geometric(n_heads)
    lower = 2 ** math.floor(math.log2(n_heads))
    return geometric(lower) + geometric(2 * lower)[0::2][: n_heads - lower]


@pytest.mark.parametrize("n_heads", [1, 4, 8, 12, 16, 6, 20])
def test_alibi_slopes_and_bias(n_heads) -> None:
    slopes, bias = alibi_matrix(n_heads, 5, causal=False)
    assert slopes.tolist() == pytest.approx(paper_slopes(n_heads))
    assert bias.shape == (n_heads, 5, 5)
    assert bias[-1, 4, 1].item() == pytest.approx(-3 * paper_slopes(n_heads)[-1])
    _, causal = alibi_matrix(n_heads, 5, causal=True)
    assert causal[0, 1, 3].isnan() and causal[0, 3, 1].item() == bias[0, 3, 1].item()


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 20), (16, 50)])
def test_t5_buckets_match_transformers(bidirectional, num_buckets, max_distance) -> None:
    from transformers.models.t5.modeling_t5 import T5Attention

    offsets = relative_offsets(300, bidirectional)
    ours = offset_buckets(offsets, bidirectional, num_buckets, max_distance)
    theirs = T5Attention._relative_position_bucket(
        offsets, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
    assert torch.equal(ours, theirs)
    ranges = bucket_ranges(offsets, ours)
    assert ranges[0][1] == offsets[0] and ranges[-1][2] == offsets[-1]
    assert all(b[1] == a[2] + 1 for a, b in itertools.pairwise(ranges))
    assert len({r[0] for r in ranges}) == len(ranges)  # each bucket is one run of offsets


def test_causal_offsets_stop_at_zero_and_bias_follows_buckets() -> None:
    assert relative_offsets(3, False).tolist() == [-3, -2, -1, 0]
    weight = torch.arange(12.0).reshape(4, 3)  # [B, H]
    bias = bias_by_offset(weight, torch.tensor([0, 3, 3, 1]))
    assert bias.tolist() == [[0, 9, 9, 3], [1, 10, 10, 4], [2, 11, 11, 5]]


# --------------------------------------------------------------------------- learned tables


def test_pca_of_a_helix_finds_its_circle() -> None:
    t = torch.arange(200, dtype=torch.float64)
    helix = torch.stack([torch.cos(t / 10), torch.sin(t / 10), t / 400], -1)  # [200, 3]
    table = helix @ torch.randn(3, 32, generator=torch.Generator().manual_seed(0),
                                dtype=torch.float64)
    pca = position_pca(table, 3)
    centred = table - table.mean(0)
    exact = torch.linalg.svdvals(centred)[:3].pow(2) / centred.pow(2).sum()
    torch.testing.assert_close(pca.explained, exact, rtol=1e-6, atol=1e-9)
    assert pca.explained.sum().item() == pytest.approx(1.0)
    assert pca.coords.shape == (200, 3) and (pca.coords[0] <= 0).all()
    torch.testing.assert_close(position_pca(table, 3).coords, pca.coords)  # seeded


def test_cosine_similarity_matrix() -> None:
    table = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    assert cosine_similarity_matrix(table).tolist() == [[1, 0, -1], [0, 1, 0], [-1, 0, 1]]


# --------------------------------------------------------------------------- checks


def test_permutation_errors_and_pattern_changes() -> None:
    torch.manual_seed(4)
    outputs = torch.randn(2, 5, 3)
    perm = torch.tensor([4, 0, 3, 1, 2])
    assert permutation_errors(outputs, outputs[:, perm], perm).tolist() == [0.0, 0.0]
    assert (permutation_errors(outputs, outputs, perm) > 0.1).all()
    patterns = torch.rand(2, 3, 4, 4)
    moved = patterns.clone()
    moved[1, 2, 3, 0] += 0.25
    assert pattern_changes(patterns, moved).tolist() == pytest.approx([0.0, 0.25])
