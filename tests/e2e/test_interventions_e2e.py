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


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory):
    """A tiny random T5 saved as safetensors with the byte tokenizer."""
    import torch
    from test_positional_e2e import VOCAB, byte_tokenizer
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(
        d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
        vocab_size=VOCAB, relative_attention_num_buckets=8, relative_attention_max_distance=20,
        decoder_start_token_id=0))
    directory = tmp_path_factory.mktemp("tiny-t5-interventions")
    model.save_pretrained(directory, safe_serialization=True)
    byte_tokenizer(directory)
    return directory


def test_t5_ablates_a_cross_attention_head_by_clicking(app_server, page, screenshot_dir,
                                                       tiny_t5_dir) -> None:
    """A T5 from a local directory: pick its decoder cross-attention, click a head on the map,
    see the decoder's next token before and after."""
    from test_positional_e2e import load_local

    page.set_viewport_size({"width": 1400, "height": 2200})
    page.goto(f"{app_server['url']}/interventions?"
              f"{urllib.parse.urlencode({'prompt': SHORT_HOSTILE})}")
    wait_idle(page, 180_000)
    load_local(page, tiny_t5_dir)  # a local path never comes from a link: load it here
    wait_idle(page, 180_000)
    panel(page).get_by_text("Decoder cross-attention").first.click()
    wait_idle(page)
    head_map = panel(page).locator(VEGA).first
    head_map.locator("canvas, svg").first.wait_for(timeout=60_000)
    assert click_until(page, head_map, lambda: "cross-attention head L" in panel(
        page).inner_text().replace("\\", ""), ((0.3, 0.5), (0.45, 0.3), (0.2, 0.7)))
    page.get_by_text("Next decoder token after the decoder text: before and after").first.wait_for()
    assert_no_exception(page)
    assert page.locator('[data-testid="stMain"] img[src="x"]').count() == 0
    page.screenshot(path=str(screenshot_dir / "interventions-t5.png"), full_page=True)


def test_a_link_reopens_the_ablation(app_server, page) -> None:
    """The page's choices are in its URL: a link with heads and a mode shows that ablation
    in a fresh browser, and a new choice is written back to the address bar."""
    page.set_viewport_size({"width": 1400, "height": 2200})
    query = urllib.parse.urlencode({"model": "smollm2-135m", "prompt": SHORT_HOSTILE,
                                    "int_heads": ["L18H6", "L5H2"],
                                    "int_mode": "the mean activation"}, doseq=True)
    page.goto(f"{app_server['url']}/interventions?{query}")
    page.get_by_text("Mean ablation of L5H2, L18H6 (means over the prompt)").first.wait_for(
        timeout=180_000)
    wait_idle(page)
    assert_no_exception(page)
    panel(page).get_by_role("radio", name="zero").check(force=True)
    page.wait_for_timeout(500)
    wait_idle(page)
    params = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
    assert "int_mode" not in params  # back to the default: left out of the link
    assert sorted(params["int_heads"]) == ["L18H6", "L5H2"]
    assert "Zero ablation of L5H2, L18H6" in panel(page).inner_text().replace("\\", "")
