"""How much memory a model needs, how much the device has, and a clear refusal when short.

psutil is not a dependency: free RAM comes from ``/proc/meminfo`` (Linux) or
``os.sysconf``; free GPU memory from ``torch.cuda.mem_get_info``.
"""

from __future__ import annotations

import os

import torch

from explorer.config import ModelConfig

SAFETY = 1.15  # activations, allocator slack


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes, or None when it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights counted once); works on meta-device models."""
    return sum(p.numel() for p in model.parameters())


def check_memory(
    cfg: ModelConfig, n_params: int, device: torch.device, dtype: torch.dtype,
    staging_bytes: int = 0,
) -> int:
    """Refuse (MemoryError) when the weights in ``dtype`` (plus the CPU staging copy read from
    disk) exceed what ``device`` has free. Returns the estimated bytes on ``device``."""
    element = torch.empty((), dtype=dtype).element_size()
    need = int(n_params * element * SAFETY)
    checks = [(device, need + (staging_bytes if device.type == "cpu" else 0))]
    if device.type != "cpu" and staging_bytes:
        checks.append((torch.device("cpu"), staging_bytes))
    for dev, bytes_needed in checks:
        free = available_bytes(dev)
        if free is not None and bytes_needed > free:
            raise MemoryError(
                f"{cfg.name} needs about {bytes_needed / 2**30:.2f} GiB on {dev.type} "
                f"({n_params / 1e6:.0f}M parameters in {str(dtype).removeprefix('torch.')}) "
                f"but only {free / 2**30:.2f} GiB is free; pick a smaller model, a smaller "
                "dtype (bfloat16) or another device"
            )
    return need
