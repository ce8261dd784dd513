"""Turning next-token logits into a choice: temperature, top-k, nucleus (top-p), sampling.

Pure functions over a logits vector [V] (or a batch [..., V]); filters return logits with the
excluded tokens set to -inf so they compose in any order before one softmax.

- temperature: logits / T (Ackley, Hinton & Sejnowski 1985; T -> 0 is greedy decoding).
- top-k: keep the k most likely tokens (Fan, Lewis & Dauphin 2018).
- top-p / nucleus: keep the smallest set of most likely tokens whose probability mass is at
  least p (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration").

Randomness comes only from a `torch.Generator` passed in, never torch's global RNG: many
browser sessions share one process, and a seed must reproduce a sample whatever else runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits [..., V] / temperature (temperature > 0; 0 means greedy and is the caller's case)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to scale logits, got {temperature}")
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep exactly the k largest logits of [..., V] (ties broken by index); the rest -> -inf.

    ``k`` None, 0 or >= V keeps everything.
    """
    if k is None or k <= 0 or k >= logits.shape[-1]:
        return logits
    keep = torch.topk(logits, k, dim=-1).indices
    out = torch.full_like(logits, NEG_INF)
    return out.scatter(-1, keep, logits.gather(-1, keep))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass is >= p.

    A token is kept when the mass of the tokens strictly more likely than it is still < p,
    so the most likely token is always kept. ``p`` None or >= 1 keeps everything.
    logits [..., V] -> [..., V].
    """
    if p is None or p >= 1.0:
        return logits
    if p <= 0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # [..., V]
    keep_sorted = mass_before < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG_INF)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> int:
    """Draw one token id from a probability vector [V] with ``generator``."""
    return int(torch.multinomial(probs, 1, generator=generator).item())


def entropy(probs: torch.Tensor) -> float:
    """Shannon entropy in nats of a probability vector [V] (0 log 0 = 0)."""
    logs = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()  # 0 * log(tiny) = 0
    return float(-torch.dot(probs.flatten(), logs.flatten()))


@dataclass(frozen=True)
class SamplingParams:
    """How to choose the next token. ``temperature`` 0 is greedy (argmax)."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def sampling_distribution(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution [V] (float32) the next token is drawn from.

    Greedy decoding picks the argmax of the model's own softmax, so that is its distribution;
    otherwise temperature, then top-k, then top-p are applied (the order transformers uses).
    """
    logits = logits.float()
    if not params.greedy:
        logits = apply_temperature(logits, params.temperature)
        logits = top_p_filter(top_k_filter(logits, params.top_k), params.top_p)
    return torch.softmax(logits, dim=-1)


def choose_token(
    logits: torch.Tensor,
    probs: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    top: torch.return_types.topk | None = None,
) -> int:
    """argmax of the logits [V] when greedy (as transformers does), else a draw from probs [V].

    ``top`` (the top-k of probs, k >= 2) saves the greedy argmax pass unless its first two
    probabilities tie, when the logits decide.
    """
    if not params.greedy:
        return sample(probs, generator)
    if top is not None and top.values.shape[-1] > 1 and top.values[0] > top.values[1]:
        return int(top.indices[0])
    return int(logits.argmax())
