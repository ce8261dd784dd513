"""One forward of one image through a ViT or CLIP's vision tower, kept for every view.

`run_image` keeps what the image views read: every layer's attention pattern over the class
token and the patches (ViT-B/16 at 224 px: 12 x 12 x 197 x 197 floats, 22 MB), the
residual stream after every block (7 MB; the class token's feeds the logit lens, the
patches' their geometry), and the classifier's logits or CLIP's image embedding. The views
derive the rest: a query's weights laid out on the patch grid (`patch_grid_weights`),
attention rollout from the class token (Abnar & Zuidema 2020,
`explorer.analysis.attention.attention_rollout`), the class token's logit lens, and the
patches' principal axes (`patch_pca`).

Shapes: L layers, h heads, n = 1 + P positions (class token first, then the patches row by
row), gh x gw patch grid, V classes, D d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.analysis.attention import attention_rollout
from explorer.analysis.geometry import pca_2d, residual_norms
from explorer.nn.capture import Capture


@dataclass
class ImageRun:
    """The small record of one image's forward (see module docstring)."""

    grid: tuple[int, int]  # (gh, gw)
    patterns: torch.Tensor  # [L, h, n, n] float32 on the CPU
    resid: torch.Tensor  # [L, n, D] every position after each block
    logits: torch.Tensor | None  # [V] ViT classifier logits
    image_embed: torch.Tensor | None  # [P] CLIP image embedding (not normalised)

    def nbytes(self) -> int:
        tensors = (self.patterns, self.resid, self.logits, self.image_embed)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    @property
    def class_resid(self) -> torch.Tensor:
        """[L, D] the class token after each block."""
        return self.resid[:, 0]

    @property
    def n_layers(self) -> int:
        return self.patterns.shape[0]

    @property
    def n_heads(self) -> int:
        return self.patterns.shape[1]


def _prefix(model: torch.nn.Module) -> str:
    return "vision." if model.cfg.kind == "vision-text" else ""


@torch.no_grad()
def run_image(model: torch.nn.Module, pixel_values: torch.Tensor) -> ImageRun:
    """One forward of pixel_values [1, c, H, W] through a ViT or a CLIP model's vision
    tower, capturing every pattern and the class token's residual after every block."""
    if pixel_values.shape[0] != 1:
        raise ValueError("run_image reads one image at a time")
    prefix = _prefix(model)
    names = [f"{prefix}blocks.*.attn.pattern", f"{prefix}blocks.*.resid_post"]
    out, cache = model.run_with_cache(pixel_values, names=names)
    tower = model.vision if prefix else model
    grid = tower.embed.grid(pixel_values)
    patterns = cache.stack("attn.pattern", prefix)[:, 0].float().cpu()
    resid = cache.stack("resid_post", prefix)[:, 0].float().cpu()
    is_classifier = not prefix and tower.head is not None
    return ImageRun(
        grid=grid, patterns=patterns, resid=resid,
        logits=out[0].float().cpu() if is_classifier else None,
        image_embed=out[0].float().cpu() if prefix else None,
    )


def patch_grid_weights(row: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """One query's weights over n = 1 + P keys -> the patches' share laid out [gh, gw]
    (the class token's own weight is left out)."""
    gh, gw = grid
    if row.shape[-1] != 1 + gh * gw:
        raise ValueError(f"{row.shape[-1]} keys for a {gh} x {gw} grid and a class token")
    return row[..., 1:].reshape(*row.shape[:-1], gh, gw)


def query_weights(run: ImageRun, layer: int, head: int | None, query: int) -> torch.Tensor:
    """Attention of position ``query`` (0: the class token) at ``layer`` on the patch grid
    [gh, gw]; ``head`` None averages the heads."""
    pattern = run.patterns[layer]
    rows = pattern[:, query] if head is None else pattern[head, query][None]
    return patch_grid_weights(rows.mean(0), run.grid)


def class_rollout(run: ImageRun, layer: int | None = None,
                  residual_weight: float = 0.5) -> torch.Tensor:
    """How much the class token after ``layer`` (default: the last) draws from each patch
    by attention rollout (heads averaged, the residual as ``residual_weight`` of identity):
    [gh, gw]."""
    rollout = attention_rollout(run.patterns, residual_weight=residual_weight)
    return patch_grid_weights(rollout[-1 if layer is None else layer, 0], run.grid)


def class_lens(model: torch.nn.Module, run: ImageRun) -> torch.Tensor:
    """Class probabilities [L, V] of the class token after every block read through the
    final norm and the classifier (the logit lens of a ViT)."""
    head = next(model.parameters())
    logits = model.unembed_residual(run.class_resid.to(device=head.device, dtype=head.dtype))
    return logits.float().softmax(-1).cpu()


def patch_label(index: int, grid: tuple[int, int]) -> str:
    """A position's name: 0 is the class token, 1 + r * gw + c the patch at (r, c)."""
    if index == 0:
        return "class token"
    r, c = divmod(index - 1, grid[1])
    return f"patch row {r}, col {c}"


def patch_pca(run: ImageRun, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The patches after ``layer`` on their top two principal axes [P, 2] (row by row),
    and each axis's share of the variance [2]."""
    return pca_2d(run.resid[layer, 1:])


@torch.no_grad()
def caption_patterns(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Every attention pattern [L, h, n, n] of CLIP's (causal) text tower over one text's
    ids [1, n]."""
    capture = Capture(names=["text.blocks.*.attn.pattern"])
    model.text_embeds(ids, capture=capture)
    return capture.cache.stack("attn.pattern", "text.")[:, 0].float().cpu()


def stream_norms(run: ImageRun) -> dict[str, torch.Tensor]:
    """Residual-stream norms after each block [L]: the class token's, and the mean, min
    and max over the patches."""
    norms = residual_norms(run.resid)  # [L, n]
    patches = norms[:, 1:]
    return {"class token": norms[:, 0], "patches (mean)": patches.mean(-1),
            "patches (min)": patches.amin(-1), "patches (max)": patches.amax(-1)}
