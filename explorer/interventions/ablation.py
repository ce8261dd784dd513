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
from explorer.runs import PromptRun, final_logprobs, next_token_loss

MODES = ("zero", "mean")
PREFIXES = ("", "encoder.", "decoder.")


@dataclass(frozen=True)
class Ablation:
    """What to knock out: ``heads`` as (layer, head), ``mlps`` and ``layers`` as layer
    indices, each zeroed (``mode="zero"``) or set to its mean (``"mean"``).

    ``prefix`` names the stack of an encoder-decoder model (``"encoder."`` or
    ``"decoder."``; empty for the one stack of the others); ``cross`` makes the heads the
    decoder's cross-attention heads (``cross_attn.z``) instead of its self-attention's."""

    heads: tuple[tuple[int, int], ...] = ()
    mlps: tuple[int, ...] = ()
    layers: tuple[int, ...] = ()
    mode: str = "zero"
    prefix: str = ""
    cross: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown ablation mode {self.mode!r}; known: {MODES}")
        if self.prefix not in PREFIXES:
            raise ValueError(f"unknown stack prefix {self.prefix!r}; known: {PREFIXES}")
        if self.cross and self.prefix != "decoder.":
            raise ValueError("cross-attention heads are the decoder's (prefix 'decoder.')")

    @property
    def empty(self) -> bool:
        return not (self.heads or self.mlps or self.layers)

    @property
    def head_activation(self) -> str:
        """The activation (in a block) a head ablation replaces a slice of."""
        return "cross_attn.z" if self.cross else "attn.z"

    def names(self) -> list[str]:
        """The activations this ablation replaces."""
        prefix = self.prefix
        names = {f"{prefix}blocks.{layer}.{self.head_activation}" for layer, _ in self.heads}
        names |= {f"{prefix}blocks.{layer}.mlp.out" for layer in (*self.mlps, *self.layers)}
        names |= {f"{prefix}blocks.{layer}.attn.out" for layer in self.layers}
        # a whole decoder block includes its cross-attention
        names |= {f"{prefix}blocks.{layer}.cross_attn.out" for layer in self.layers
                  if prefix == "decoder."}
        return sorted(names)

    def describe(self) -> str:
        where = {"": "", "encoder.": "encoder ", "decoder.": "decoder "}[self.prefix]
        kind = "cross-attention head " if self.cross else ""
        parts = [f"{where}{kind}L{layer}H{head}" for layer, head in self.heads]
        parts += [f"{where}L{layer} MLP" for layer in self.mlps]
        parts += [f"{where}L{layer} (whole block)" for layer in self.layers]
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
    model: nn.Module, ablation: Ablation, reference_ids: Tensor | tuple | None = None,
    **forward_kwargs,
) -> dict[str, Edit]:
    """Edits that apply ``ablation`` to any run of ``model``.

    Mean ablation takes the means over the positions of ``reference_ids`` ``[1, n]`` (the
    prompt itself, or a reference text), from one forward; ``forward_kwargs`` go to it. An
    encoder-decoder model takes ``(encoder_ids, decoder_ids)`` as ``reference_ids``."""
    if ablation.empty:
        return {}
    names = ablation.names()
    means: dict[str, Tensor] = {}
    if ablation.mode == "mean":
        if reference_ids is None:
            raise ValueError("mean ablation needs reference ids (the prompt or another text)")
        inputs = reference_ids if isinstance(reference_ids, tuple) else (reference_ids,)
        _, cache = model.run_with_cache(*inputs, names=names, **forward_kwargs)
        for name in names:
            value = cache[name][0]  # [h, n, d] or [n, D]
            means[name] = value.mean(1) if name.endswith(".z") else value.mean(0)
    edits: dict[str, Edit] = {}
    by_layer: dict[int, list[int]] = {}
    for layer, head in ablation.heads:
        by_layer.setdefault(layer, []).append(head)
    for layer, heads in by_layer.items():
        name = f"{ablation.prefix}blocks.{layer}.{ablation.head_activation}"
        edits[name] = _replace_heads(heads, means.get(name))
    for name in names:
        if not name.endswith(".z"):
            edits[name] = _replace_all(means.get(name))
    return edits


@dataclass(frozen=True)
class Outcome:
    """A run's output distribution at its read-out position (the last one, or an encoder's
    masked token): ``top_ids``/``top_probs`` ``[k]``, ``logprobs_last`` ``[V]``; and its mean
    next-token loss on the prompt (nats; None for encoders, which do not predict the next
    token)."""

    top_ids: Tensor
    top_probs: Tensor
    logprobs_last: Tensor
    loss: float | None


def outcome_of_logits(logits: Tensor, ids: Tensor | None, k: int = 10,
                      next_token: bool = True, position: int = -1) -> Outcome:
    """:class:`Outcome` of logits ``[1, n, V]`` for ``ids`` ``[1, n]``, read at
    ``position``."""
    logprobs = torch.log_softmax(logits[0].float(), -1)  # [n, V]
    top = logprobs[position].topk(min(k, logprobs.shape[-1]))
    loss = None
    if next_token and ids is not None and ids.shape[1] > 1:
        targets = ids[0, 1:].to(logprobs.device)
        loss = float(-logprobs[:-1].gather(-1, targets[:, None]).mean())
    return Outcome(top.indices.cpu(), top.values.exp().cpu(), logprobs[position].cpu(), loss)


@torch.no_grad()
def outcome(model: nn.Module, ids: Tensor, edits: dict[str, Edit] | None = None, k: int = 10,
            decoder_ids: Tensor | None = None, position: int = -1) -> Outcome:
    """Run ``ids`` ``[1, n]`` (with ``edits``) and summarise it at ``position``. An
    encoder-decoder model reads ``ids`` with its encoder and ``decoder_ids`` with its
    decoder (the loss and the position are then the decoder's)."""
    if model.cfg.kind == "encoder-decoder":
        if decoder_ids is None:
            raise ValueError("an encoder-decoder model needs decoder_ids")
        return outcome_of_logits(model(ids, decoder_ids, edits=edits), decoder_ids, k,
                                 position=position)
    logits = model(ids, edits=edits)
    return outcome_of_logits(logits, ids, k, next_token=model.cfg.kind == "decoder",
                             position=position)


def outcome_of_run(run: PromptRun, position: int = -1, k: int = 10) -> Outcome:
    """:class:`Outcome` of a shared (or edited) run at ``position`` of its output stream,
    read off the run's last residual: no forward."""
    logprobs = final_logprobs(run, position)
    top = logprobs.topk(min(k, logprobs.shape[-1]))
    return Outcome(top.indices, top.values.exp(), logprobs, next_token_loss(run))


Metric = Callable[[Tensor], Tensor]


def logit_diff_metric(answer_id: int, distractor_id: int) -> Metric:
    """``logits[:, answer] - logits[:, distractor]`` of last-position logits ``[B, V]``."""
    def metric(logits: Tensor) -> Tensor:
        return (logits[:, answer_id] - logits[:, distractor_id]).float()
    return metric
