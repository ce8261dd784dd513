"""How much memory a model needs, how much the process has, and a clear refusal when short.

psutil is not a dependency: free RAM is what `explorer.machine` reads (the room left under
the process's cgroup limit where there is one, else the host's ``MemAvailable``); free GPU
memory comes from ``torch.cuda.mem_get_info``. `estimate_download` sizes a hub model from
its file index and config before anything is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer import machine
from explorer.config import ModelConfig

SAFETY = 1.15  # activations, allocator slack
# Bytes per element of the dtypes checkpoints are stored in (config "torch_dtype"/"dtype").
STORED_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2,
                "float64": 8, "int8": 1, "uint8": 1, "float8_e4m3fn": 1}


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes, or None when it cannot be told.

    On the CPU this is the room left under the cgroup memory limit (a container's 2.7 GB,
    not the host's 64), or the host's available memory when no cgroup limits it.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return machine.available_memory(machine.CGROUP_ROOT, machine.PROC_SELF_CGROUP,
                                    machine.MEMINFO)


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


@dataclass(frozen=True)
class DownloadEstimate:
    """A hub model sized before download: bytes to fetch, parameters, bytes in memory."""

    download_bytes: int
    n_params: int
    memory_bytes: int


def estimate_download(files: dict[str, int], hf_config: dict, dtype: torch.dtype,
                      device: torch.device) -> DownloadEstimate:
    """Size a hub checkpoint from its file index (path -> bytes) and its config.json.

    The weights are the top-level ``*.safetensors`` files; their bytes divided by the stored
    element size (the config's ``torch_dtype``/``dtype``, float32 when absent) give the
    parameter count. In memory: the parameters in ``dtype`` with `SAFETY` headroom, plus,
    on the CPU, the safetensors read whole before conversion (as `check_memory` counts).
    """
    weights = sum(size for name, size in files.items()
                  if name.endswith(".safetensors") and "/" not in name)
    stored = str(hf_config.get("torch_dtype") or hf_config.get("dtype") or "float32")
    n_params = weights // STORED_BYTES.get(stored.removeprefix("torch."), 4)
    element = torch.empty((), dtype=dtype).element_size()
    need = int(n_params * element * SAFETY) + (weights if device.type == "cpu" else 0)
    return DownloadEstimate(sum(files.values()), n_params, need)


def check_download(name: str, estimate: DownloadEstimate, device: torch.device,
                   dtype: torch.dtype) -> None:
    """Refuse (MemoryError) a download whose model would not fit in the memory left."""
    free = available_bytes(device)
    if free is not None and estimate.memory_bytes > free:
        raise MemoryError(
            f"{name} is too large for this server: about {estimate.n_params / 1e6:,.0f}M "
            f"parameters need {estimate.memory_bytes / 2**30:.2f} GiB in "
            f"{str(dtype).removeprefix('torch.')} but only {free / 2**30:.2f} GiB is free "
            f"here (download {estimate.download_bytes / 2**30:.2f} GiB; nothing was "
            "downloaded). Pick a smaller model or bfloat16."
        )
