"""Parameter counts of a model, grouped by component.

Where a transformer's parameters live (Kaplan et al. 2020 count ``12 · n_layers · d_model²``
for the non-embedding part of a GPT): the token embedding, the positional tables, attention
(q, k, v, o of self- and cross-attention), the feed-forward networks, the norms and the
unembedding. Tied weights are counted once (``named_parameters`` yields a shared tensor once,
under its first name, which is the embedding).

Pure: reads parameter names and sizes, never runs the model.
"""

from __future__ import annotations

import re

from torch import nn

# Component of a parameter, by the first pattern its name matches (names: explorer/nn/model.py).
COMPONENT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("embedding", re.compile(r"^embed\.(tokens|token_types)\.")),
    ("positions", re.compile(r"(^embed\.positions\.|(^|\.)rel_bias\.)")),
    ("attention", re.compile(r"\.(attn|cross_attn)\.")),
    ("mlp", re.compile(r"\.mlp\.")),
    ("norms", re.compile(r"(\.(ln1|ln2|ln_cross)\.|final_norm\.|^(embed|head)\.norm\.)")),
    ("unembedding", re.compile(r"^head\.")),
)
COMPONENTS = (*(name for name, _ in COMPONENT_PATTERNS), "other")


def component_of(parameter_name: str) -> str:
    """The component a parameter belongs to, e.g. ``blocks.3.attn.q.weight`` -> attention."""
    for component, pattern in COMPONENT_PATTERNS:
        if pattern.search(parameter_name):
            return component
    return "other"


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Number of parameters per component, in ``COMPONENTS`` order, zeros left out."""
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, parameter in model.named_parameters():
        counts[component_of(name)] += parameter.numel()
    return {component: count for component, count in counts.items() if count}


def format_count(count: int) -> str:
    """A parameter count a person reads at a glance: 134.5M, 22.7M, 4.2K, 950."""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= threshold:
            return f"{count / threshold:.1f}{suffix}"
    return str(count)
