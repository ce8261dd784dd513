"""Direct logit attribution: one token's logit split into what each component wrote into
the residual stream (Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits"; nostalgebraist 2020).

The final residual is the sum of the embeddings and every attention and MLP output of a
pre-norm model. The final norm is linear once its scale is frozen at the value the real run
had (``1/sigma`` of the final residual): LayerNorm's centring is linear, RMSNorm has none.
So ``logit = sum_p scale * (gamma * W_U[t]) . centre(part_p) / sigma + constant``, where the
constant gathers the norm's bias and the unembedding's bias. The parts add up to the real
logit up to float rounding, on LayerNorm and RMSNorm models alike (the RMSNorm case is where
TransformerLens users found theirs did not, TransformerLens #523: the frozen scale must be
the real run's, not recomputed per part).
Shapes: ``P`` parts, ``C`` positions, ``D`` d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FinalNorm:
    """The final norm's kind (``"layernorm"``, ``"rmsnorm"`` or ``None`` for none) and
    parameters ``weight``/``bias`` ``[D]`` (``None`` where absent)."""

    kind: str | None
    weight: Tensor | None = None
    bias: Tensor | None = None
    eps: float = 1e-5


def frozen_norm_scale(final_resid: Tensor, norm: FinalNorm) -> Tensor:
    """``1/sigma`` ``[C]`` the norm applied to the real final residual ``[C, D]``."""
    x = final_resid.double()
    if norm.kind == "layernorm":
        return torch.rsqrt(x.var(-1, unbiased=False) + norm.eps)
    if norm.kind == "rmsnorm":
        return torch.rsqrt(x.pow(2).mean(-1) + norm.eps)
    return torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device)


def direct_logit_attribution(
    parts: Tensor,
    final_resid: Tensor,
    directions: Tensor,
    norm: FinalNorm,
    unembed_scale: float = 1.0,
    unembed_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Each part's share of the logit ``[P, C]`` and the constant ``[C]``.

    ``parts`` ``[P, C, D]`` sum to ``final_resid`` ``[C, D]``; ``directions`` ``[C, D]`` is
    the unembedding row of the target token at each position; ``unembed_bias`` ``[C]`` its
    bias. Computed in float64 so the sum matches the logit to rounding.
    """
    inv_sigma = frozen_norm_scale(final_resid, norm)  # [C]
    parts64 = parts.double()
    if norm.kind == "layernorm":
        parts64 = parts64 - parts64.mean(-1, keepdim=True)
    weights = directions.double() * unembed_scale
    if norm.weight is not None:
        weights = weights * norm.weight.double()
    shares = torch.einsum("pcd,cd->pc", parts64, weights) * inv_sigma
    constant = torch.zeros(final_resid.shape[0], dtype=torch.float64, device=parts.device)
    if norm.bias is not None:
        constant = constant + directions.double() @ norm.bias.double() * unembed_scale
    if unembed_bias is not None:
        constant = constant + unembed_bias.double()
    return shares, constant
