"""explorer.device: device preference cuda > mps > cpu and dtype choice."""

import pytest
import torch

from explorer import device as dev


def test_available_devices_ends_with_cpu():
    devices = dev.available_devices()
    assert devices[-1] == "cpu"
    assert ("cuda" in devices) == torch.cuda.is_available()


def test_preference_order(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.available_devices()[0] == "cuda"
    assert dev.pick_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert dev.available_devices() == ["mps", "cpu"]
    assert dev.pick_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert dev.pick_device("auto") == torch.device("cpu")


def test_pick_device_explicit_and_unavailable(monkeypatch):
    assert dev.pick_device("cpu") == torch.device("cpu")
    assert dev.pick_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda"):
        dev.pick_device("cuda")


def test_pick_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert dev.pick_dtype("auto", cpu) == torch.float32
    assert dev.pick_dtype("auto", cuda) == torch.bfloat16
    assert dev.pick_dtype("float16", cpu) == torch.float16
    assert dev.pick_dtype(torch.float64, cpu) == torch.float64
    with pytest.raises(ValueError, match="float8"):
        dev.pick_dtype("float8", cpu)


@pytest.mark.gpu
def test_cuda_is_picked_when_present():
    assert dev.pick_device("auto").type == "cuda"
