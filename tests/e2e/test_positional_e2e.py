"""The positional-encodings page in Chromium with each scheme: SmolLM2 (RoPE), MiniLM (learned),
and a tiny GPT-2 (learned) and a tiny T5 (relative bias) loaded from local directories; a hostile
prompt (HTML, markdown, right-to-left and zero-width characters) stays text, every chart draws,
no exception, no dialog."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from browser_helpers import assert_no_exception, pick_other_model, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

HOSTILE = "<img src=x onerror=alert(1)> **bold** $x$ \u202eevil\u200b שלום"
CHART = '[data-testid="stPlotlyChart"]'
VOCAB = 260  # 256 byte pieces and a few specials


def byte_tokenizer(directory: Path) -> None:
    """A byte-level BPE tokenizer without merges (every byte one token) saved to directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>",
                                        pad_token="<pad>")
    tokenizer.save_pretrained(directory)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny random GPT-2 and T5 saved as safetensors with the byte tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    models = {
        "gpt2": GPT2LMHeadModel(GPT2Config(n_embd=32, n_head=4, n_layer=2, vocab_size=VOCAB,
                                           n_positions=128)),
        "t5": T5ForConditionalGeneration(T5Config(
            d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
            vocab_size=VOCAB, relative_attention_num_buckets=8,
            relative_attention_max_distance=20, decoder_start_token_id=0)),
    }
    dirs = {}
    for name, model in models.items():
        directory = tmp_path_factory.mktemp(f"tiny-{name}")
        model.save_pretrained(directory, safe_serialization=True)
        byte_tokenizer(directory)
        dirs[name] = directory
    return dirs


def load_local(page, path: Path) -> None:
    pick_other_model(page, str(path))
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert path.name in sidebar.locator('[data-testid="stAlertContentSuccess"]').inner_text()


def type_prompt(page, text: str) -> None:
    box = page.get_by_label("Prompt")
    box.fill(text)
    box.press("Control+Enter")
    page.wait_for_timeout(500)
    wait_idle(page, 240_000)


def check_page(page, charts: int, screenshot: Path) -> None:
    """Every chart drawn (an SVG per chart), the hostile text shown as text, no exception."""
    page.wait_for_function(f"document.querySelectorAll('{CHART}').length >= {charts}",
                           timeout=240_000)
    wait_idle(page, 240_000)
    assert_no_exception(page)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    plotted = page.locator(CHART)
    assert plotted.count() == charts
    for i in range(charts):
        plotted.nth(i).scroll_into_view_if_needed()
        assert plotted.nth(i).locator("svg.main-svg").count() > 0, f"chart {i} not drawn"
    assert page.locator("main img[src='x']").count() == 0
    page.screenshot(path=str(screenshot), full_page=True)


@pytest.mark.parametrize("model, charts, literal", [
    ("smollm2-135m", 11, "<"),  # 4 sinusoid + 5 RoPE + 2 checks; token labels in titles
    ("minilm-l6", 9, None),  # 4 sinusoid + table, cosines, PCA + 2 checks
])
def test_embedded_models(app_server, page, screenshot_dir, model, charts, literal) -> None:
    query = urllib.parse.urlencode({"model": model, "prompt": HOSTILE})
    page.goto(f"{app_server['url']}/positional?{query}")
    check_page(page, charts, screenshot_dir / f"positional-{model}.png")
    if literal:
        titles = " ".join(page.locator(f"{CHART} .gtitle").all_text_contents())
        assert literal in titles and "&lt;" not in titles, titles


@pytest.mark.parametrize("name, charts", [("gpt2", 9), ("t5", 8)])
def test_tiny_local_models(app_server, page, screenshot_dir, tiny_dirs, name, charts) -> None:
    page.goto(f"{app_server['url']}/positional")
    wait_idle(page, 240_000)
    load_local(page, tiny_dirs[name])
    type_prompt(page, HOSTILE)
    check_page(page, charts, screenshot_dir / f"positional-tiny-{name}.png")
