"""Six visitors at once: each browser session has its own prompt on the attention and the
generate pages, sees its own tokens and only its own, and no page shows an exception. The
six generations are started together: the heavy-work gate runs a few at a time and the
others show "Waiting for N others" until their turn."""

from __future__ import annotations

import re
import urllib.parse

import pytest
from browser_helpers import assert_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

CODES = ["QWZ", "JXV", "KPF", "BGY", "HMD", "TLN"]  # one per session, never generated
WAITING = '[data-testid="stAlertContentInfo"]:has-text("Waiting for")'


def prompt_of(code: str) -> str:
    return f"Ticket {code} is open. Ticket {code} is"


def letters(text: str) -> str:
    return re.sub(r"[^A-Z]", "", text.upper())


def own_codes(text: str) -> set[str]:
    squashed = letters(text)
    return {code for code in CODES if code in squashed}


def test_six_sessions_see_only_their_own_tokens(app_server, browser, screenshot_dir) -> None:
    url = app_server["url"]
    contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in CODES]
    try:
        pages = [c.new_page() for c in contexts]
        for page in pages:
            page.set_default_timeout(180_000)
        # attention page: all six navigate before any is waited for (their runs overlap)
        for page, code in zip(pages, CODES, strict=True):
            page.goto(f"{url}/attention?prompt={urllib.parse.quote(prompt_of(code))}")
        for page, code in zip(pages, CODES, strict=True):
            page.wait_for_selector(".tx-piece", state="attached")  # may sit in an expander
            wait_idle(page)
            chips = "".join(page.locator(".tx-piece").all_text_contents())
            assert own_codes(chips) == {code}, (code, chips[:200])
            assert_no_exception(page)

        # generate page: same prompts, started together
        for page, code in zip(pages, CODES, strict=True):
            page.goto(f"{url}/generate?prompt={urllib.parse.quote(prompt_of(code))}")
        for page in pages:
            page.get_by_role("button", name="Generate").wait_for()
            wait_idle(page)
            box = page.get_by_label("Max new tokens")
            box.fill("12")
            box.press("Enter")
            wait_idle(page)
        for page in pages:
            page.get_by_role("button", name="Generate").click()
        saw_waiting = False
        for _ in range(100):  # the last ones queue behind the first while those run
            if pages[-1].locator(WAITING).count():
                saw_waiting = True
                text = pages[-1].locator(WAITING).first.inner_text()
                assert re.search(r"Waiting for (1 other visitor|\d+ others)", text), text
                pages[-1].screenshot(path=str(screenshot_dir / "sessions-waiting.png"))
                break
            pages[-1].wait_for_timeout(50)
        for page, code in zip(pages, CODES, strict=True):
            page.wait_for_selector(".gen-tok", state="attached")
            wait_idle(page)
            stream = page.locator(".gen-stream").text_content()
            assert own_codes(stream) == {code}, (code, stream[:300])
            assert page.locator(".gen-tok").count() >= 1
            assert page.locator(WAITING).count() == 0  # the message went away
            assert_no_exception(page)
        pages[0].screenshot(path=str(screenshot_dir / "sessions-generated.png"))
        assert saw_waiting, "no session was ever shown its place in the queue"
    finally:
        for context in contexts:
            context.close()
