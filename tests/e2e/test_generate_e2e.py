"""The generate page in Chromium: tokens stream in while the model writes, Stop keeps the tokens
so far, a step's candidates and attention show, hostile prompts stay text."""

from __future__ import annotations

import urllib.parse

import pytest
from browser_helpers import assert_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

TOKEN = ".gen-tok"
HOSTILE = "<img src=x onerror=alert(1)> <script>alert(1)</script> **bold** $x$"


def open_generate(page, url: str, prompt: str) -> None:
    page.goto(f"{url}/generate?prompt={urllib.parse.quote(prompt)}")
    page.get_by_role("button", name="Generate").wait_for(timeout=180_000)
    wait_idle(page)


def set_max_new(page, value: int) -> None:
    box = page.get_by_label("Max new tokens")
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def metric(page, label: str) -> str:
    card = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return card.locator('[data-testid="stMetricValue"]').text_content().strip()


def test_tokens_stream_then_step_details(app_server, page, screenshot_dir) -> None:
    open_generate(page, app_server["url"], "The capital of France is")
    set_max_new(page, 40)
    page.get_by_role("button", name="Generate").click()
    # The click's rerun starts asynchronously: wait for it before sampling, or the first
    # sample can still see the previous idle state and stop at once.
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="running"]',
                           timeout=30_000)
    counts = []
    for _ in range(400):  # sample the token count while the script runs
        counts.append(page.locator(TOKEN).count())
        if page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').count():
            break
        page.wait_for_timeout(50)
    wait_idle(page)
    partial = sorted({c for c in counts if 0 < c < 40})
    assert len(partial) >= 2, f"tokens did not stream: counts seen {sorted(set(counts))}"
    n = page.locator(TOKEN).count()
    assert int(metric(page, "Tokens")) == n
    assert (n, metric(page, "Finished")) == (40, "token limit") or metric(
        page, "Finished") == "end of text"
    assert float(metric(page, "Tokens / s")) > 0
    assert "Paris" in page.locator(".gen-stream").text_content()
    title = page.locator(TOKEN).first.get_attribute("title")
    assert title.startswith("step 0: p = ") and "entropy" in title
    charts = page.locator('[data-testid="stPlotlyChart"]')
    assert charts.count() == 4  # timeline, candidates, context attention, growing map
    assert "Top candidates" in charts.nth(1).text_content()
    assert_no_exception(page)
    page.screenshot(path=str(screenshot_dir / "generate-done.png"), full_page=True)
    charts.nth(1).scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / "generate-step.png"))
    charts.nth(3).scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / "generate-map.png"))


def test_stop_keeps_the_tokens_so_far(app_server, page, screenshot_dir) -> None:
    open_generate(page, app_server["url"], "Once upon a time")
    set_max_new(page, 256)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(f"document.querySelectorAll('{TOKEN}').length >= 5",
                           timeout=120_000)
    page.get_by_role("button", name="Stop").click()
    wait_idle(page)
    kept = page.locator(TOKEN).count()
    assert 5 <= kept < 256
    assert metric(page, "Finished") == "stopped"
    assert int(metric(page, "Tokens")) == kept
    assert_no_exception(page)
    page.screenshot(path=str(screenshot_dir / "generate-stopped.png"), full_page=True)


def step_caption(page) -> str:
    return page.get_by_text("p(chosen) =").first.text_content()


def test_clicking_the_timeline_picks_a_step(app_server, page, screenshot_dir) -> None:
    open_generate(page, app_server["url"], "The capital of France is")
    set_max_new(page, 12)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_timeout(500)
    wait_idle(page)
    assert step_caption(page).startswith("Step 11:")  # the newest step first
    timeline = page.locator('[data-testid="stPlotlyChart"]').first
    timeline.scroll_into_view_if_needed()
    timeline.locator(".scatterlayer .trace").first.locator(".points path").nth(3).click(
        force=True)
    page.wait_for_timeout(500)
    wait_idle(page)
    assert step_caption(page).startswith("Step 3:")
    # The slider stays free: moving it is not pulled back by the old click.
    step_slider = page.locator('[data-testid="stSlider"]').filter(has_text="Step")
    step_slider.get_by_role("slider").press("ArrowRight")
    page.wait_for_timeout(500)
    wait_idle(page)
    assert step_caption(page).startswith("Step 4:")
    assert_no_exception(page)
    page.screenshot(path=str(screenshot_dir / "generate-timeline-click.png"))


def test_hostile_prompt_is_shown_as_text(app_server, page, screenshot_dir) -> None:
    open_generate(page, app_server["url"], HOSTILE)
    set_max_new(page, 4)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_timeout(500)
    wait_idle(page)
    stream = page.locator(".gen-stream")
    assert "<img src=x onerror=alert(1)>" in stream.text_content()
    assert stream.locator("img, script").count() == 0
    assert_no_exception(page)
    page.screenshot(path=str(screenshot_dir / "generate-hostile.png"), full_page=True)
