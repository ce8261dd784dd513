"""Per-call activation capture and editing: which activations to keep, which to replace,
and the cache that holds them.

Capture state lives in one `Capture` object created per forward call and passed down the
modules, never in hooks registered on a shared module, so two threads (two browser
sessions) running one model at once each get their own cache and their own edits. An edit
``{name: fn}`` replaces the activation ``name`` by ``fn(activation)`` (same shape) for that
call only, the way TransformerLens's ``run_with_hooks`` does, but passed through the call.
A forward that never reached an edited name raises, so a typo cannot pass silently.

Names follow TransformerLens; :data:`ACTIVATIONS` lists every one with its shape.
Encoder-decoder names are prefixed ``encoder.`` / ``decoder.``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import torch

NameFilter = Iterable[str] | Callable[[str], bool] | None
Edit = Callable[[torch.Tensor], torch.Tensor]

# Every activation a forward can capture or edit, and its shape. b batch, n positions (query
# side), m key positions, D d_model, h heads, g key/value heads, d d_head, F d_mlp, E experts.
ACTIVATIONS: dict[str, str] = {
    "embed": "[b, n, D] token embeddings",
    "pos_embed": "[n, D] absolute position embeddings (learned/sinusoidal models)",
    "blocks.{i}.resid_pre": "[b, n, D] residual stream entering block i",
    "blocks.{i}.attn.q": "[b, h, n, d] queries (rotated, for RoPE)",
    "blocks.{i}.attn.k": "[b, g, m, d] keys (rotated; with a KV cache: every cached key)",
    "blocks.{i}.attn.v": "[b, g, m, d] values",
    "blocks.{i}.attn.pattern": "[b, h, n, m] attention weights, rows sum to 1",
    "blocks.{i}.attn.z": "[b, h, n, d] each head's output before the output projection",
    "blocks.{i}.attn.out": "[b, n, D] what the attention writes into the residual stream",
    "blocks.{i}.resid_mid": "[b, n, D] residual stream after the attention",
    "blocks.{i}.cross_attn.*": "the same names for T5's decoder cross-attention (m: encoder)",
    "blocks.{i}.resid_cross": "[b, n, D] residual after the cross-attention (T5 decoder)",
    "blocks.{i}.mlp.post": "[b, n, F] the MLP's hidden activation (after the nonlinearity)",
    "blocks.{i}.mlp.router_probs": "[b, n, E] mixture-of-experts router probabilities "
                                   "(read only)",
    "blocks.{i}.mlp.out": "[b, n, D] what the MLP writes into the residual stream",
    "blocks.{i}.resid_post": "[b, n, D] residual stream leaving block i",
    "final_norm": "[b, n, D] the final norm's output (what the unembedding reads)",
}


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
    """Decides which named activations to keep and which to replace during one call.

    ``names``: None keeps everything; an iterable keeps exactly those names, where ``*``
    inside a name matches one dot-separated part (``"blocks.*.attn.pattern"``) and a
    trailing ``*`` matches any suffix (``"blocks.0.*"``: everything in block 0); a
    callable is a predicate on the name. ``edits`` maps exact names to functions that
    return the activation's replacement (see the module docstring).
    """

    def __init__(self, names: NameFilter = None, edits: Mapping[str, Edit] | None = None
                 ) -> None:
        self.cache = ActivationCache()
        self.edits: dict[str, Edit] = dict(edits or {})
        self.applied: set[str] = set()
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

    def touches(self, name: str) -> bool:
        """Whether ``name`` is kept or edited (a forward must then compute it explicitly)."""
        return name in self.edits or self._wants(name)

    def save(self, name: str, tensor: torch.Tensor) -> None:
        """Keep a detached reference to ``tensor`` if ``name`` is wanted."""
        if self._wants(name):
            self.cache[name] = tensor.detach()

    def edit(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``, or its replacement when an edit names it (same shape and dtype)."""
        fn = self.edits.get(name)
        if fn is None:
            return tensor
        out = fn(tensor)
        if not isinstance(out, torch.Tensor) or out.shape != tensor.shape:
            shape = getattr(out, "shape", type(out).__name__)
            raise ValueError(f"the edit of {name} must return a tensor of shape "
                             f"{tuple(tensor.shape)}, not {shape}")
        self.applied.add(name)
        return out.to(tensor.dtype)

    def through(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Edit then keep: what flows on from an activation point."""
        tensor = self.edit(name, tensor)
        self.save(name, tensor)
        return tensor

    def check_applied(self) -> None:
        """Raise when an edit named an activation this forward never computed."""
        missing = sorted(set(self.edits) - self.applied)
        if missing:
            raise ValueError(
                f"no activation named {', '.join(missing)} in this forward; names are listed "
                "in explorer.nn.capture.ACTIVATIONS (e.g. blocks.0.attn.z)")


def capture_for(capture: Capture | None, edits: Mapping[str, Edit] | None) -> Capture | None:
    """The capture a forward uses: ``capture`` with ``edits`` added (a new empty capture
    when only edits are given). Edits given twice for one name are refused."""
    if not edits:
        return capture
    if capture is None:
        return Capture(names=(), edits=edits)
    clash = set(capture.edits) & set(edits)
    if clash:
        raise ValueError(f"edits given twice for {sorted(clash)}")
    capture.edits.update(edits)
    return capture
