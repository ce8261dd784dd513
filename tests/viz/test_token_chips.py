"""Token chips: byte-level pieces decoded, invisible characters shown, HTML escaped."""

from __future__ import annotations

from explorer.viz.token_chips import (
    byte_decoder,
    chips_html,
    readable_piece,
    show_invisible,
    token_chips,
)


def test_byte_decoder_is_gpt2_bytes_to_unicode_inverse() -> None:
    decoder = byte_decoder()
    assert len(decoder) == 256 and sorted(decoder.values()) == list(range(256))
    assert decoder["Ġ"] == 0x20 and decoder["Ċ"] == 0x0A and decoder["!"] == 0x21


def test_readable_piece() -> None:
    assert readable_piece("Ġworld", byte_level=True) == "␣world"
    assert readable_piece("Ċ", byte_level=True) == "↵"
    assert readable_piece("Ã©", byte_level=True) == "é"  # two bytes of one character
    assert readable_piece("ĠðŁĺ", byte_level=True) == "␣\\xf0\\x9f\\x98"  # part of an emoji
    assert readable_piece("▁hello", byte_level=False) == "␣hello"
    assert readable_piece("##ing", byte_level=False) == "##ing"


def test_chips_escape_everything() -> None:
    chips = token_chips([5, 9, 2], ["<img", "Ġsrc=x>", "</s>"], special_ids={2}, byte_level=True)
    assert [c.label for c in chips] == ["<img", "␣src=x>", "</s>"]
    assert [c.special for c in chips] == [False, False, True]
    html = chips_html(chips)
    assert "<img" not in html and "&lt;img" in html and "&lt;/s&gt;" in html
    assert html.count('class="tx-chip tx-special"') == 1
    assert "piece &#x27;&lt;img&#x27;" in html  # the title attribute is escaped too


def test_show_invisible_keeps_layout_and_defuses_bidi() -> None:
    assert show_invisible("a\u202eb\u200bc\x07\nd\te") == "a\\u202eb\\u200bc\\x07\nd\te"
    assert show_invisible("שלום 🙂") == "שלום 🙂"
