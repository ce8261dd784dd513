"""Positional encodings as numbers: closed forms and what a model's real vectors do with them.

- Sinusoidal table (Vaswani et al. 2017): PE(pos + k) is one fixed rotation R_k of PE(pos),
  the same for every pos, so PE(p) . PE(q) depends only on q - p.
- RoPE (Su et al. 2021): query and key pairs (i, i + d/2) are rotated by pos * f_i with
  f_i = base^(-2i/d). The score splits exactly into one term per pair; the term of pair i
  depends on the positions only through the offset, as Re(c_i e^{j r f_i}) with r the offset.
- ALiBi (Press et al. 2022): a per-head slope times the distance, subtracted from the scores.
- T5 relative bias (Raffel et al. 2020): each offset falls in a bucket (exact near, log-spaced
  far) and each bucket has a learned bias per head.
- Learned absolute tables (GPT-2, BERT): geometry of the rows (PCA trajectory, cosines).
- Why position matters: permutation equivariance of attention without positions, and the
  change of attention patterns when every position is shifted.

Everything here is pure tensor math: tensors in, tensors out; no model is run. Shapes: N
positions, D d_model, d d_head, P = d / 2 rotary pairs, H heads, L layers, R offsets, B buckets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from explorer.nn.positional import (
    alibi_bias,
    alibi_slopes,
    relative_position_bucket,
    rope_inv_freq,
)

# --------------------------------------------------------------------------- sinusoidal


def sinusoid_frequencies(d_model: int, base: float = 10000.0) -> Tensor:
    """[D / 2] angular speeds w_i = base^(-2i/D) of the (sin, cos) pairs (2i, 2i + 1), float64."""
    return base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)


def sinusoid_rotation(offset: int, d_model: int, base: float = 10000.0) -> Tensor:
    """[D, D] block-diagonal R_k with PE(pos + k) = R_k PE(pos) for every pos (float64).

    Block i acts on (sin(p w_i), cos(p w_i)): [[cos k w_i, sin k w_i], [-sin k w_i, cos k w_i]].
    """
    angle = offset * sinusoid_frequencies(d_model, base)  # [D/2]
    rotation = torch.zeros(d_model, d_model, dtype=torch.float64)
    even, odd = torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)
    rotation[even, even] = rotation[odd, odd] = angle.cos()
    rotation[even, odd] = angle.sin()
    rotation[odd, even] = -angle.sin()
    return rotation


def sinusoid_rotation_residuals(table: Tensor, offset: int, base: float = 10000.0) -> Tensor:
    """[N - k] |PE(pos + k) - R_k PE(pos)| (max over dimensions) for every pos of ``table``.

    ``table`` [N, D] is a sinusoidal table; the residuals are rounding-sized for every pos,
    which is the statement that one fixed linear map moves any position by k.
    """
    n, d_model = table.shape
    if not 0 < offset < n:
        raise ValueError(f"offset must be in 1..{n - 1}, got {offset}")
    rotated = table[:-offset].double() @ sinusoid_rotation(offset, d_model, base).T  # [N-k, D]
    return (table[offset:].double() - rotated).abs().amax(-1)


def position_dot_products(table: Tensor) -> Tensor:
    """[N, N] PE(p) . PE(q) for a table [N, D]."""
    return table @ table.T


def sinusoid_dot_by_offset(offsets: Tensor, d_model: int, base: float = 10000.0) -> Tensor:
    """[R] closed form of PE(p) . PE(p + k) = sum_i cos(k w_i): the same for every p."""
    angles = offsets.double()[:, None] * sinusoid_frequencies(d_model, base)[None, :]
    return angles.cos().sum(-1)


# --------------------------------------------------------------------------- RoPE


@dataclass(frozen=True)
class RopeFrequencies:
    """Per rotary pair i (dims i and i + d/2): angle per token f_i and wavelength 2 pi / f_i."""

    inv_freq: Tensor  # [P] radians per token
    wavelength: Tensor  # [P] tokens per full turn


def rope_frequencies(d_head: int, base: float = 10000.0) -> RopeFrequencies:
    """Rotation speed of every pair from the model's base (Su et al. 2021)."""
    inv_freq = rope_inv_freq(d_head, base).double()
    return RopeFrequencies(inv_freq, 2 * math.pi / inv_freq)


def rotate_pair(pair: Tensor, inv_freq: float, positions: Tensor) -> Tensor:
    """[N, 2] one pair (a, b) of an unrotated query or key rotated to each position."""
    angle = positions.double() * inv_freq
    a, b = pair.double()
    return torch.stack((a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin()), -1)


def pair_contributions(q: Tensor, k: Tensor) -> Tensor:
    """[..., N, M, P] term of each rotary pair in q . k, for q [..., N, d] and k [..., M, d].

    Pairs are (i, i + d/2) (``rotate_half``); the sum over P is exactly q k^T (before the
    attention scale). Memory grows as N * M * P: meant for one head or a short prompt.
    """
    half = q.shape[-1] // 2
    first = torch.einsum("...np,...mp->...nmp", q[..., :half], k[..., :half])
    second = torch.einsum("...np,...mp->...nmp", q[..., half:], k[..., half:])
    return first + second


@dataclass(frozen=True)
class PairCarriers:
    """Which rotary pairs carry a layer's real attention scores, per head (logit units).

    ``mean_abs`` [H, P]: mean |scale * pair term| over the (query, key) cells attention may use.
    ``lift`` [H, P]: how much the pair raises the keys the head attends to above the row
    mean: mean over queries of sum_k A[q, k] (term[q, k] - mean over allowed k of term[q, k]).
    Summed over pairs, ``lift`` is the same quantity for the whole score.
    """

    mean_abs: Tensor
    lift: Tensor


def pair_carriers(q: Tensor, k: Tensor, pattern: Tensor, allowed: Tensor,
                  scale: float) -> PairCarriers:
    """Per-pair summary for q, k [H, N, d] (rotated), pattern [H, N, N], allowed [N, N] bool.

    Loops over pairs, so memory stays one [H, N, N] term at a time.
    """
    half = q.shape[-1] // 2
    allowed_f = allowed.to(q.dtype)  # [N, N]
    n_allowed = allowed_f.sum(-1).clamp_min(1)  # [N]
    mean_abs, lift = [], []
    for i in range(half):
        pair = [i, i + half]
        term = scale * (q[..., pair] @ k[..., pair].transpose(-1, -2))  # [H, N, N]
        mean_abs.append((term.abs() * allowed_f).sum((-1, -2)) / allowed_f.sum())
        row_mean = (term * allowed_f).sum(-1) / n_allowed  # [H, N]
        lifted = (pattern * (term - row_mean[..., None]) * allowed_f).sum(-1)  # [H, N]
        lift.append(lifted.mean(-1))
    return PairCarriers(torch.stack(mean_abs, -1), torch.stack(lift, -1))


def score_by_offset(q_raw: Tensor, k_raw: Tensor, inv_freq: Tensor, offsets: Tensor) -> Tensor:
    """[R, P] each pair's term of q . k when the query sits ``offset`` positions after the key.

    ``q_raw``, ``k_raw`` [d] are unrotated; rotating q by pos_q * f and k by pos_k * f gives
    per pair Re(c_i e^{j r f_i}) with c_i = z_q conj(z_k), z = x_i + j x_{i+d/2}, r = pos_q -
    pos_k: only the offset matters. Summed over P it is the (unscaled) score; its shrinking
    envelope as |r| grows is RoPE's long-distance decay (Su et al. 2021, section 3.4.3).
    """
    half = q_raw.shape[-1] // 2
    qa, qb = q_raw[:half].double(), q_raw[half:].double()
    ka, kb = k_raw[:half].double(), k_raw[half:].double()
    real, imag = qa * ka + qb * kb, qb * ka - qa * kb  # c_i = z_q conj(z_k), [P]
    angle = offsets.double()[:, None] * inv_freq.double()[None, :]  # [R, P]
    return real * angle.cos() - imag * angle.sin()


# --------------------------------------------------------------------------- ALiBi and T5


def alibi_matrix(n_heads: int, n: int, causal: bool) -> tuple[Tensor, Tensor]:
    """(slopes [H], bias [H, N, N]) of ALiBi (Press et al. 2022); NaN where a causal mask
    hides the key (j > i), so a chart leaves it blank."""
    slopes = alibi_slopes(n_heads).double()
    bias = alibi_bias(slopes, n)[0]  # [H, N, N]
    if causal:
        future = torch.ones(n, n, dtype=torch.bool).triu(1)
        bias = bias.masked_fill(future, float("nan"))
    return slopes, bias


def relative_offsets(max_offset: int, bidirectional: bool) -> Tensor:
    """[R] offsets key - query shown for a T5 stack: -max..max, or -max..0 when causal."""
    return torch.arange(-max_offset, (max_offset if bidirectional else 0) + 1)


def offset_buckets(offsets: Tensor, bidirectional: bool, num_buckets: int,
                   max_distance: int) -> Tensor:
    """[R] T5 bucket of each relative position key - query (Raffel et al. 2020)."""
    return relative_position_bucket(offsets.long(), bidirectional, num_buckets, max_distance)


def bucket_ranges(offsets: Tensor, buckets: Tensor) -> list[tuple[int, int, int]]:
    """(bucket, first offset, last offset) of each run of equal buckets, in offset order."""
    ranges: list[tuple[int, int, int]] = []
    for offset, bucket in zip(offsets.tolist(), buckets.tolist(), strict=True):
        if ranges and ranges[-1][0] == bucket and ranges[-1][2] == offset - 1:
            ranges[-1] = (bucket, ranges[-1][1], offset)
        else:
            ranges.append((bucket, offset, offset))
    return ranges


def bias_by_offset(weight: Tensor, buckets: Tensor) -> Tensor:
    """[H, R] learned bias of each head at each offset, from weight [B, H] and buckets [R]."""
    return weight[buckets].T


# --------------------------------------------------------------------------- learned tables


@dataclass(frozen=True)
class PositionPCA:
    """Positions projected on the table's top principal components."""

    coords: Tensor  # [N, k]
    explained: Tensor  # [k] fraction of the table's variance along each component


def position_pca(table: Tensor, n_components: int = 3, seed: int = 0) -> PositionPCA:
    """PCA of a position table [N, D] with ``torch.pca_lowrank`` (seeded, signs fixed).

    Each component's sign is chosen so that position 0 has a non-positive coordinate, so the
    picture does not flip between runs. GPT-2's table traces a helix (Radford et al. 2019's
    embeddings as analysed by many since).
    """
    x = table.double()
    n_components = min(n_components, *x.shape)
    centred = x - x.mean(0, keepdim=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, singular, v = torch.pca_lowrank(x, q=min(n_components + 6, *x.shape), niter=6)
    components = v[:, :n_components]  # [D, k]
    coords = centred @ components  # [N, k]
    signs = torch.where(coords[0] > 0, -1.0, 1.0).to(coords.dtype)
    total = centred.pow(2).sum().clamp_min(1e-30)
    return PositionPCA(coords * signs, singular[:n_components].pow(2) / total)


def cosine_similarity_matrix(table: Tensor) -> Tensor:
    """[N, N] cosine similarity between every two rows of a table [N, D]."""
    unit = table / table.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.T


# --------------------------------------------------------------------------- why position matters


def permutation_errors(outputs: Tensor, permuted_outputs: Tensor, perm: Tensor) -> Tensor:
    """[L] max |f(x[perm]) - f(x)[perm]| / max |f(x)| per layer, for outputs [L, N, D].

    Zero (to rounding) is permutation equivariance: shuffling the tokens shuffles the outputs
    and changes nothing else.
    """
    expected = outputs[:, perm]
    scale = outputs.abs().flatten(1).amax(-1).clamp_min(1e-30)  # [L]
    return (permuted_outputs - expected).abs().flatten(1).amax(-1) / scale


def pattern_changes(patterns: Tensor, shifted_patterns: Tensor) -> Tensor:
    """[L] largest change of any attention weight per layer, patterns [L, H, N, N]."""
    return (shifted_patterns - patterns).abs().flatten(1).amax(-1)
