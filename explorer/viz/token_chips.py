"""Tokens as chips: readable pieces with their ids, as escaped HTML.

Byte-level BPE (Radford et al. 2019) stores each byte as a printable stand-in character
(GPT-2's ``bytes_to_unicode``), so "é" is the piece ``Ã©`` and an emoji is four odd letters.
:func:`readable_piece` maps the stand-ins back to bytes and decodes them as UTF-8; a piece
that holds only part of a character shows its bytes as ``\\xNN``. Then
:func:`explorer.viz.tokens.display_token` makes spaces, newlines and invisible characters
visible. :func:`chips_html` renders the chips: every piece of text in it goes through
``html.escape``, so a token such as ``<img src=x onerror=alert(1)>`` is shown, never run.

Pure: pieces and ids in, strings out (no tokenizer, no streamlit).
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache

from explorer.viz.tokens import display_token


@cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's ``bytes_to_unicode`` inverted: stand-in character -> byte value."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


def readable_piece(piece: str, byte_level: bool) -> str:
    """The label a reader sees for one piece (plain text, not escaped)."""
    if byte_level and piece and all(char in byte_decoder() for char in piece):
        raw = bytes(byte_decoder()[char] for char in piece)
        return display_token(raw.decode("utf-8", errors="backslashreplace"))
    return display_token(piece)


def show_invisible(text: str) -> str:
    """`text` with control and format characters (zero-width, bidi overrides...) written as
    escapes such as ``\\u202e``; newlines and tabs stay. For showing whole texts (a chat
    template's output) where a right-to-left override must not reorder what follows it."""
    return "".join(
        char if char in "\n\t" or unicodedata.category(char) not in ("Cc", "Cf")
        else (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        for char in text
    )


@dataclass(frozen=True)
class TokenChip:
    """One token: its position, id, raw piece, readable label and whether it is special."""

    position: int
    token_id: int
    piece: str
    label: str
    special: bool


def token_chips(
    ids: Sequence[int],
    pieces: Sequence[str],
    special_ids: Collection[int] = (),
    byte_level: bool = False,
) -> list[TokenChip]:
    """Chips for a tokenized text: ``ids[i]`` is the id of ``pieces[i]``."""
    special = set(special_ids)
    return [
        TokenChip(i, int(token_id), piece,
                  display_token(piece) if token_id in special
                  else readable_piece(piece, byte_level),
                  token_id in special)
        for i, (token_id, piece) in enumerate(zip(ids, pieces, strict=True))
    ]


CHIP_CSS = """
<style>
.tx-chips { display: flex; flex-wrap: wrap; gap: 6px; line-height: 1.2; }
.tx-chip { display: inline-flex; flex-direction: column; align-items: center;
  padding: 3px 6px; border-radius: 6px; background: rgba(76,120,168,0.13);
  border: 1px solid rgba(76,120,168,0.35); font-family: ui-monospace, monospace; }
.tx-chip.tx-special { background: rgba(219,39,119,0.12); border-color: rgba(219,39,119,0.55); }
.tx-piece { font-size: 0.95rem; white-space: pre; unicode-bidi: isolate; }
.tx-id { font-size: 0.7rem; opacity: 0.65; }
</style>
"""


def chips_html(chips: Sequence[TokenChip]) -> str:
    """A flex row of chips (piece over id); special tokens tinted. All text is escaped."""
    parts = [CHIP_CSS, '<div class="tx-chips">']
    for chip in chips:
        kind = "tx-chip tx-special" if chip.special else "tx-chip"
        title = f"position {chip.position} · id {chip.token_id} · piece {chip.piece!r}"
        parts.append(
            f'<span class="{kind}" title="{html.escape(title, quote=True)}" dir="auto">'
            f'<span class="tx-piece">{html.escape(chip.label)}</span>'
            f'<span class="tx-id">{chip.token_id}</span></span>'
        )
    parts.append("</div>")
    return "".join(parts)
