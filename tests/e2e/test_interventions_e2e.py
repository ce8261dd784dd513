"""The Interventions page in Chromium, on SmolLM2 with a hostile prompt: clicking the head
map ablates that head (the list and the before/after chart follow), a patching grid runs
and a click on one of its cells shows that patched run; no dialog, no exception, no
injected element anywhere."""

from __future__ import annotations

import urllib.parse

import pytest
from browser_helpers import assert_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

VEGA = '[data-testid="stVegaLiteChart"]'
PLOTLY_TITLE = '[data-testid="stPlotlyChart"] .gtitle'
HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ \\(y\\) مرحبا\u200b"
SHORT_HOSTILE = "<img src=x onerror=alert(1)> $x$"


def panel(page):
    return page.locator('[data-testid="stTabs"] [role="tabpanel"]:visible')


def titles(page) -> list[str]:  # SVG text: text_content, not inner_text
    return [t for t in panel(page).locator(PLOTLY_TITLE).evaluate_all(
        "els => els.map(e => e.textContent)") if t]


def click_until(page, chart, changed, points) -> bool:
    """Click ``chart`` at fractions ``points`` of its box until ``changed()`` holds."""
    box = chart.bounding_box()
    for fx, fy in points:
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_timeout(500)
        wait_idle(page)
        if changed():
            return True
    return False


def test_click_to_ablate_then_patch_with_a_hostile_prompt(app_server, page,
                                                           screenshot_dir) -> None:
    page.set_viewport_size({"width": 1400, "height": 2200})
    query = urllib.parse.urlencode({"model": "smollm2-135m", "prompt": HOSTILE})
    page.goto(f"{app_server['url']}/interventions?{query}")
    head_map = panel(page).locator(VEGA).first
    head_map.locator("canvas, svg").first.wait_for(timeout=180_000)
    wait_idle(page)
    assert page.get_by_text("Pick heads (click them on the map)").first.is_visible()
    # the map's cells fill the left part of the chart (the legend is on the right)
    assert click_until(page, head_map, lambda: "Zero ablation of L" in panel(page).inner_text(),
                       ((0.3, 0.5), (0.45, 0.3), (0.2, 0.7)))
    page.get_by_text("Next token after the prompt: before and after").first.wait_for()
    assert "Logit lens: what the ablation changed" in titles(page)
    assert_no_exception(page)
    page.screenshot(path=str(screenshot_dir / "interventions-ablate.png"), full_page=True)

    page.get_by_role("tab", name="Activation patching").click()
    page.wait_for_timeout(500)
    for label, text in (("Clean prompt", f"{SHORT_HOSTILE} The capital of France is"),
                        ("Corrupted prompt", f"{SHORT_HOSTILE} The capital of Italy is"),
                        ("Answer", " Paris"), ("Distractor", " Rome")):
        box = panel(page).get_by_label(label, exact=False).first
        box.fill(text)
        box.press("Enter")
        wait_idle(page)
    panel(page).get_by_role("button", name="Run the patching grid").click()
    grid = panel(page).locator(VEGA).first
    grid.locator("canvas, svg").first.wait_for(timeout=120_000)
    wait_idle(page)
    before = [t for t in titles(page) if t.startswith("Patched ")]
    assert before, titles(page)
    assert click_until(page, grid, lambda: [t for t in titles(page)
                                            if t.startswith("Patched ")] != before,
                       ((0.2, 0.3), (0.5, 0.6), (0.35, 0.8)))
    assert_no_exception(page)
    main = page.locator('[data-testid="stMain"]')
    assert main.locator('img[src="x"]').count() == 0
    assert main.locator(".katex").count() == 0  # $x$ is not typeset
    page.screenshot(path=str(screenshot_dir / "interventions-patching.png"), full_page=True)
