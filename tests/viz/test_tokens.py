"""Token labels: readable markers, unique labels, and escaping for plotly."""

import pytest

from explorer.viz.tokens import display_token, escape_for_plotly, unique_labels


@pytest.mark.parametrize(
    ("piece", "label"),
    [
        ("Ġthe", "␣the"),  # byte-level BPE space
        ("ĊĊ", "↵↵"),  # byte-level newlines
        ("▁Hello", "␣Hello"),  # SentencePiece space
        (" the", "␣the"),
        ("a\nb\tc", "a↵b⇥c"),
        ("<0x0A>", "↵"),  # SentencePiece byte fallback
        ("<0xE2>", "\\xe2"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("bidi\u202eoverride", "bidi\\u202eoverride"),
        ("nul\x00", "nul\\x00"),
        ("", "∅"),
        ("café", "café"),
    ],
)
def test_display_token(piece, label):
    assert display_token(piece) == label


def test_unique_labels_prefix_position():
    assert unique_labels(["the", "Ġcat", "the"]) == ["0: the", "1: ␣cat", "2: the"]


def test_escape_for_plotly_hostile_html():
    assert escape_for_plotly("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert escape_for_plotly("<script>alert('x')</script>") == (
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
    )
    assert escape_for_plotly('a "b" & c') == "a &#34;b&#34; &amp; c"


def test_escape_for_plotly_markdown_literal_and_tex_guarded():
    assert escape_for_plotly("**bold** _it_ # h") == "**bold** _it_ # h"
    escaped = escape_for_plotly("$x^2$")
    assert "$" not in escaped and escaped == "&#36;x^2&#36;"
