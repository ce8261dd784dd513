"""The converted-model cache: convert a checkpoint once, load it fast ever after.

Converting SmolLM2 from its GGUF file (parse, dequantise, unpermute, build the tokenizer)
takes seconds; loading float32 safetensors and a saved tokenizer takes a fraction of one.
Each entry lives in ``$XDG_CACHE_HOME/transformer-explorer/<stem>-<key>/`` (default
``~/.cache``) and holds ``weights.safetensors`` (our parameter names), ``model_config.json``
(our `ModelConfig`) and the saved tokenizer. The key hashes the source file's identity
(resolved path, size, modification time) and the cache format version, so a changed file
gets a new entry. Entries are written to a temporary directory and renamed into place, so
a crash or a concurrent writer never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from explorer.config import ModelConfig
from explorer.models.converters.base import Tensors

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS, CONFIG = "weights.safetensors", "model_config.json"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/transformer-explorer`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "transformer-explorer"


def source_key(path: Path) -> str:
    """Hash of the file's identity: resolved path, size and mtime (ns), plus format version."""
    path = Path(path).resolve()
    stat = path.stat()
    identity = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|v{FORMAT_VERSION}"
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


def entry_dir(path: Path) -> Path:
    stem = re.sub(r"[^\w.-]+", "-", Path(path).stem)[:60]
    return cache_root() / f"{stem}-{source_key(path)}"


def load_entry(path: Path) -> tuple[ModelConfig, Tensors, Path] | None:
    """(config, state dict, tokenizer directory) of the cached conversion, or None."""
    entry = entry_dir(path)
    if not (entry / CONFIG).is_file() or not (entry / WEIGHTS).is_file():
        return None
    from safetensors.torch import load_file

    try:
        cfg = ModelConfig.from_dict(json.loads((entry / CONFIG).read_text())["config"])
        state = load_file(entry / WEIGHTS)
    except Exception as exc:  # a damaged entry is reconverted, not fatal
        logger.warning("ignoring damaged cache entry %s: %s", entry, exc)
        return None
    return cfg, state, entry


def save_entry(
    path: Path,
    cfg: ModelConfig,
    state: Tensors,
    save_tokenizer: Callable[[Path], None] | None = None,
) -> Path:
    """Write one entry atomically (temp dir + rename) and return its directory."""
    from safetensors.torch import save_file

    final = entry_dir(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / WEIGHTS,
                  metadata={"format": "pt", "source": str(path)})
        if save_tokenizer is not None:
            save_tokenizer(tmp)
        meta = {"config": cfg.to_dict(), "source": str(Path(path).resolve()),
                "format_version": FORMAT_VERSION}
        (tmp / CONFIG).write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: keep its entry
            logger.info("cache entry %s already written by another process", final)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final

