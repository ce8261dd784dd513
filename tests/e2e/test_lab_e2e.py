"""The lab pages in Chromium on SmolLM2: each renders every chart without an exception; moving
the sqrt(d_k) slider redraws its chart; a hostile token text in the attention example shows
literally in the charts and never runs (the page fixture fails on any dialog)."""

from __future__ import annotations

import pytest
from browser_helpers import assert_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ \u202eevil\u200b"
CHART = '[data-testid="stPlotlyChart"]'


def open_page(page, app_server, path: str, charts: int) -> None:
    page.set_viewport_size({"width": 1400, "height": 2200})
    page.goto(f"{app_server['url']}/{path}")
    wait_idle(page, 240_000)
    page.wait_for_function(f"document.querySelectorAll('{CHART}').length >= {charts}",
                           timeout=120_000)
    assert_no_exception(page)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0


def chart_texts(page, contains: str) -> list[str]:
    return page.locator(f"{CHART} text").filter(has_text=contains).evaluate_all(
        "nodes => nodes.map(n => n.textContent)")


def test_lab_pages(page, app_server, screenshot_dir) -> None:
    open_page(page, app_server, "lab-attention", 12)
    page.screenshot(path=str(screenshot_dir / "lab-attention.png"), full_page=True)

    # the sqrt(d_k) slider: one step right (64 -> 128) redraws the example query's chart
    title = page.locator(f"{CHART} .gtitle").filter(has_text="One query")
    assert title.text_content() == "One query's weights at d_k = 64"
    page.locator('input[type="range"][aria-label="d_k"]').press("ArrowRight")
    page.wait_for_timeout(500)
    wait_idle(page)
    assert title.text_content() == "One query's weights at d_k = 128"
    assert "lab_scale_dk=128" in page.url  # the choice is in the link

    # hostile tokens: literal tick labels, nothing interpreted
    box = page.get_by_label("Tokens (separated by spaces)", exact=True)
    box.fill(HOSTILE)
    box.press("Enter")
    page.wait_for_timeout(500)
    wait_idle(page)
    assert_no_exception(page)
    assert "0: <img" in chart_texts(page, "0: <img")
    assert "3: **bold**" in chart_texts(page, "bold")
    assert "4: $x$" in chart_texts(page, "4: $")
    assert page.locator("img[src='x']").count() == 0
    page.screenshot(path=str(screenshot_dir / "lab-attention-hostile.png"), full_page=True)

    open_page(page, app_server, "lab-architecture", 4)
    page.get_by_role("button", name="Measure on this machine").click()
    page.wait_for_timeout(500)
    wait_idle(page)
    page.locator(f"{CHART} .gtitle").filter(has_text="Time of one layer").wait_for()
    assert_no_exception(page)
    page.screenshot(path=str(screenshot_dir / "lab-architecture.png"), full_page=True)

    # a link with a choice opens with it
    open_page(page, app_server, "lab-attention?lab_scale_dk=256", 12)
    assert page.locator(f"{CHART} .gtitle").filter(has_text="One query").text_content() == (
        "One query's weights at d_k = 256")

    open_page(page, app_server, "lab-cost", 2)
    assert page.get_by_text("equals its real count").count() == 1
    page.screenshot(path=str(screenshot_dir / "lab-cost.png"), full_page=True)
