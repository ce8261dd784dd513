"""The logit lens (nostalgebraist 2020): read an intermediate residual stream as if it were
the last layer's, and summarise each distribution without keeping it.

The lens itself (final norm, then unembedding) belongs to the model; this module takes the
logits it produces, a few rows and positions at a time, and keeps only what views need: the
top-k tokens and their probabilities, the entropy, and the KL divergence to the model's own
final distribution, ``KL(p_final || p_row)`` as in the tuned lens (Belrose et al. 2023).
Shapes: ``R`` rows (residual-stream boundaries), ``C`` positions, ``V`` vocabulary, ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LensSummary:
    """Per (row, position): top-k ids and probabilities ``[R, C, k]``, entropy and KL
    ``[R, C]`` (nats). ``kl`` is None when no final distribution was given."""

    top_ids: Tensor
    top_probs: Tensor
    entropy: Tensor
    kl: Tensor | None

    @staticmethod
    def concat(parts: list[LensSummary], dim: int) -> LensSummary:
        """Join summaries computed for consecutive chunks of rows (0) or positions (1)."""
        kls = [p.kl for p in parts]
        return LensSummary(
            torch.cat([p.top_ids for p in parts], dim),
            torch.cat([p.top_probs for p in parts], dim),
            torch.cat([p.entropy for p in parts], dim),
            None if any(k is None for k in kls) else torch.cat(kls, dim),
        )


def summarise_logits(logits: Tensor, k: int = 5, final_logprobs: Tensor | None = None
                     ) -> LensSummary:
    """Top-k, entropy and KL to ``final_logprobs`` ``[C, V]`` of ``logits`` ``[R, C, V]``.

    Computed in float32 whatever the input's dtype; nothing of size ``V`` is returned.
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # [R, C, V]
    top_logprobs, top_ids = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
    probs = logprobs.exp()
    entropy = -(probs * logprobs).sum(-1)
    kl = None
    if final_logprobs is not None:
        final = final_logprobs.float()
        kl = (final.exp() * (final - logprobs)).sum(-1).clamp_min(0.0)
    return LensSummary(top_ids, top_logprobs.exp(), entropy, kl)


def token_prob_and_rank(logits: Tensor, token_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Probability and rank (0 = the top token) of ``token_ids`` ``[C]`` under ``logits``
    ``[R, C, V]`` -> two ``[R, C]`` tensors. Ties rank the token first."""
    logits = logits.float()
    index = token_ids.to(logits.device).view(1, -1, 1).expand(logits.shape[0], -1, 1)
    chosen = logits.gather(-1, index)  # [R, C, 1]
    prob = torch.softmax(logits, dim=-1).gather(-1, index)[..., 0]
    rank = (logits > chosen).sum(-1)
    return prob, rank
