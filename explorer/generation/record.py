"""A compact, storable record of one generation, built step by step from `GenerationStep`s.

What a view keeps between reruns (a browser session's state): plain Python lists and small
float16 numpy arrays, no tensors tied to the model. The per-step attention rows dominate:
a step over m context positions holds L x h x m weights, so a run of n steps holds about
L x h x n x (prompt + n / 2) of them. `attention_storage` picks, within a byte budget,
whether to keep every head, only the mean over heads per layer, or nothing.

Shapes: L n_layers, h n_heads, m context positions of a step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from explorer.generation.decode import GenerationStep

ATTENTION_BUDGET_BYTES = 64 * 2**20
BYTES_PER_WEIGHT = 2  # float16


def attention_storage(
    n_layers: int, n_heads: int, n_prompt: int, max_new_tokens: int,
    budget: int = ATTENTION_BUDGET_BYTES,
) -> str:
    """"heads" (every head), "layers" (mean over heads) or "none" to fit ``budget`` bytes."""
    weights_per_row = max_new_tokens * (n_prompt + (max_new_tokens + 1) / 2)
    if n_layers * n_heads * weights_per_row * BYTES_PER_WEIGHT <= budget:
        return "heads"
    if n_layers * weights_per_row * BYTES_PER_WEIGHT <= budget:
        return "layers"
    return "none"


@dataclass
class GenerationRecord:
    """Everything a page shows about one generation (see module docstring)."""

    prompt_ids: list[int]
    prompt_cut: int = 0
    storage: str = "heads"  # how attention is kept: "heads", "layers" or "none"
    token_ids: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    top_ids: list[list[int]] = field(default_factory=list)
    top_probs: list[list[float]] = field(default_factory=list)
    top_labels: list[list[str]] = field(default_factory=list)  # decoded top candidates
    elapsed: list[float] = field(default_factory=list)
    attention: list[np.ndarray] = field(default_factory=list)  # [L, h, m] or [L, m]
    finished: str | None = None  # eos / max_new_tokens / context, or "stopped"

    def add(self, step: GenerationStep, top_labels: list[str] | None = None) -> None:
        """Append one step (its attention converted to float16 numpy as ``storage`` says);
        ``top_labels`` are its top candidates decoded (default: their ids as text)."""
        self.token_ids.append(step.token_id)
        self.texts.append(step.text)
        self.tokens.append(step.token)
        self.probs.append(step.prob)
        self.entropies.append(step.entropy)
        self.top_ids.append(list(step.top_ids))
        self.top_probs.append(list(step.top_probs))
        self.top_labels.append(top_labels if top_labels is not None
                               else [str(i) for i in step.top_ids])
        self.elapsed.append(step.elapsed)
        if step.attention is not None and self.storage != "none":
            rows = step.attention.float().numpy()
            if self.storage == "layers":
                rows = rows.mean(axis=1)
            self.attention.append(rows.astype(np.float16))
        if step.finished is not None:
            self.finished = step.finished

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def ttft(self) -> float | None:
        """Seconds to the first token."""
        return self.elapsed[0] if self.elapsed else None

    @property
    def tokens_per_s(self) -> float:
        """Decoding speed after the first token."""
        if len(self.elapsed) < 2 or self.elapsed[-1] <= self.elapsed[0]:
            return 0.0
        return (len(self.elapsed) - 1) / (self.elapsed[-1] - self.elapsed[0])

    def has_heads(self) -> bool:
        return bool(self.attention) and self.storage == "heads"

    def attention_row(self, step: int, layer: int, head: int | None) -> np.ndarray | None:
        """Step ``step``'s attention [m] of one layer: one head, or the mean over heads
        (``head`` None). None when attention was not kept."""
        if step >= len(self.attention):
            return None
        rows = self.attention[step].astype(np.float32)
        if rows.ndim == 2:  # only the mean over heads was kept
            return rows[layer] if head is None else None
        return rows[layer].mean(axis=0) if head is None else rows[layer, head]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.attention)
