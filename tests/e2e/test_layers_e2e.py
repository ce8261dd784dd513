"""The Layers page in Chromium: every tab renders on SmolLM2 with a hostile prompt (no
dialog, no exception, no injected element), the open tab goes to the address bar and a
reload reopens it with what was typed in it, a lens cell's hover lists its top tokens, and
MiniLM says in one sentence why it has no lens while its geometry renders."""

from __future__ import annotations

import urllib.parse

import pytest
from browser_helpers import assert_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

CHART = '[data-testid="stPlotlyChart"]'
HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ \\(y\\) שלום مرحبا\u200b\u202eabc"
TABS = ["Logit lens", "Target token", "Residual stream", "Geometry", "Information flow"]
TYPED = """() => [...document.querySelectorAll('[data-testid="stTextInput"] input')]
    .some(box => box.value === ' the')"""  # the target box shows what was typed


def open_layers(page, url: str, prompt: str, model: str = "smollm2-135m") -> None:
    query = urllib.parse.urlencode({"model": model, "prompt": prompt})
    page.goto(f"{url}/layers?{query}")
    page.wait_for_selector('[data-testid="stTab"]', timeout=180_000)
    wait_idle(page)


def visible_chart_titles(page) -> list[str]:
    titles = page.locator(f"{CHART} .gtitle")  # SVG text: text_content, not inner_text
    return [t for t in titles.evaluate_all("els => els.map(e => e.textContent)") if t]


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(600)
    wait_idle(page)
    assert_no_exception(page)


def tab_in_url(page) -> str | None:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query).get(
        "layers_tab", [None])[0]


def test_every_tab_renders_a_hostile_prompt_as_text(app_server, page, screenshot_dir) -> None:
    open_layers(page, app_server["url"], HOSTILE)
    for name in [*TABS[1:], TABS[0]]:
        open_tab(page, name)
        panel = page.locator('[data-testid="stTabs"] [role="tabpanel"]:visible')
        assert panel.locator(CHART).count() >= 1, name
        # only the open tab's section is drawn; the tab is in the address bar (but the
        # first, the default)
        assert page.locator(CHART).count() == panel.locator(CHART).count(), name
        assert tab_in_url(page) == (None if name == TABS[0] else name)
        page.screenshot(path=str(screenshot_dir / f"layers-{name.replace(' ', '-')}.png"),
                        full_page=True)
    main = page.locator('[data-testid="stMain"]')
    assert main.locator('img[src="x"]').count() == 0
    assert main.locator(".katex").count() == 0  # $x$ is not typeset
    open_tab(page, "Geometry")
    assert "Token × token cosine · L29" in " ".join(visible_chart_titles(page))

    # a typed target survives a tab switch, and a reload of the link reopens its tab
    open_tab(page, "Target token")
    target = page.get_by_label("Target token (empty: the model's prediction at each position)")
    target.fill(" the")
    target.press("Enter")
    page.wait_for_timeout(600)
    wait_idle(page)
    open_tab(page, "Residual stream")
    open_tab(page, "Target token")
    page.wait_for_function(TYPED, timeout=10_000)
    page.reload()
    page.wait_for_selector('[data-testid="stTab"]', timeout=180_000)
    wait_idle(page)
    assert page.get_by_role("tab", name="Target token").get_attribute("aria-selected") == "true"
    page.wait_for_function(TYPED, timeout=10_000)
    assert any("“␣the”" in t for t in visible_chart_titles(page))


def test_a_lens_cell_hover_lists_its_top_tokens(app_server, page) -> None:
    open_layers(page, app_server["url"], "The capital of France is")
    chart = page.locator(CHART).first
    page.wait_for_selector(f"{CHART} .heatmaplayer", timeout=60_000)
    box = chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.03)
    hover = page.locator(".hoverlayer .hovertext").first
    hover.wait_for(timeout=10_000)
    text = hover.text_content()
    assert "top tokens" in text and "L29" in text, text
    assert text.count(":") >= 5  # five "token: probability" lines


def test_minilm_has_no_lens_but_has_geometry(app_server, page) -> None:
    open_layers(page, app_server["url"], "The cat sat on the mat.", model="minilm-l6")
    assert page.get_by_text("has no unembedding").first.is_visible()
    page.get_by_role("tab", name="Geometry").click()
    page.wait_for_timeout(600)
    wait_idle(page)
    assert any(t.startswith("Tokens on two principal axes") for t in visible_chart_titles(page))
    assert_no_exception(page)
