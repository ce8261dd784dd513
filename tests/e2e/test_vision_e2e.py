"""The Image attention page in Chromium with a tiny random ViT and CLIP loaded from local
directories: a drawn sample and an uploaded PNG give the attention overlay and the rollout,
a bad file is refused with a message, hostile captions are drawn as text (no dialog), and
a text model on this page gets a pointer instead of a crash."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from browser_helpers import assert_no_exception, pick_other_model, wait_idle
from PIL import Image
from tiny_vision import save_tiny_clip, save_tiny_vit

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

CHART = '[data-testid="stPlotlyChart"]'
ERROR = '[data-testid="stAlertContentError"]'
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    dirs = {"vit": tmp_path_factory.mktemp("tiny-vit"),
            "clip": tmp_path_factory.mktemp("tiny-clip")}
    save_tiny_vit(dirs["vit"])
    save_tiny_clip(dirs["clip"])
    return dirs


def charts_drawn(page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('{CHART} .main-svg').length >= {n}",
                           timeout=120_000)
    wait_idle(page)
    assert_no_exception(page)


def upload(page, name: str, data: bytes, mime: str) -> None:
    main = page.locator('[data-testid="stMain"]')  # the sidebar has its own upload box
    main.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": name, "mimeType": mime, "buffer": data})
    page.wait_for_timeout(800)
    wait_idle(page)


def test_image_page_in_the_browser(page, app_server, tiny_dirs, screenshot_dir) -> None:
    page.set_viewport_size({"width": 1400, "height": 2200})
    page.goto(f"{app_server['url']}/images")
    wait_idle(page, 240_000)
    assert "This page reads images" in page.locator('[data-testid="stMain"]').inner_text()

    pick_other_model(page, str(tiny_dirs["vit"]))
    charts_drawn(page, 4)  # overlay, rollout, top classes, lens
    main = page.locator('[data-testid="stMain"]')
    assert "Attention rollout to layer 1" in main.inner_text()
    assert "resized to 32 x 32 (bilinear" in main.inner_text()
    assert page.locator(f"{CHART} .layer-above image, {CHART} image").count() >= 2
    page.screenshot(path=str(screenshot_dir / "vision-vit-sample.png"), full_page=True)

    main.get_by_test_id("stRadioGroup").get_by_text("Upload", exact=True).click()
    wait_idle(page)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(buffer, format="PNG")
    upload(page, "blue.png", buffer.getvalue(), "image/png")
    charts_drawn(page, 4)
    assert "64 x 48 pixels" in main.inner_text()
    page.screenshot(path=str(screenshot_dir / "vision-vit-upload.png"), full_page=True)

    upload(page, f"{HOSTILE}.png", b"\x89PNG\r\n\x1a\n truncated", "image/png")
    error = page.locator(ERROR)
    error.first.wait_for()
    assert f"{HOSTILE}.png was refused: this file is not a readable PNG" in error.first.inner_text()
    assert page.locator(CHART).count() == 0
    page.screenshot(path=str(screenshot_dir / "vision-bad-file.png"), full_page=True)

    pick_other_model(page, str(tiny_dirs["clip"]))
    page.get_by_text("Drawn sample", exact=True).click()
    wait_idle(page)
    charts_drawn(page, 3)  # overlay, rollout, captions
    box = page.get_by_label("Captions, one per line")
    box.fill(f"a photo of a cat\n{HOSTILE}\n**bold** $x$")
    box.press("Control+Enter")
    page.wait_for_timeout(600)
    wait_idle(page)
    assert_no_exception(page)
    bars = page.locator(CHART).filter(has_text="Zero-shot: which caption fits")
    bars.locator(".main-svg").first.wait_for()
    ticks = bars.locator(".ytick text").all_text_contents()
    assert HOSTILE in ticks and "**bold** $x$" in ticks
    page.screenshot(path=str(screenshot_dir / "vision-clip-captions.png"), full_page=True)
