"""Shared widgets: the prompt box (length limit, cut notice), token chips, markdown escaping.

Everything a user typed or a tokenizer produced is shown as text: markdown specials are
backslash-escaped before ``st.markdown``-like calls, chip HTML is built from
``html.escape``d labels (`explorer.viz.token_chips`) and rendered by ``st.html``, which
sanitises it again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import streamlit as st

from explorer.models.tokenizer import tokenizer_lock
from explorer.ui.gate import server_limits
from explorer.ui.state import get_prompt, set_prompt
from explorer.viz.token_chips import TokenChip, chips_html, token_chips

MAX_PROMPT_CHARS = 12_000  # enough for 1,024 tokens of prose or code; pages cut by tokens
# (a server may lower it: EXPLORER_MAX_PROMPT_CHARS, see explorer.serving.limits)
MAX_CHIPS = 1_000
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:=&])")


def escape_markdown(text: str) -> str:
    """Text that ``st.markdown`` shows literally (no bold, links, LaTeX, HTML, emoji codes)."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def prompt_box(
    label: str = "Text",
    page_key: str = "prompt",
    max_chars: int = MAX_PROMPT_CHARS,
    height: int = 120,
) -> str:
    """A text area shared by every page (same text everywhere, kept in the URL).

    Returns at most `max_chars` characters (and never more than the server's
    ``EXPLORER_MAX_PROMPT_CHARS``); when the text was longer a warning says so.
    """
    max_chars = min(max_chars, server_limits().max_prompt_chars)
    widget_key = f"prompt_box_{page_key}"
    if widget_key not in st.session_state:
        st.session_state[widget_key] = get_prompt()

    def remember() -> None:
        set_prompt(st.session_state[widget_key])

    text = st.text_area(label, key=widget_key, on_change=remember, height=height)
    if len(text) > max_chars:
        st.warning(
            f"The text has {len(text):,} characters; only the first {max_chars:,} are used."
        )
        text = text[:max_chars]
    return text


def is_byte_level(tokenizer: Any) -> bool:
    """Whether the tokenizer is byte-level BPE (GPT-2 style ``Ġ`` pieces)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is not None and "ByteLevel" in repr(decoder):
        return True
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode(" a b", add_special_tokens=False))
    return any(piece.startswith("Ġ") for piece in pieces)


@st.cache_data(max_entries=64, show_spinner=False)
def tokenize(model_label: str, text: str, _tokenizer: Any) -> tuple[list[int], list[str]]:
    """(ids, pieces) of `text` with the tokenizer's special tokens (cached per model)."""
    with tokenizer_lock(_tokenizer):  # one tokenizer serves every session's thread
        ids = [int(i) for i in _tokenizer(text, add_special_tokens=True)["input_ids"]]
        return ids, list(_tokenizer.convert_ids_to_tokens(ids))


def chips_for(tokenizer: Any, ids: Sequence[int], pieces: Sequence[str]) -> list[TokenChip]:
    return token_chips(ids, pieces, special_ids=set(tokenizer.all_special_ids),
                       byte_level=is_byte_level(tokenizer))


def render_token_chips(chips: Sequence[TokenChip], limit: int = MAX_CHIPS) -> None:
    """Chips for at most `limit` tokens, with a notice when more were left out."""
    if len(chips) > limit:
        st.info(f"Showing the first {limit:,} of {len(chips):,} tokens.")
    if chips:
        st.html(chips_html(chips[:limit]))
    else:
        st.caption("No tokens.")


def plotly_clicked_x(event: Any) -> int | None:
    """The x (an int) of the first point selected in a Plotly chart's selection state (from
    ``st.plotly_chart(..., on_select="rerun", key=...)``), or None."""
    try:
        points = event["selection"]["points"]
        return int(points[0]["x"]) if points else None
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def is_new_click(value: Any, seen_key: str) -> bool:
    """Whether a chart click ``value`` differs from the last one seen (and remember it).

    A chart's selection stays in its state across reruns, so only a new click may move the
    widgets it drives; otherwise a widget changed after the click would be pulled back by it
    on every rerun.
    """
    if value == st.session_state.get(seen_key):
        return False
    st.session_state[seen_key] = value
    return True
