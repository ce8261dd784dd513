"""Which model names the app accepts from a shared link and from the sidebar.

A name in ``?model=`` must never make the server read a local directory: only embedded
aliases and hub ids pass. Typed names may be local paths only with ``EXPLORER_LOCAL_MODELS=1``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.models.sources import resolve
from explorer.ui.state import (
    is_local_model,
    local_models_enabled,
    looks_like_local_path,
    valid_url_model_name,
)


@pytest.mark.parametrize(
    "name",
    ["smollm2-135m", "MiniLM-L6", "gpt2", "HuggingFaceTB/SmolLM2-135M", "org/name.v2",
     "google-t5/t5-small"],
)
def test_url_accepts_aliases_and_hub_ids(name: str) -> None:
    assert valid_url_model_name(name)


@pytest.mark.parametrize(
    "name",
    ["/etc", "/home/user/models/gpt2", "./models/gpt2", ".", "..", "~/models", "~",
     "org/../etc", "a/..", "../secret", "org/name/extra", "model.gguf", "org/.hidden",
     "with space", "", "http://x.example/m", "a" * 201],
)
def test_url_refuses_paths_and_malformed_names(name: str) -> None:
    assert not valid_url_model_name(name)


@pytest.mark.parametrize(
    ("name", "path_like"),
    [("/data/m", True), ("./m", True), ("~/m", True), ("a/../b", True), ("m.gguf", True),
     ("a/b/c", True), ("org/name", False), ("gpt2", False), ("smollm2-135m", False)],
)
def test_looks_like_local_path(name: str, path_like: bool) -> None:
    assert looks_like_local_path(name) is path_like


def test_local_models_switch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.setenv("EXPLORER_LOCAL_MODELS", "1")
    assert local_models_enabled()
    assert is_local_model("org/model")  # exists relative to the working directory
    assert not is_local_model("org/other")
    monkeypatch.delenv("EXPLORER_LOCAL_MODELS")  # unset: fails closed
    assert not local_models_enabled()
    monkeypatch.setenv("EXPLORER_LOCAL_MODELS", "0")
    assert not local_models_enabled()
    assert not is_local_model("org/model")  # resolved as a hub id only, disk not consulted
    assert is_local_model("/data/m")  # still path-like: the sidebar refuses it


def test_resolve_without_local_never_reads_the_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    (tmp_path / "org" / "model" / "config.json").write_text("{}")
    assert resolve("org/model").origin == "local"
    with pytest.raises(FileNotFoundError, match="local paths: not allowed"):
        resolve("org/model", allow_local=False)
    with pytest.raises(FileNotFoundError, match="not a valid hub id"):
        resolve(str(tmp_path / "org" / "model"), allow_local=False)
