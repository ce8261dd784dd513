"""explorer.ui.widgets helpers that need no running app: markdown escaping, chart clicks."""

from __future__ import annotations

import pytest

from explorer.ui.widgets import escape_markdown, plotly_clicked_x


@pytest.mark.parametrize(("event", "x"), [
    ({"selection": {"points": [{"x": 3, "y": 0.4, "curve_number": 0}]}}, 3),
    ({"selection": {"points": [{"x": 7.0}, {"x": 7.0, "curve_number": 1}]}}, 7),
    ({"selection": {"points": []}}, None),
    ({"selection": {}}, None),
    (None, None),
    ({"selection": {"points": [{"x": "not a step"}]}}, None),
])
def test_plotly_clicked_x(event, x) -> None:
    assert plotly_clicked_x(event) == x


def test_escape_markdown_keeps_text_literal() -> None:
    assert escape_markdown("**bold** $x$ <b>") == r"\*\*bold\*\* \$x\$ \<b\>"
