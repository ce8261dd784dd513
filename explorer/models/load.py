"""`load(name_or_path)`: any supported checkpoint into our engine, fast and offline-first.

Steps: resolve the source (`explorer.models.sources`), read its config and pick the
converter (`explorer.models.converters`), check the memory it needs against what the device
has free, read and convert the weights (GGUF goes through the conversion cache, so only
the first load pays for dequantisation), then build the model on the meta device and
assign the converted tensors into it (no random initialisation, no copy), and load the
tokenizer. ``progress(fraction, message)`` is called along the way.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from explorer.config import ModelConfig
from explorer.device import pick_device, pick_dtype
from explorer.models import conversion_cache
from explorer.models.converters import convert, converter_for
from explorer.models.converters.base import CheckpointError, Tensors
from explorer.models.image import ImageProcessor
from explorer.models.loaded import LoadedModel
from explorer.models.memory import check_download, check_memory, count_parameters, estimate_download
from explorer.models.sources import (
    Source,
    hub_config,
    hub_file_index,
    read_hf_config,
    read_safetensors,
    resolve,
    weight_files,
)
from explorer.models.tokenizer import load_tokenizer
from explorer.nn.model import build_model
from explorer.nn.packing import pack_model

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
UNEMBED = "head.unembed.weight"


def _meta_model(cfg: ModelConfig) -> nn.Module:
    with torch.device("meta"):
        return build_model(cfg)


def _plan(cfg: ModelConfig, device: torch.device, dtype: torch.dtype, staging: int) -> nn.Module:
    """The meta-device model of ``cfg``, after checking its memory fits."""
    model = _meta_model(cfg)
    check_memory(cfg, count_parameters(model), device, dtype, staging)
    return model


def _set_buffer(model: nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, buffer_name = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    module._buffers[buffer_name] = value


def materialize(
    model: nn.Module, state: Tensors, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """Assign converted tensors into a meta-device model, checking names and shapes.

    Tied unembeddings are re-tied to the token embedding. Non-persistent buffers (rotary
    frequencies, sinusoidal tables, ALiBi slopes) are taken from a tiny real copy of the
    model (no layers, one-token vocabulary) and keep their float32 precision.
    """
    cfg: ModelConfig = model.cfg
    expected = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    tied = cfg.tied_embeddings and cfg.has_unembed
    missing = sorted(set(expected) - set(state) - ({UNEMBED} if tied else set()))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"converted weights do not fit the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != expected[key]:
            raise CheckpointError(
                f"{key} has shape {tuple(tensor.shape)}, model expects {expected[key]}"
            )
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        model.head.unembed.weight = model.embed.tokens.weight
    pack_model(model)
    meta_buffers = [n for n, b in model.named_buffers() if b.is_meta]
    if meta_buffers:
        skeleton = build_model(cfg.replace(n_layers=0, n_decoder_layers=0, d_vocab=1, d_mlp=1))
        real = dict(skeleton.named_buffers())
        for name in meta_buffers:
            _set_buffer(model, name, real[name].to(device))
    # Config-derived tables (rotary speeds, sinusoidal positions) are built on the CPU.
    for name, buffer in list(model.named_buffers()):
        if buffer.device != device:
            _set_buffer(model, name, buffer.to(device))
    return model.eval().requires_grad_(False)


def _read_safetensors_dir(
    source: Source, device: torch.device, dtype: torch.dtype, report: Progress
) -> tuple[nn.Module, Tensors, object, bool]:
    from safetensors import safe_open

    directory = source.path
    hf = read_hf_config(directory)
    converter = converter_for(hf)
    names: set[str] = set()
    staging = 0
    for file in weight_files(directory):
        try:
            with safe_open(file, framework="pt") as f:
                names.update(f.keys())
        except Exception as exc:
            raise CheckpointError(f"weights file {file} is corrupt or truncated ({exc})") from exc
        staging += file.stat().st_size
    cfg = converter.config(hf, frozenset(names)).replace(name=source.name)
    model = _plan(cfg, device, dtype, staging)
    report(0.2, f"reading {staging / 2**20:.0f} MiB of safetensors")
    state = converter.weights(cfg, read_safetensors(directory))
    report(0.7, "loading the tokenizer")
    return model, state, load_tokenizer(directory), False


def _read_gguf(
    source: Source, device: torch.device, dtype: torch.dtype, report: Progress
) -> tuple[nn.Module, Tensors, object, bool]:
    from explorer.models.gguf_reader import read_gguf, tokenizer_from_gguf

    path = source.path
    cached = conversion_cache.load_entry(path)
    if cached is not None:
        cfg, state, entry = cached
        cfg = cfg.replace(name=source.name)
        model = _plan(cfg, device, dtype, 0)
        report(0.7, "loading the tokenizer")
        return model, state, load_tokenizer(entry), True
    report(0.05, f"converting {path.name} (first load only)")
    hf, tensors = read_gguf(path, lambda f, m: report(0.05 + 0.5 * f, m))
    cfg, state = convert(hf, tensors)
    cfg = cfg.replace(name=source.name)
    model = _plan(cfg, device, dtype, 0)
    report(0.6, "building the tokenizer")
    tokenizer = tokenizer_from_gguf(path)
    report(0.7, "writing the conversion cache")
    try:
        entry = conversion_cache.save_entry(path, cfg, state, tokenizer.save_pretrained)
        tokenizer = load_tokenizer(entry)
    except OSError as exc:  # read-only home, full disk: still usable, just not cached
        logger.warning("could not write the conversion cache: %s", exc)
    return model, state, tokenizer, False


SOURCE_READERS = {"safetensors": _read_safetensors_dir, "gguf": _read_gguf}


def check_hub_download(repo_id: str, device: torch.device, dtype: torch.dtype) -> None:
    """Size a hub model from its file index and config.json and refuse (MemoryError) one
    that will not fit in the memory this process has left; a hub that cannot tell (no
    index, an error) lets the download go on, and the load's own check still runs."""
    try:
        estimate = estimate_download(hub_file_index(repo_id), hub_config(repo_id), dtype, device)
    except Exception as exc:  # network, missing config: the usual load errors will say so
        logger.info("could not size %s before download: %s", repo_id, exc)
        return
    logger.info("%s: %.0f MiB to download, ~%.0fM parameters, ~%.0f MiB in memory", repo_id,
                estimate.download_bytes / 2**20, estimate.n_params / 1e6,
                estimate.memory_bytes / 2**20)
    check_download(repo_id, estimate, device, dtype)


def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    progress: Progress | None = None,
    *,
    allow_local: bool = True,
) -> LoadedModel:
    """Load an embedded alias, hub id, local directory or .gguf file into our engine.

    ``device``: "auto" (cuda, then mps, then cpu) or a torch device; ``dtype``: "auto"
    (float32 on cpu/mps, bfloat16 on cuda), a name or a torch dtype. ``progress(fraction,
    message)`` reports progress. ``allow_local=False`` never reads a local path (for names
    from untrusted input: embedded aliases and hub ids only). Raises FileNotFoundError
    (nothing found, with what was tried), CheckpointError (bad files, unsupported
    architecture) or MemoryError (also before a hub download too large for this process's
    memory, cgroup limit included).
    """
    start = time.perf_counter()

    def report(fraction: float, message: str) -> None:
        logger.debug("load %.0f%%: %s", 100 * fraction, message)
        if progress is not None:
            progress(min(max(fraction, 0.0), 1.0), message)

    report(0.0, f"finding {name_or_path}")
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    source = resolve(name_or_path, allow_local=allow_local,
                     before_download=lambda repo_id: check_hub_download(repo_id, dev, dt))
    model, state, tokenizer, from_cache = SOURCE_READERS[source.format](source, dev, dt, report)
    report(0.85, "placing the weights")
    model = materialize(model, state, dev, dt)
    cfg = model.cfg
    image_processor = (ImageProcessor.from_directory(source.directory, cfg.image_size,
                                                     cfg.family) if cfg.is_vision else None)
    seconds = time.perf_counter() - start
    report(1.0, f"loaded {source.name} in {seconds:.1f} s")
    logger.info("loaded %s (%s, %s) in %.2f s", source.name, source.origin, source.format, seconds)
    return LoadedModel(
        name=source.name, source=source, config=model.cfg, tokenizer=tokenizer, model=model,
        device=dev, dtype=dt, load_seconds=seconds, from_cache=from_cache,
        image_processor=image_processor,
    )

