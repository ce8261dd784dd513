"""The shared run of a prompt, for every page, and each session's figure memo.

One :class:`~explorer.runs.PromptRun` per (model, weights source, device, dtype, prompt,
decoder text) lives in a process-wide :class:`~explorer.runs.LRUMemo` bounded by entries and
bytes (:data:`RUN_STORE_BYTES`, measured as runs derive views), so the Attention and Layers
pages, and two visitors with the same prompt, read one forward. Figures are memoised per
session in small per-slot :class:`LRUMemo` s in ``st.session_state`` (dropped with the
session). Those are the app's only caches besides ``st.cache_data`` for tokenization.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from explorer.runs import LRUMemo, PromptRun, Tokens, run_prompt
from explorer.serving import GateTimeout
from explorer.ui.gate import VisitorGone, busy_message, heavy_work
from explorer.ui.resources import model_label
from explorer.ui.widgets import chips_for, prompt_box, tokenize

log = logging.getLogger(__name__)

MAX_TOKENS = 1_024  # a run reads at most this many tokens of each text
RUN_STORE_ENTRIES = 8
RUN_STORE_BYTES = 640 * 2**20  # about four long (1,024-token SmolLM2) runs
FIGURE_MEMO_KEY = "figure_memos"
FIGURE_MEMO_SIZES = {"head": 4, "layer": 8, "map": 4, "layers": 12}


@dataclass
class PageRun:
    """A run as pages show it: the run, each sequence's display labels, what was cut."""

    key: str  # identifies (model, prompt) for per-session memos
    run: PromptRun
    labels: dict[str, list[str]]  # "source" / "target" -> "pos: token" display labels
    cut: dict[str, int]  # sequence -> original token count, where it was cut

    def nbytes(self) -> int:
        return self.run.nbytes()

    def stack(self, name: str):
        return self.run.stacks[name]


@st.cache_resource(show_spinner=False)
def run_store() -> LRUMemo:
    """The process-wide store of prompt runs, shared by every session."""
    return LRUMemo(max_entries=RUN_STORE_ENTRIES, max_bytes=RUN_STORE_BYTES)


def prompt_tokens(lm: Any, text: str, limit: int = MAX_TOKENS
                  ) -> tuple[Tokens, list[str], int | None]:
    """(Tokens, display labels, original count when cut) of ``text`` with special tokens."""
    ids, pieces = tokenize(model_label(lm), text, lm.tokenizer)
    cut = len(ids) if len(ids) > limit else None
    ids, pieces = ids[:limit], pieces[:limit]
    chips = chips_for(lm.tokenizer, ids, pieces)
    special = torch.tensor([chip.special for chip in chips], dtype=torch.bool)
    labels = [f"{chip.position}: {chip.label}" for chip in chips]
    return Tokens(torch.tensor(ids, dtype=torch.long), list(pieces), special), labels, cut


def shared_run(lm: Any, text: str, target_text: str | None = None) -> PageRun:
    """The run of ``text`` (and, for encoder-decoder models, ``target_text`` or the text
    itself on the decoder side): one forward per key in the whole process."""
    cfg = lm.config
    target_text = (target_text or text) if cfg.kind == "encoder-decoder" else None
    key = f"{model_label(lm)}|{hash((text, target_text))}"

    def compute() -> PageRun:
        limit = min(MAX_TOKENS, cfg.n_ctx)
        source, source_labels, source_cut = prompt_tokens(lm, text, limit)
        labels, cut = {"source": source_labels}, {}
        if source_cut:
            cut["source"] = source_cut
        target = None
        if target_text is not None:
            target, labels["target"], target_cut = prompt_tokens(lm, target_text, limit)
            if target_cut:
                cut["target"] = target_cut
        with heavy_work("analysis of this prompt"):  # one of a few heavy jobs at a time
            run = run_prompt(lm.model, cfg.kind, cfg.n_heads, source, target)
        return PageRun(key, run, labels, cut)

    return run_store().get((model_label(lm), text, target_text), compute)


def memo_figure(key: tuple, build: Callable[[], Any], slot: str = "layer") -> Any:
    """A figure built once per session for ``key`` (its inputs), kept in a small LRU per
    ``slot``: per-head figures ("head") churn on every head switch and must not push out the
    layer's figures ("layer"), which a head switch reuses. Figures are only read afterwards."""
    memos: dict[str, LRUMemo] = st.session_state.setdefault(FIGURE_MEMO_KEY, {})
    if slot not in memos:
        memos[slot] = LRUMemo(max_entries=FIGURE_MEMO_SIZES.get(slot, 4))
    return memos[slot].get(key, build)


def run_or_stop(lm: Any, text: str, target_text: str | None = None) -> PageRun:
    """The shared run, with a spinner while it computes; stops the page with a clear
    message when the model refuses the text, and warns where a text was cut."""
    with st.spinner("Running the model once over the prompt…"):
        try:
            page_run = shared_run(lm, text, target_text)
        except VisitorGone:  # the tab closed while it waited for a slot: nobody to tell
            st.stop()
        except GateTimeout as exc:
            st.warning(busy_message(exc))
            st.stop()
        except Exception as exc:  # the model or the text may refuse: say so, keep the app
            log.exception("prompt run failed")
            st.error(f"The model could not run this text: {type(exc).__name__}.")
            st.stop()
    for sequence, total in page_run.cut.items():
        st.warning(f"The {sequence} text has {total:,} tokens; only the first "
                   f"{len(page_run.labels[sequence]):,} are analysed.")
    return page_run


def prompt_inputs(lm: Any, page_key: str, decoder_key: str, what: str
                  ) -> tuple[str, str | None]:
    """The page's prompt box and, for an encoder-decoder model, its decoder-text box (empty:
    the prompt). Stops the page with a hint while the prompt is empty."""
    text = prompt_box("Prompt", page_key=page_key, height=90)
    target_text = None
    if lm.config.kind == "encoder-decoder":
        target_text = st.text_input("Decoder text (what the decoder reads; empty: the prompt)",
                                    max_chars=4_000, key=decoder_key) or None
    if not text.strip():
        st.info(f"Type a prompt to see its {what}.")
        st.stop()
    return text, target_text


def run_caption(page_run: PageRun) -> str:
    """How long the prompt's one forward took, which every page showing it shares."""
    n = len(page_run.labels["source"])
    return (f"{n:,} token{'' if n == 1 else 's'} · the model ran once in "
            f"{page_run.run.seconds:.2f} s, shared with every other page showing this prompt.")
