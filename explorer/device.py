"""Picking the device and dtype a model runs on: cuda, then mps, then cpu."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """Devices this machine has, best first (always ends with "cpu")."""
    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the best available device; anything else is checked and returned."""
    if str(device) == "auto":
        return torch.device(available_devices()[0])
    device = torch.device(device)
    if device.type not in available_devices():
        raise ValueError(f"device {device.type!r} is not available here: {available_devices()}")
    return device


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` -> float32 on cpu and mps, bfloat16 on cuda; names map to torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]
