"""Representation geometry of the residual stream: norms, cosine similarities and a 2-D PCA
whose axes stay comparable from one layer to the next.

Large residual norms on the first token are the attention sink's signature (Xiao et al.
2023; Sun et al. 2024, "Massive activations"). The PCA of each layer is aligned to the
previous layer's by orthogonal Procrustes (Schönemann 1966) on the shared tokens, so a layer
slider moves the points instead of flipping or rotating the axes.
Shapes: ``R`` rows (layers), ``N`` tokens, ``D`` d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def residual_norms(resid: Tensor) -> Tensor:
    """L2 norm of each vector: ``[..., N, D] -> [..., N]`` (float32)."""
    return resid.float().norm(dim=-1)


def consecutive_cosine(resid: Tensor) -> Tensor:
    """Cosine similarity of each token between rows r and r + 1: ``[R, N, D] -> [R-1, N]``."""
    resid = resid.float()
    return F.cosine_similarity(resid[:-1], resid[1:], dim=-1)


def token_cosine(x: Tensor) -> Tensor:
    """Cosine similarity between every pair of tokens: ``[N, D] -> [N, N]``."""
    unit = F.normalize(x.float(), dim=-1)
    return unit @ unit.T


@dataclass(frozen=True)
class PCA2D:
    """Coordinates ``[R, N, 2]`` of each row's tokens on its first two principal axes
    (aligned across rows), and the share of variance each axis explains ``[R, 2]``."""

    coords: Tensor
    explained: Tensor


def pca_2d(x: Tensor, niter: int = 6) -> tuple[Tensor, Tensor]:
    """Tokens ``[N, D]`` on their top two principal axes ``[N, 2]`` and each axis's share of
    the variance ``[2]`` (``torch.pca_lowrank``, centred). Fewer than 3 tokens: zeros."""
    x = x.float()
    n = x.shape[0]
    if n < 3:
        return torch.zeros(n, 2), torch.zeros(2)
    centred = x - x.mean(0, keepdim=True)
    q = min(6, n, x.shape[1])
    _, s, v = torch.pca_lowrank(centred, q=q, center=False, niter=niter)
    coords = centred @ v[:, :2]
    total = centred.pow(2).sum().clamp_min(1e-30)
    return coords, (s[:2] ** 2) / total


def procrustes_rotation(source: Tensor, target: Tensor) -> Tensor:
    """The orthogonal ``[2, 2]`` matrix Q minimising ``|source @ Q - target|`` (rotation or
    reflection), ``source``/``target`` ``[N, 2]``."""
    u, _, vh = torch.linalg.svd(source.T.double() @ target.double())
    return (u @ vh).to(source.dtype)


def aligned_pca(rows: Tensor) -> PCA2D:
    """Per-row 2-D PCA of ``[R, N, D]``, each row's axes rotated onto the previous row's."""
    coords, explained = [], []
    previous = None
    for row in rows:
        c, e = pca_2d(row)
        if previous is not None and c.abs().sum() > 0 and previous.abs().sum() > 0:
            c = c @ procrustes_rotation(c, previous)
        coords.append(c)
        explained.append(e)
        previous = c
    return PCA2D(torch.stack(coords), torch.stack(explained))
