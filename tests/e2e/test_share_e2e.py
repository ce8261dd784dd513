"""Share and export in Chromium: a link carrying a view opens that view in a fresh browser on
every page (one load each), a changed choice is written back to the address bar, the
page's HTML report opens with the network blocked and draws its charts, and the
analysis downloads as an NPZ that explorer.load_run reads."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from browser_helpers import assert_no_exception, wait_idle

import explorer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

CHART = '[data-testid="stPlotlyChart"]'
HOSTILE = "<img src=x onerror=alert(1)> **b** $x$ The cat sat. The cat"


def open_link(page, url: str, path: str, params: dict, ready: str) -> None:
    query = urllib.parse.urlencode({"model": "smollm2-135m", **params}, doseq=True)
    page.goto(f"{url}/{path}?{query}")
    page.wait_for_selector(ready, timeout=180_000)
    wait_idle(page)
    assert_no_exception(page)


def chart_titles(page) -> str:
    titles = page.locator(f"{CHART} .gtitle")  # SVG text: text_content, not inner_text
    return " | ".join(t for t in titles.evaluate_all("els => els.map(e => e.textContent)") if t)


def query_of(page) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)


def test_attention_link_report_and_analysis(app_server, page, browser, tmp_path,
                                            screenshot_dir) -> None:
    open_link(page, app_server["url"], "attention", {  # MiniLM: 6 layers, quick to run
        "model": "minilm-l6", "prompt": HOSTILE, "attn_layer": "3", "attn_head": "7",
        "attn_aggregate": "Max over heads", "attn_scale": "log"}, CHART)
    titles = chart_titles(page)
    assert "Layer 3 · head 7" in titles and "Max over heads · layer 3" in titles
    page.screenshot(path=str(screenshot_dir / "share-attention-link.png"), full_page=True)
    # a new choice goes to the address bar (and the link's other choices stay)
    page.get_by_role("radio", name="Rollout up to this layer").check(force=True)
    page.wait_for_timeout(500)
    wait_idle(page)
    query = query_of(page)
    assert query["attn_aggregate"] == ["Rollout up to this layer"]
    assert query["attn_layer"] == ["3"] and query["prompt"] == [HOSTILE]

    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Share and export").click()
    with page.expect_download() as report:
        sidebar.get_by_role("button", name="This page as HTML").click()
    html_path = tmp_path / "report.html"
    report.value.save_as(html_path)
    with page.expect_download() as analysis:
        sidebar.get_by_role("button", name="Download this analysis (NPZ)").click()
    npz_path = tmp_path / "run.npz"
    analysis.value.save_as(npz_path)

    saved = explorer.load_run(npz_path)
    assert saved.prompt == HOSTILE and saved.model == "minilm-l6"
    assert saved.settings["attn_layer"] == 3 and saved.settings["attn_aggregate"] == "rollout"
    assert saved.scores("self")["induction"].shape == (6, 12)
    assert saved.tokens()[1][0] == "[CLS]" and len(saved.tokens()[0]) > 10

    # a saved run opens without its model; a file that is not one says so
    upload = sidebar.locator('[data-testid="stFileUploaderDropzoneInput"]')
    bad = tmp_path / "bad.npz"
    bad.write_text("<script>alert(1)</script>")
    upload.set_input_files(bad)
    page.wait_for_timeout(1_000)
    wait_idle(page)
    assert "not a saved run" in sidebar.locator('[data-testid="stAlert"]').last.inner_text()
    upload.set_input_files(npz_path)
    page.wait_for_timeout(1_000)
    wait_idle(page)
    sidebar.get_by_role("button", name="Show the saved run").click()
    dialog = page.get_by_role("dialog")
    dialog.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    assert dialog.locator('[data-testid="stVegaLiteChart"]').count() == 1  # head scores
    assert dialog.locator(".js-plotly-plot").count() == 1  # residual norms (MiniLM: no lens)
    page.screenshot(path=str(screenshot_dir / "share-saved-run.png"), full_page=True)

    drawn = open_offline(browser, html_path, screenshot_dir)
    assert drawn >= 6  # head map, heatmap, lines, bars, small multiples, rollout


def open_offline(browser, html_path: Path, screenshot_dir: Path) -> int:
    """Open the report with every request but the file itself refused; returns the number
    of charts drawn. Fails on any attempted fetch or dialog."""
    context = browser.new_context(viewport={"width": 1400, "height": 2200}, offline=True)
    fetched, dialogs = [], []

    def refuse(route) -> None:
        if route.request.url != html_path.as_uri():
            fetched.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", refuse)
    report = context.new_page()
    report.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    report.goto(html_path.as_uri())
    report.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    report.wait_for_timeout(1_000)
    drawn = report.locator(".js-plotly-plot").count()
    header = report.locator("table").inner_text()
    report.screenshot(path=str(screenshot_dir / "share-report-offline.png"), full_page=True)
    context.close()
    assert not fetched and not dialogs, (fetched, dialogs)
    assert "<img src=x onerror=alert(1)>" in header and "minilm-l6" in header
    return drawn


def test_layers_link_opens_its_tab(app_server, page, screenshot_dir) -> None:
    open_link(page, app_server["url"], "layers", {
        "prompt": "The capital of France is", "layers_tab": "Geometry",
        "layers_geo_row": "L5", "layers_lens_stat": "Entropy"}, '[data-testid="stTab"]')
    assert page.get_by_role("tab", name="Geometry").get_attribute("aria-selected") == "true"
    # plotly draws a chart's SVG a few seconds after the script run ends (its JS loads lazily)
    page.locator(f"{CHART} .gtitle", has_text="Token × token cosine · L5").first.wait_for(
        timeout=60_000)
    assert "Token × token cosine · L5" in chart_titles(page)
    page.screenshot(path=str(screenshot_dir / "share-layers-link.png"), full_page=True)


def test_positional_link(app_server, page) -> None:
    open_link(page, app_server["url"], "positional", {  # MiniLM: a learned table
        "model": "minilm-l6", "prompt": "one two three four", "pos_sin_k": "5",
        "pos_learned_n": "64", "pos_why_seed": "3"}, CHART)
    titles = chart_titles(page)
    assert "PE(p) · PE(p + 5) for every p" in titles
    assert "Learned position table (64 × 384)" in titles


def test_generate_link_replays_its_generation(app_server, page, screenshot_dir) -> None:
    open_link(page, app_server["url"], "generate", {
        "prompt": "Once upon a time", "generate_temperature": "0.7", "generate_seed": "3",
        "generate_max_new": "5", "generate_run": "1"}, CHART)
    metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert metrics[0] == "5", metrics
    page.screenshot(path=str(screenshot_dir / "share-generate-link.png"), full_page=True)


def test_overview_and_tokenizer_links(app_server, page) -> None:
    open_link(page, app_server["url"], "tokenizer", {"prompt": "a b c", "model": "minilm-l6"},
              '[data-testid="stMetricValue"]')
    assert page.locator('[data-testid="stMetricValue"]').first.inner_text() == "5"
    open_link(page, app_server["url"], "", {"model": "minilm-l6"},
              '[data-testid="stMetricValue"]')
    assert "minilm-l6" in page.locator('[data-testid="stMain"] h3').first.inner_text()
