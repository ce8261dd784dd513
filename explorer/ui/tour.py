"""Streamlit glue for the guided tour: the steps for the loaded model's family, the step in
the URL (``?step=N``), Back/Next, the token and head the tour follows, and the traces of
`explorer.runs.tour` each step reads (memoised in the prompt's shared run).

The step texts and charts live in `explorer.ui.tour_steps` (tokens, embeddings, norms,
residual adds, feed-forward), `explorer.ui.tour_steps_attention` (inside attention) and
`explorer.ui.tour_steps_out` (every block, T5's decoder, the output and sampling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import streamlit as st

from explorer.runs.tour import (
    OutputTrace,
    StackTrace,
    encoder_memory,
    output_of,
    trace_stack,
)
from explorer.ui.runs import PageRun
from explorer.ui.state import set_prompt

STEP_PARAM = "step"
POSITION_KEY, HEAD_KEY, SOURCE_KEY = "tour_position", "tour_head", "tour_source_position"


@dataclass
class TourContext:
    """What every step reads: the model, the shared run, the token (``position`` in the
    stream the tour ends on; ``source_position`` in T5's encoder) and the head followed."""

    lm: Any
    page_run: PageRun
    position: int
    head: int
    source_position: int

    @property
    def cfg(self):
        return self.lm.config

    @property
    def run(self):
        return self.page_run.run

    @property
    def two_stacks(self) -> bool:
        return self.cfg.kind == "encoder-decoder"

    @property
    def first_stream(self) -> str:
        """The stream whose block 1 the tour takes apart (T5: the encoder)."""
        return "encoder" if self.two_stacks else "main"

    @property
    def last_stream(self) -> str:
        """The stream the head reads (T5: the decoder)."""
        return "decoder" if self.two_stacks else "main"

    def labels(self, stream: str) -> list[str]:
        return self.page_run.labels["target" if stream == "decoder" else "source"]

    def followed(self, stream: str) -> int:
        return self.source_position if stream == "encoder" else self.position

    def label(self, stream: str) -> str:
        """The followed token's label there (``"3: ␣cat"``), plain text."""
        return self.labels(stream)[self.followed(stream)]

    def trace(self, stream: str | None = None) -> StackTrace:
        stream = stream or self.first_stream
        context = self.memory if stream == "decoder" else None
        return trace_stack(self.run, stream, self.followed(stream), 0, context=context)

    @cached_property
    def memory(self):
        return encoder_memory(self.run)

    @cached_property
    def output(self) -> OutputTrace | None:
        if getattr(self.run.model, "head", None) is None:
            return None
        return output_of(self.run, self.last_stream, self.position)

    def shape(self, *dims: tuple[str, int]) -> str:
        """``[N=9, d_model=576]`` for (name, size) pairs (no thousands separators: a comma
        inside a shape separates dimensions)."""
        return "[" + ", ".join(f"{name}={size}" for name, size in dims) + "]"

    def n(self, stream: str | None = None) -> int:
        return len(self.labels(stream or self.first_stream))


@dataclass(frozen=True)
class Step:
    """One step of the tour: its title and what it draws."""

    key: str
    title: str
    render: Callable[[TourContext], None]


def steps_for(cfg: Any) -> list[Step]:
    """The steps for this model's family, in order (`explorer.ui.tour_steps*`)."""
    from explorer.ui.tour_steps import block_steps
    from explorer.ui.tour_steps_out import decoder_steps, output_steps

    steps = block_steps(cfg)
    if cfg.kind == "encoder-decoder":
        steps += decoder_steps(cfg)
    return steps + output_steps(cfg)


def current_step(n_steps: int) -> int:
    """The step in the URL (1-based); anything missing, malformed or out of range is 1."""
    raw = st.query_params.get(STEP_PARAM, "1")
    try:
        step = int(str(raw).strip())
    except ValueError:
        return 1
    return step if 1 <= step <= n_steps else 1


def go_to(step: int) -> None:
    st.query_params[STEP_PARAM] = str(step)


def navigation(steps: list[Step], step: int, where: str) -> None:
    """Back / "Step k of n" / Next, at the top or bottom of the page."""
    back, middle, forward = st.columns([1, 4, 1])
    back.button("← Back", disabled=step <= 1, key=f"tour_back_{where}",
                on_click=go_to, args=(step - 1,), width="stretch")
    forward.button("Next →", disabled=step >= len(steps), key=f"tour_next_{where}",
                   on_click=go_to, args=(step + 1,), type="primary", width="stretch")
    if where == "top":
        middle.progress(step / len(steps), text=f"Step {step} of {len(steps)}")
    else:
        following = steps[step].title if step < len(steps) else "the end of the tour"
        middle.caption(f"Next: {following}")


def step_menu(steps: list[Step], step: int) -> None:
    """A compact list to jump to any step (it writes the URL like Next does)."""
    def jump() -> None:
        go_to(int(st.session_state["tour_jump"]))

    st.session_state["tour_jump"] = step
    st.selectbox("Jump to a step", list(range(1, len(steps) + 1)), key="tour_jump",
                 format_func=lambda i: f"{i}. {steps[i - 1].title}", on_change=jump,
                 label_visibility="collapsed")


def _default_position(lm: Any, labels: list[str], ids: list[int], decoder: bool) -> int:
    """The last token of a causal stream; BERT's first [MASK] (else the last real token)."""
    mask_id = getattr(lm.tokenizer, "mask_token_id", None)
    if not decoder and lm.config.kind == "encoder" and mask_id in ids:
        return ids.index(mask_id)
    if lm.config.kind == "decoder" or decoder:
        return len(labels) - 1
    special = set(getattr(lm.tokenizer, "all_special_ids", ()))
    real = [i for i, t in enumerate(ids) if t not in special]
    words = [i for i in real if any(c.isalnum() for c in labels[i].partition(": ")[2])]
    return (words or real or [len(labels) - 1])[-1]


def token_picker(lm: Any, page_run: PageRun, sequence: str, key: str, label: str,
                 column: Any) -> int:
    """A select box over the tokens of one sequence; resets when the prompt changes."""
    labels = page_run.labels[sequence]
    ids = page_run.run.streams["decoder" if sequence == "target" else
                               ("encoder" if page_run.run.kind == "encoder-decoder"
                                else "main")].tokens.ids.tolist()
    remembered = f"{key}_for"
    if st.session_state.get(remembered) != page_run.key or \
            st.session_state.get(key, -1) not in range(len(labels)):
        st.session_state[key] = _default_position(lm, labels, ids, sequence == "target")
        st.session_state[remembered] = page_run.key
    return column.selectbox(label, list(range(len(labels))), key=key,
                            format_func=lambda i: labels[i])


def mask_hint(lm: Any, page_run: PageRun) -> None:
    """For a masked-LM (BERT with its head) whose prompt has no mask token: say what the
    model was trained for and offer an example with one."""
    tokenizer = lm.tokenizer
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if not lm.config.mlm_head or mask_id is None:
        return
    if mask_id in page_run.run.streams["main"].tokens.ids.tolist():
        return
    example = f"The capital of France is {tokenizer.mask_token}."

    def use_example() -> None:
        st.session_state["prompt_box_tour"] = example
        set_prompt(example)

    info, button = st.columns([4, 1])
    info.info(f"BERT was trained to fill in hidden words: put {tokenizer.mask_token} in the "
              "prompt and the tour follows it to the model's guess.")
    button.button("Use an example", key="tour_mask_example", on_click=use_example)


def focus_controls(lm: Any, page_run: PageRun) -> TourContext:
    """The token (and, for T5, the encoder token) and the head the tour follows."""
    cfg = lm.config
    columns = st.columns([2, 2, 1] if cfg.kind == "encoder-decoder" else [3, 1])
    source = 0
    if cfg.kind == "encoder-decoder":
        source = token_picker(lm, page_run, "source", SOURCE_KEY, "Encoder token to follow",
                              columns[0])
        position = token_picker(lm, page_run, "target", POSITION_KEY,
                                "Decoder token to follow", columns[1])
    else:
        position = token_picker(lm, page_run, "source", POSITION_KEY, "Token to follow",
                                columns[0])
    if st.session_state.get(HEAD_KEY, 0) not in range(cfg.n_heads):  # another model's head
        st.session_state[HEAD_KEY] = 0
    head = columns[-1].selectbox("Head", list(range(cfg.n_heads)), key=HEAD_KEY,
                                 help="Attention steps follow this head; the others work "
                                      "the same way in parallel.")
    return TourContext(lm, page_run, position, head, source)
