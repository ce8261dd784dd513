"""Ablations as edits, and what a run's output looks like with them.

An :class:`Ablation` names heads (their ``attn.z`` slice), MLPs (``mlp.out``) and whole
blocks (``attn.out`` and ``mlp.out``), zeroed or replaced by their mean over the positions
of a reference text (mean ablation; Wang et al. 2022 discuss why a mean keeps the model
on-distribution better than zeros). :func:`ablation_edits` turns it into edits for one call
(`explorer.nn.capture`); :func:`outcome` summarises a run: the next-token distribution after
the last position and the loss on the prompt.
Shapes: ``b`` batch, ``n`` positions, ``h`` heads, ``d`` d_head, ``D`` d_model, ``V``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from explorer.nn.capture import Edit

MODES = ("zero", "mean")


@dataclass(frozen=True)
class Ablation:
    """What to knock out: ``heads`` as (layer, head), ``mlps`` and ``layers`` as layer
    indices, each zeroed (``mode="zero"``) or set to its mean (``"mean"``)."""

    heads: tuple[tuple[int, int], ...] = ()
    mlps: tuple[int, ...] = ()
    layers: tuple[int, ...] = ()
    mode: str = "zero"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown ablation mode {self.mode!r}; known: {MODES}")

    @property
    def empty(self) -> bool:
        return not (self.heads or self.mlps or self.layers)

    def names(self, prefix: str = "") -> list[str]:
        """The activations this ablation replaces."""
        names = {f"{prefix}blocks.{layer}.attn.z" for layer, _ in self.heads}
        names |= {f"{prefix}blocks.{layer}.mlp.out" for layer in (*self.mlps, *self.layers)}
        names |= {f"{prefix}blocks.{layer}.attn.out" for layer in self.layers}
        return sorted(names)

    def describe(self) -> str:
        parts = [f"L{layer}H{head}" for layer, head in self.heads]
        parts += [f"L{layer} MLP" for layer in self.mlps]
        parts += [f"L{layer} (whole block)" for layer in self.layers]
        return f"{self.mode} ablation of " + (", ".join(parts) if parts else "nothing")


def _replace_heads(heads: list[int], values: Tensor | None) -> Edit:
    """An edit of ``attn.z`` ``[b, h, n, d]`` setting ``heads`` to 0 or to ``values``
    (``[h, d]``, broadcast over batch and positions)."""
    def edit(z: Tensor) -> Tensor:
        z = z.clone()
        for head in heads:
            z[:, head] = 0 if values is None else values[head].to(z.dtype)
        return z
    return edit


def _replace_all(values: Tensor | None) -> Edit:
    """An edit of a ``[b, n, D]`` output setting it to 0 or to ``values`` ``[D]``."""
    def edit(out: Tensor) -> Tensor:
        return torch.zeros_like(out) if values is None else values.to(out).expand_as(out)
    return edit


def ablation_edits(
    model: nn.Module, ablation: Ablation, reference_ids: Tensor | None = None,
    prefix: str = "", **forward_kwargs,
) -> dict[str, Edit]:
    """Edits that apply ``ablation`` to any run of ``model``.

    Mean ablation takes the means over the positions of ``reference_ids`` ``[1, n]`` (the
    prompt itself, or a reference text), from one forward; ``forward_kwargs`` go to it
    (``decoder_ids`` style arguments are not needed: encoder-decoder models pass them
    positionally through ``reference_ids`` as a tuple)."""
    if ablation.empty:
        return {}
    names = ablation.names(prefix)
    means: dict[str, Tensor] = {}
    if ablation.mode == "mean":
        if reference_ids is None:
            raise ValueError("mean ablation needs reference ids (the prompt or another text)")
        inputs = reference_ids if isinstance(reference_ids, tuple) else (reference_ids,)
        _, cache = model.run_with_cache(*inputs, names=names, **forward_kwargs)
        for name in names:
            value = cache[name][0]  # [h, n, d] or [n, D]
            means[name] = value.mean(1) if name.endswith("attn.z") else value.mean(0)
    edits: dict[str, Edit] = {}
    by_layer: dict[int, list[int]] = {}
    for layer, head in ablation.heads:
        by_layer.setdefault(layer, []).append(head)
    for layer, heads in by_layer.items():
        name = f"{prefix}blocks.{layer}.attn.z"
        edits[name] = _replace_heads(heads, means.get(name))
    for name in names:
        if not name.endswith("attn.z"):
            edits[name] = _replace_all(means.get(name))
    return edits


@dataclass(frozen=True)
class Outcome:
    """A run's next-token distribution after the last position (``top_ids``/``top_probs``
    ``[k]``, ``logprobs_last`` ``[V]``) and its mean next-token loss on the prompt (nats;
    None for encoders, which do not predict the next token)."""

    top_ids: Tensor
    top_probs: Tensor
    logprobs_last: Tensor
    loss: float | None


def outcome_of_logits(logits: Tensor, ids: Tensor | None, k: int = 10,
                      next_token: bool = True) -> Outcome:
    """:class:`Outcome` of logits ``[1, n, V]`` for ``ids`` ``[1, n]``."""
    logprobs = torch.log_softmax(logits[0].float(), -1)  # [n, V]
    top = logprobs[-1].topk(min(k, logprobs.shape[-1]))
    loss = None
    if next_token and ids is not None and ids.shape[1] > 1:
        targets = ids[0, 1:].to(logprobs.device)
        loss = float(-logprobs[:-1].gather(-1, targets[:, None]).mean())
    return Outcome(top.indices.cpu(), top.values.exp().cpu(), logprobs[-1].cpu(), loss)


@torch.no_grad()
def outcome(model: nn.Module, ids: Tensor, edits: dict[str, Edit] | None = None, k: int = 10,
            decoder_ids: Tensor | None = None) -> Outcome:
    """Run ``ids`` ``[1, n]`` (with ``edits``) and summarise it. An encoder-decoder model
    reads ``ids`` with its encoder and ``decoder_ids`` with its decoder (the loss is then
    the decoder's)."""
    if model.cfg.kind == "encoder-decoder":
        if decoder_ids is None:
            raise ValueError("an encoder-decoder model needs decoder_ids")
        return outcome_of_logits(model(ids, decoder_ids, edits=edits), decoder_ids, k)
    logits = model(ids, edits=edits)
    return outcome_of_logits(logits, ids, k, next_token=model.cfg.kind == "decoder")


Metric = Callable[[Tensor], Tensor]


def logit_diff_metric(answer_id: int, distractor_id: int) -> Metric:
    """``logits[:, answer] - logits[:, distractor]`` of last-position logits ``[B, V]``."""
    def metric(logits: Tensor) -> Tensor:
        return (logits[:, answer_id] - logits[:, distractor_id]).float()
    return metric
