"""The induction test (Olsson et al. 2022): rank every head by how well it attends, in the
second copy of a repeated random token sequence, to the token right after the current
token's previous occurrence. Runs the model once and recomputes each layer's pattern from
its ``resid_pre``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from explorer.analysis.attention import induction_score, repeated_random_tokens


@dataclass(frozen=True)
class InductionResult:
    """Induction scores ``[L, H]`` on a repeated random sequence, and the ranking."""

    scores: Tensor
    half_len: int
    prefix_len: int
    ranking: list[tuple[int, int, float]]  # (layer, head, score), best first


def induction_test(
    model: nn.Module,
    kind: str,
    vocab_size: int,
    bos_id: int | None = None,
    exclude_ids: Sequence[int] = (),
    half_len: int = 50,
    seed: int = 0,
) -> InductionResult:
    """Rank heads by induction score on ``[BOS] + r + r`` for ``half_len`` random tokens
    ``r``. Decoder models score self-attention; encoder-decoder models get the sequence on
    both sides and score the decoder's self-attention."""
    ids = repeated_random_tokens(vocab_size, half_len, seed, bos_id, exclude_ids)
    prefix_len = 0 if bos_id is None else 1
    device = next(model.parameters()).device
    ids = ids.to(device)
    if kind == "encoder-decoder":
        _, cache = model.run_with_cache(ids, ids, names=["decoder.blocks.*.resid_pre"])
        module, prefix = model.decoder, "decoder."
    else:
        _, cache = model.run_with_cache(ids, names=["blocks.*.resid_pre"], last_only=True)
        module, prefix = model, ""
    rows = []
    for layer, name in enumerate(cache.layer_names("resid_pre", prefix)):
        pattern = module.layer_pattern(layer, cache[name])[0].float().cpu()
        rows.append(induction_score(pattern, half_len, prefix_len))
    scores = torch.stack(rows)  # [L, H]
    order = torch.argsort(scores.flatten(), descending=True).tolist()
    n_heads = scores.shape[1]
    ranking = [(i // n_heads, i % n_heads, float(scores.flatten()[i])) for i in order]
    return InductionResult(scores, half_len, prefix_len, ranking)
