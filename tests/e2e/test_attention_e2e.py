"""The attention page in Chromium: clicking the head map opens that head; hostile prompts are
shown as text (no dialog, no exception) in tick labels and hovers."""

from __future__ import annotations

import urllib.parse

import pytest
from browser_helpers import assert_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

HEAD_MAP = '[data-testid="stVegaLiteChart"]'
HEATMAP_TITLE = '[data-testid="stPlotlyChart"] .gtitle'
HOSTILE = "<img src=x onerror=alert(1)> <script>alert(1)</script> **bold** $x$ \\(y\\)"


def open_attention(page, url: str, prompt: str | None = None) -> None:
    query = f"?prompt={urllib.parse.quote(prompt)}" if prompt else ""
    page.goto(f"{url}/attention{query}")
    page.wait_for_selector(f"{HEAD_MAP} canvas, {HEAD_MAP} svg", timeout=180_000)
    page.wait_for_selector(HEATMAP_TITLE, timeout=60_000)
    wait_idle(page)


def heatmap_title(page) -> str:
    return page.locator(HEATMAP_TITLE).first.text_content()


def test_clicking_the_head_map_opens_that_head(app_server, page, screenshot_dir) -> None:
    open_attention(page, app_server["url"])
    before = heatmap_title(page)
    assert before.startswith("Layer ")
    page.screenshot(path=str(screenshot_dir / "attention-default.png"), full_page=True)
    box = page.locator(HEAD_MAP).first.bounding_box()
    # Cells fill the left part of the chart (the legend is on the right): try a few points.
    for fx, fy in ((0.3, 0.25), (0.45, 0.5), (0.2, 0.7), (0.35, 0.1)):
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_timeout(500)
        wait_idle(page)
        if heatmap_title(page) != before:
            break
    after = heatmap_title(page)
    assert after != before and after.startswith("Layer "), (before, after)
    layer = after.split("·")[0].strip().removeprefix("Layer ")
    layer_box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Layer").first
    shown = (layer_box.text_content() or "") + " ".join(
        layer_box.locator("input").evaluate_all("els => els.map(e => e.value)"))
    assert shown.replace("Layer", "").strip().startswith(layer), (layer, shown)
    assert_no_exception(page)
    page.screenshot(path=str(screenshot_dir / "attention-clicked.png"), full_page=True)


def test_hostile_prompt_is_literal_text(app_server, page, screenshot_dir) -> None:
    open_attention(page, app_server["url"], HOSTILE)
    assert_no_exception(page)
    texts = page.locator('[data-testid="stPlotlyChart"] text').all_text_contents()
    shown = " ".join(texts)
    for literal in ("0: <", "script", "**", "$", "␣\\"):
        assert literal in shown, (literal, shown[:2000])
    assert page.locator("main img[src='x']").count() == 0
    heatmap = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
    box = heatmap.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.9)
    page.wait_for_timeout(500)
    hover = page.locator(".hoverlayer").first.text_content() or ""
    assert "query:" in hover and "weight:" in hover, hover
    assert "&lt;" not in hover and "&#36;" not in hover  # entities decoded, shown as text
    page.screenshot(path=str(screenshot_dir / "attention-hostile.png"), full_page=True)
    assert_no_exception(page)


def test_query_select_follows_a_new_prompt(app_server, page) -> None:
    """The query-token box shows the current prompt's tokens after the prompt changes (it once
    kept the previous prompt's label for the same position)."""
    open_attention(page, app_server["url"], "One two three four five six seven eight nine ten")
    box = page.get_by_label("Prompt")
    box.fill("Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda")
    box.press("Control+Enter")
    page.wait_for_timeout(500)
    wait_idle(page)
    query_box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Query token").first
    shown = (query_box.text_content() or "") + " ".join(
        query_box.locator("input").evaluate_all("els => els.map(e => e.value)"))
    assert "lambda" in shown and "ten" not in shown, shown
    assert_no_exception(page)
