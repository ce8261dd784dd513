"""The guided tour in Chromium: every step renders (Next through all of them, one page load
per model) for SmolLM2 with a hostile prompt (shown literally, never run), MiniLM (no head:
it ends with its embeddings), and a tiny GPT-2 and T5 loaded from local directories.
``TOUR_SHOTS=dir`` saves a screenshot of every step (for looking at, not for CI)."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest
from browser_helpers import assert_no_exception, wait_idle
from test_positional_e2e import load_local, tiny_dirs  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ \u202eevil\u200b שלום"
CHART = '[data-testid="stPlotlyChart"]'
SHOTS = os.environ.get("TOUR_SHOTS")


def walk_steps(page, n_steps: int, tag: str) -> None:
    """From step 1, press Next through the last step: each renders its title, an equation
    and (after step 1) a drawn chart, without an exception."""
    main = page.locator('[data-testid="stMain"]')
    if SHOTS:  # the main area scrolls: a tall window shows a whole step
        page.set_viewport_size({"width": 1400, "height": 2200})
    for step in range(1, n_steps + 1):
        if step > 1:
            main.get_by_role("button", name="Next →").first.click()
        page.wait_for_selector(f'h3:has-text("{step}. ")', timeout=120_000)
        wait_idle(page)
        assert_no_exception(page)
        assert main.locator(".katex").count() >= 1, step
        if step > 1:
            main.locator(f"{CHART} svg.main-svg").first.wait_for(timeout=30_000)
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=f"{SHOTS}/{tag}-{step:02d}.png", full_page=True)
    assert main.get_by_role("button", name="Next →").first.is_disabled()
    assert f"step={n_steps}" in page.url


@pytest.mark.parametrize("model, prompt, n_steps", [
    ("smollm2-135m", HOSTILE, 15),
    ("minilm-l6", "The cat sat on the mat.", 13),
])
def test_embedded_models(app_server, page, model, prompt, n_steps) -> None:
    query = urllib.parse.urlencode({"model": model, "prompt": prompt})
    page.goto(f"{app_server['url']}/tour?{query}")
    page.wait_for_selector('h3:has-text("1. Text to tokens")', timeout=180_000)
    wait_idle(page)
    main = page.locator('[data-testid="stMain"]')
    if prompt == HOSTILE:
        chips = main.locator('[data-testid="stHtml"]').first.inner_text()
        pieces = chips.split("\n")
        assert "<" in pieces and ")>" in pieces and "alert" in pieces  # shown as text
    walk_steps(page, n_steps, model)
    assert main.locator('img[src="x"]').count() == 0
    assert "evil" not in " ".join(main.locator(".katex").all_inner_texts())


@pytest.mark.parametrize("name, n_steps", [("gpt2", 15), ("t5", 18)])
def test_tiny_local_models(app_server, page, tiny_dirs, name, n_steps) -> None:  # noqa: F811
    page.goto(f"{app_server['url']}/tour")
    wait_idle(page, 240_000)
    load_local(page, tiny_dirs[name])
    box = page.get_by_label("Prompt", exact=True)
    box.fill("the cat sat")
    box.press("Control+Enter")
    page.wait_for_timeout(500)
    wait_idle(page, 240_000)
    page.wait_for_selector('h3:has-text("1. Text to tokens")', timeout=120_000)
    walk_steps(page, n_steps, f"tiny-{name}")
