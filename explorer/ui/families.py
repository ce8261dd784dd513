"""Where the Interventions page reads and edits each family of model.

- **Read-out**: a decoder predicts the token after the prompt; T5's decoder the token after
  the decoder text; an encoder with a masked-LM head (BERT) the token at its first mask
  token (``[MASK]``), or at the last position when the prompt has none.
- **Stacks**: decoder-only and encoder-only models have one (``"self"``); T5 has its
  ``"encoder"``, its ``"decoder"`` self-attention and the decoder's ``"cross"``-attention,
  each with its own layers and heads. :data:`STACK_EDITS` maps a stack to the activation-name
  prefix of its ablations.
- **Edited runs**: an intervention's run is a :class:`~explorer.runs.PromptRun` of the same
  tokens with edits (``run_prompt(edits=)``), read by the same views as the shared run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from explorer.nn.capture import Edit
from explorer.runs import STACKS_BY_KIND, PromptRun, run_prompt
from explorer.ui.runs import PageRun
from explorer.ui.url_state import in_url

# stack -> (activation-name prefix, heads are cross-attention heads)
STACK_EDITS: dict[str, tuple[str, bool]] = {
    "self": ("", False), "encoder": ("encoder.", False), "decoder": ("decoder.", False),
    "cross": ("decoder.", True),
}
EDITED_RUN_BYTES = 8 * 2**20  # derived views kept by an intervention's run


@dataclass(frozen=True)
class Readout:
    """Where the model's prediction is read: ``sequence`` names the page run's labels
    (``"source"`` or ``"target"``), ``position`` the position there; ``title`` says it."""

    sequence: str
    position: int
    title: str


def mask_position(lm: Any, ids: torch.Tensor) -> int | None:
    """The first position of the tokenizer's mask token in ``ids`` ``[N]``, or None."""
    mask_id = getattr(lm.tokenizer, "mask_token_id", None)
    if mask_id is None:
        return None
    found = (ids.cpu() == int(mask_id)).nonzero()
    return int(found[0, 0]) if len(found) else None


def readout(lm: Any, page_run: PageRun) -> Readout:
    """Where the page reads ``page_run``'s prediction (see the module docstring)."""
    kind = lm.config.kind
    if kind == "encoder-decoder":
        return Readout("target", len(page_run.labels["target"]) - 1,
                       "Next decoder token after the decoder text")
    last = len(page_run.labels["source"]) - 1
    if kind == "decoder":
        return Readout("source", last, "Next token after the prompt")
    masked = mask_position(lm, page_run.run.streams["main"].tokens.ids)
    if masked is None:
        return Readout("source", last, "The masked-LM head's prediction at the last position "
                                       "(put a mask token in the prompt to read one there)")
    return Readout("source", masked, f"The masked-LM head's prediction at the mask token "
                                     f"(position {masked})")


def run_inputs(lm: Any, page_run: PageRun) -> tuple[torch.Tensor, ...]:
    """The run's token ids as forward arguments, ``[1, N]`` each on the model's device: the
    prompt, or T5's encoder and decoder ids."""
    streams = page_run.run.streams
    names = ("encoder", "decoder") if lm.config.kind == "encoder-decoder" else ("main",)
    return tuple(streams[name].tokens.ids[None].to(lm.device) for name in names)


def stack_names(lm: Any) -> list[str]:
    return list(STACKS_BY_KIND[lm.config.kind])


def stack_label(name: str, lm: Any) -> str:
    return STACKS_BY_KIND[lm.config.kind][name].label


def stack_choice(lm: Any, label: str, key: str, names: list[str] | None = None,
                 on_change: Any = None) -> str:
    """A radio over the model's stacks when it has several (T5); ``"self"`` otherwise."""
    names = names or stack_names(lm)
    if len(names) == 1:
        return names[0]
    if st.session_state.get(key) not in names:
        st.session_state[key] = names[0]
    return st.radio(label, names, **in_url(key), horizontal=True, on_change=on_change,
                    format_func=lambda name: stack_label(name, lm))


def edited_run(lm: Any, page_run: PageRun, edits: dict[str, Edit]) -> PromptRun:
    """The page's tokens run again with ``edits`` (call inside :func:`heavy_work`)."""
    run = page_run.run
    streams = run.streams
    if run.kind == "encoder-decoder":
        source, target = streams["encoder"].tokens, streams["decoder"].tokens
    else:
        source, target = streams["main"].tokens, None
    return run_prompt(lm.model, run.kind, lm.config.n_heads, source, target,
                      derived_bytes=EDITED_RUN_BYTES, edits=edits)
