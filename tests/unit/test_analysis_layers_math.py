"""explorer.analysis.lens, contributions and geometry against direct computation and closed
forms: top-k/entropy/KL from the full distribution, probability and rank, direct logit
attribution that adds up on LayerNorm and RMSNorm, PCA recovering a planted rank-2 structure,
Procrustes alignment undoing a rotation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from explorer.analysis.contributions import (
    FinalNorm,
    direct_logit_attribution,
    frozen_norm_scale,
)
from explorer.analysis.geometry import (
    aligned_pca,
    consecutive_cosine,
    pca_2d,
    procrustes_rotation,
    residual_norms,
    token_cosine,
)
from explorer.analysis.lens import LensSummary, summarise_logits, token_prob_and_rank


def test_summary_matches_the_full_distribution() -> None:
    torch.manual_seed(0)
    logits, final = torch.randn(3, 4, 50), torch.randn(4, 50)
    summary = summarise_logits(logits, k=5, final_logprobs=torch.log_softmax(final, -1))
    probs = torch.softmax(logits, -1)
    top = probs.topk(5, -1)
    torch.testing.assert_close(summary.top_probs, top.values)
    assert torch.equal(summary.top_ids, top.indices)
    entropy = -(probs * probs.log()).sum(-1)
    torch.testing.assert_close(summary.entropy, entropy)
    p_final = torch.softmax(final, -1)
    kl = (p_final * (p_final.log() - probs.log())).sum(-1)
    torch.testing.assert_close(summary.kl, kl, atol=1e-5, rtol=1e-5)
    # the uniform distribution has the maximal entropy log V
    flat = summarise_logits(torch.zeros(1, 1, 50), k=2)
    assert float(flat.entropy) == pytest.approx(math.log(50)) and flat.kl is None
    joined = LensSummary.concat([summary, summary], dim=1)
    assert joined.top_ids.shape == (3, 8, 5) and joined.kl.shape == (3, 8)


def test_probability_and_rank() -> None:
    logits = torch.tensor([[[0.0, 2.0, 1.0], [5.0, 0.0, 0.0]]])  # [1, 2, 3]
    prob, rank = token_prob_and_rank(logits, torch.tensor([2, 0]))
    torch.testing.assert_close(prob[0], torch.stack([torch.softmax(logits[0, 0], -1)[2],
                                                     torch.softmax(logits[0, 1], -1)[0]]))
    assert rank.tolist() == [[1, 0]]


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm", None])
def test_direct_logit_attribution_adds_up_to_the_logit(kind) -> None:
    torch.manual_seed(1)
    d, n_parts, n_pos = 16, 7, 3
    parts = torch.randn(n_parts, n_pos, d) * torch.linspace(0.1, 5, n_parts)[:, None, None]
    final = parts.sum(0)
    weight, bias = 1 + 0.1 * torch.randn(d), 0.1 * torch.randn(d)
    norm = FinalNorm(kind, weight if kind else None, bias if kind == "layernorm" else None,
                     1e-5)
    directions, unembed_bias = torch.randn(n_pos, d), torch.randn(n_pos)
    scale = 0.25
    if kind == "layernorm":
        normed = F.layer_norm(final, (d,), weight, bias, 1e-5)
    elif kind == "rmsnorm":
        normed = final * torch.rsqrt(final.pow(2).mean(-1, keepdim=True) + 1e-5) * weight
    else:
        normed = final
    logit = (normed * scale * directions).sum(-1) + unembed_bias
    shares, constant = direct_logit_attribution(parts, final, directions, norm, scale,
                                                unembed_bias)
    assert shares.shape == (n_parts, n_pos)
    torch.testing.assert_close(shares.sum(0) + constant, logit.double(), atol=1e-5, rtol=0)
    # the frozen scale is the real run's, not each part's own
    if kind == "rmsnorm":
        expected = torch.rsqrt(final.double().pow(2).mean(-1) + 1e-5)
        torch.testing.assert_close(frozen_norm_scale(final, norm), expected)


def test_pca_recovers_a_planted_rank_two_structure() -> None:
    torch.manual_seed(2)
    basis = torch.linalg.qr(torch.randn(64, 2))[0].T  # [2, 64] orthonormal rows
    latent = torch.randn(200, 2) * torch.tensor([10.0, 4.0])
    x = latent @ basis + 0.01 * torch.randn(200, 64) + 3.0  # offset: PCA must centre
    coords, explained = pca_2d(x)
    assert coords.shape == (200, 2)
    assert float(explained.sum()) > 0.999 and float(explained[0]) > float(explained[1])
    # the coordinates are the planted latent up to a rotation/reflection
    centred = latent - latent.mean(0)
    q = procrustes_rotation(coords, centred)
    torch.testing.assert_close(coords @ q, centred, atol=0.05, rtol=0)
    assert pca_2d(torch.randn(2, 8))[0].abs().sum() == 0  # too few points: zeros


def test_aligned_pca_undoes_a_rotation_between_layers() -> None:
    torch.manual_seed(3)
    layer = torch.randn(30, 2) @ torch.tensor([[5.0, 0.0], [0.0, 1.0]])
    embed = torch.cat([layer, torch.zeros(30, 6)], 1)
    angle = torch.tensor(0.7)
    rotation = torch.tensor([[angle.cos(), -angle.sin()], [angle.sin(), angle.cos()]])
    turned = torch.cat([layer @ rotation, torch.zeros(30, 6)], 1)
    pca = aligned_pca(torch.stack([embed, turned, -embed]))
    assert pca.coords.shape == (3, 30, 2) and pca.explained.shape == (3, 2)
    torch.testing.assert_close(pca.coords[1], pca.coords[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(pca.coords[2], pca.coords[0], atol=1e-3, rtol=0)


def test_norms_and_cosines() -> None:
    x = torch.tensor([[[3.0, 4.0], [1.0, 0.0]], [[3.0, 4.0], [0.0, 2.0]]])  # [2, 2, 2]
    torch.testing.assert_close(residual_norms(x), torch.tensor([[5.0, 1.0], [5.0, 2.0]]))
    torch.testing.assert_close(consecutive_cosine(x), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(token_cosine(x[1]), torch.tensor([[1.0, 0.8], [0.8, 1.0]]))
