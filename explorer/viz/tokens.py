"""Readable, unique and safe token labels for charts.

Tokenizers return raw *pieces*: byte-level BPE (GPT-2, Radford et al. 2019; SmolLM2, Llama 3)
spells a space as ``Ġ`` and a newline as ``Ċ``; SentencePiece (Kudo & Richardson 2018) spells a
word-initial space as ``▁`` and unknown bytes as ``<0x0A>``. :func:`display_token` turns a
piece into a label a reader can see, :func:`unique_labels` makes labels distinct (plotly
merges equal category labels into one row), and :func:`escape_for_plotly` makes any text
safe to put in plotly titles, axis labels and hover text, which plotly reads as a small
subset of HTML (and as TeX between ``$`` signs).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

# Byte-level BPE maps bytes 0x00-0x20 to U+0100-U+0120 (GPT-2 `bytes_to_unicode`). Only the
# whitespace ones are rewritten: the rest are real letters in some languages (Maltese Ġ, Ċ...).
_PIECE_MARKERS = {
    "Ġ": "␣",  # byte-level space
    "Ċ": "↵",  # byte-level newline
    "ĉ": "⇥",  # byte-level tab
    "č": "␍",  # byte-level carriage return
    "▁": "␣",  # SentencePiece word-initial space
}
_VISIBLE_CHARS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
# Categories shown as escapes: control, format (zero-width, bidi overrides), separators other
# than a plain space, unassigned and private-use code points.
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}
EMPTY_TOKEN = "∅"

# Plotly converts &lt; &gt; &amp; and numeric entities only (not &quot;), so quotes use
# numeric ones. `$` becomes &#36; so no pair of dollar signs can trigger MathJax.
_PLOTLY_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;", "$": "&#36;"}
)


def _visible_char(char: str) -> str:
    if char in _VISIBLE_CHARS:
        return _VISIBLE_CHARS[char]
    if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
        code = ord(char)
        if code < 0x100:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    return char


def display_token(piece: str) -> str:
    """A readable label for one tokenizer piece.

    Spaces show as ``␣`` (``Ġ``/``▁`` markers included), newlines as ``↵``, tabs as ``⇥``,
    SentencePiece byte-fallback pieces ``<0xNN>`` as the character they stand for, and other
    invisible characters (controls, zero-width, bidi overrides, odd spaces) as escapes such
    as ``\\u200b``. The empty piece shows as ``∅``. The label is plain text, not yet escaped.
    """
    byte = _BYTE_FALLBACK.match(piece)
    if byte:
        value = int(byte.group(1), 16)
        return _visible_char(chr(value)) if value < 0x80 else f"\\x{value:02x}"
    if not piece:
        return EMPTY_TOKEN
    return "".join(_visible_char(_PIECE_MARKERS.get(char, char)) for char in piece)


def unique_labels(pieces: Sequence[str]) -> list[str]:
    """Position-prefixed display labels, ``f"{i}: {display_token(piece)}"``.

    Plotly merges category labels that are equal, so "the" at positions 3 and 9 would share
    one row; the position prefix keeps every label distinct and tells the reader where the
    token is. Labels are plain text: escape them with :func:`escape_for_plotly` for plotly.
    """
    return [f"{i}: {display_token(piece)}" for i, piece in enumerate(pieces)]


def escape_for_plotly(text: str) -> str:
    """Escape text for plotly titles, tick labels and hover text.

    Plotly renders ``<b>``, ``<br>``, ``<a href>``... in these strings and typesets text
    between ``$`` signs with MathJax, so ``& < > " '`` become entities and ``$`` becomes
    ``&#36;``. Plotly decodes the entities when drawing, so the reader sees the original
    characters; markdown such as ``**bold**`` is not interpreted by plotly and passes through.
    """
    return str(text).translate(_PLOTLY_ESCAPES)


def plotly_title(text: str, note: str = "") -> dict[str, Any]:
    """A plotly layout title (escaped), with ``note`` as its escaped subtitle when given."""
    title: dict[str, Any] = {"text": escape_for_plotly(text)}
    if note:
        title["subtitle"] = {"text": escape_for_plotly(note)}
    return title
