"""A hub model is sized from its file index and config before download, and refused when it
would not fit in the memory the process has left (a fake cgroup v2 limit here)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from explorer import machine
from explorer.models import sources
from explorer.models.memory import estimate_download

load_module = importlib.import_module("explorer.models.load")  # the module, not the function

MIB = 2**20
CPU = torch.device("cpu")
INDEX = {"config.json": 700, "model.safetensors": 270 * MIB, "tokenizer.json": 2 * MIB,
         "onnx/model.safetensors": 500 * MIB}  # the ONNX copy is not loaded
CONFIG = {"model_type": "llama", "torch_dtype": "bfloat16"}


@pytest.fixture
def cgroup_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Point explorer.machine at a fake cgroup v2 tree with a memory limit of `limit` MiB."""

    def make(limit_mib: int, used_mib: int = 100) -> None:
        root = tmp_path / "cgroup"
        root.mkdir(exist_ok=True)
        (root / "memory.max").write_text(f"{limit_mib * MIB}\n")
        (root / "memory.current").write_text(f"{used_mib * MIB}\n")
        (root / "memory.stat").write_text("inactive_file 0\n")
        proc = tmp_path / "proc-cgroup"
        proc.write_text("0::/\n")
        meminfo = tmp_path / "meminfo"
        meminfo.write_text(f"MemAvailable: {64 * 2**30 // 1024} kB\n")  # a big host
        monkeypatch.setattr(machine, "CGROUP_ROOT", root)
        monkeypatch.setattr(machine, "PROC_SELF_CGROUP", proc)
        monkeypatch.setattr(machine, "MEMINFO", meminfo)

    return make


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hub's index and config mocked; a download records the repo instead of fetching."""
    downloads: list[str] = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(sources, "hub_file_index", lambda repo: dict(INDEX))
    monkeypatch.setattr(sources, "hub_config", lambda repo: dict(CONFIG))
    monkeypatch.setattr(load_module, "hub_file_index", lambda repo: dict(INDEX))
    monkeypatch.setattr(load_module, "hub_config", lambda repo: dict(CONFIG))

    def fake_hub_fetch(name: str, local_only: bool):
        if not local_only:
            downloads.append(name)
        return None  # nothing cached, "download" fails after the check

    monkeypatch.setattr(sources, "_hub", fake_hub_fetch)
    return downloads


def test_estimate_from_index_and_config() -> None:
    estimate = estimate_download(INDEX, CONFIG, torch.float32, CPU)
    assert estimate.n_params == 270 * MIB // 2  # bfloat16 on disk
    assert estimate.download_bytes == sum(INDEX.values())
    # float32 weights with 15% headroom, plus the safetensors read whole on the CPU
    assert estimate.memory_bytes == int(estimate.n_params * 4 * 1.15) + 270 * MIB
    half = estimate_download(INDEX, {"dtype": "float32"}, torch.bfloat16, CPU)
    assert half.n_params == 270 * MIB // 4


def test_download_refused_under_a_small_cgroup_limit(cgroup_with, fake_hub) -> None:
    cgroup_with(limit_mib=690)  # Community Cloud's minimum, on a 64 GiB host
    with pytest.raises(MemoryError, match="too large for this server") as info:
        load_module.load("org/big-model", allow_local=False)
    assert "nothing was downloaded" in str(info.value)
    assert fake_hub == []  # refused before any download


def test_download_allowed_when_it_fits(cgroup_with, fake_hub) -> None:
    cgroup_with(limit_mib=2_700)
    with pytest.raises(FileNotFoundError):  # the fake download finds nothing
        load_module.load("org/big-model", allow_local=False)
    assert fake_hub == ["org/big-model"]


def test_an_unreachable_index_does_not_block_the_download(cgroup_with, fake_hub,
                                                          monkeypatch) -> None:
    cgroup_with(limit_mib=690)

    def offline(repo: str) -> dict:
        raise OSError("no route to host")

    monkeypatch.setattr(load_module, "hub_file_index", offline)
    with pytest.raises(FileNotFoundError):
        load_module.load("org/big-model", allow_local=False)
    assert fake_hub == ["org/big-model"]
