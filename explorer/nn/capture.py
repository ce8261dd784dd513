"""Per-call activation capture: which activations to keep, and the cache that holds them.

Capture state lives in one `Capture` object created per forward call and passed down the
modules, never in hooks registered on a shared module, so two threads (two browser
sessions) running one model at once each get their own correct cache.

Names follow TransformerLens: ``embed``, ``blocks.{i}.resid_pre``, ``blocks.{i}.attn.pattern``
... ``final_norm``; encoder-decoder names are prefixed ``encoder.`` / ``decoder.``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

NameFilter = Iterable[str] | Callable[[str], bool] | None


class ActivationCache(dict[str, torch.Tensor]):
    """A dict from activation name to tensor, with helpers to gather one name per layer."""

    def layer_names(self, suffix: str, prefix: str = "") -> list[str]:
        """Keys ``{prefix}blocks.{i}.{suffix}`` in layer order."""
        pattern = re.compile(rf"^{re.escape(prefix)}blocks\.(\d+)\.{re.escape(suffix)}$")
        found = [(int(m.group(1)), k) for k in self if (m := pattern.match(k))]
        return [k for _, k in sorted(found)]

    def stack(self, suffix: str, prefix: str = "") -> torch.Tensor:
        """Stack ``{prefix}blocks.{i}.{suffix}`` over layers: [n_layers, ...]."""
        names = self.layer_names(suffix, prefix)
        if not names:
            raise KeyError(f"no captured activation matches {prefix}blocks.*.{suffix}")
        return torch.stack([self[k] for k in names])

    def nbytes(self) -> int:
        """Memory held by the distinct tensors of the cache."""
        seen: dict[int, int] = {}
        for t in self.values():
            seen[t.data_ptr()] = max(seen.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return sum(seen.values())


def _glob_to_regex(name: str) -> str:
    """``*`` matches one dot-separated part, except a trailing ``*``, which matches any suffix."""
    body, trailing = (name[:-1], ".*") if name.endswith("*") else (name, "")
    return re.escape(body).replace(r"\*", r"[^.]*") + trailing + "$"


class Capture:
    """Decides which named activations to keep during one call, and keeps them.

    ``names``: None keeps everything; an iterable keeps exactly those names, where ``*``
    inside a name matches one dot-separated part (``"blocks.*.attn.pattern"``) and a
    trailing ``*`` matches any suffix (``"blocks.0.*"``: everything in block 0); a
    callable is a predicate on the name.
    """

    def __init__(self, names: NameFilter = None) -> None:
        self.cache = ActivationCache()
        if names is None:
            self._wants: Callable[[str], bool] = lambda name: True
        elif callable(names):
            self._wants = names
        else:
            exact = {n for n in names if "*" not in n}
            globs = [re.compile(_glob_to_regex(n)) for n in names if "*" in n]
            self._wants = lambda name: name in exact or any(g.match(name) for g in globs)

    def wants(self, name: str) -> bool:
        return self._wants(name)

    def save(self, name: str, tensor: torch.Tensor) -> None:
        """Keep a detached reference to ``tensor`` if ``name`` is wanted."""
        if self._wants(name):
            self.cache[name] = tensor.detach()
