"""Cache keys of loaded models: two different checkpoints never share a key."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from explorer.models.sources import Source
from explorer.ui.resources import model_label


def _lm(name: str, path: str | None) -> SimpleNamespace:
    source = None if path is None else Source(name, Path(path), "safetensors", "local")
    return SimpleNamespace(name=name, source=source, device=torch.device("cpu"),
                           dtype=torch.float32)


def test_same_directory_name_in_two_places_gets_two_labels() -> None:
    """Local loads are named by their last path component: /a/model and /b/model."""
    first, second = model_label(_lm("model", "/a/model")), model_label(_lm("model", "/b/model"))
    assert first != second
    assert first == "model|/a/model|cpu|torch.float32"


def test_label_without_a_source() -> None:
    assert model_label(_lm("tiny", None)) == "tiny||cpu|torch.float32"


def test_failed_and_dropped_loads_leave_no_lock_behind() -> None:
    """Made-up model names (e.g. from URLs) must not grow the store's lock table forever."""
    import pytest

    from explorer.ui.resources import ModelKey, ModelStore

    def loader(name: str, **kwargs) -> object:
        if name.startswith("bad"):
            raise FileNotFoundError(name)
        return SimpleNamespace(name=name)

    store = ModelStore(loader=loader, max_models=1)
    for i in range(5):
        with pytest.raises(FileNotFoundError):
            store.load(ModelKey(f"bad-{i}"))
    assert store._models._key_locks == {} and len(store._models) == 0
    store.load(ModelKey("first"))
    store.load(ModelKey("second"))  # drops "first": at most one model is kept
    assert store._models.keys() == [ModelKey("second")]
    assert store._models._key_locks == {}
    assert store.get(ModelKey("first")) is None and store.get(ModelKey("second")).name == "second"
