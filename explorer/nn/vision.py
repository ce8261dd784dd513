"""The Vision Transformer: an image read as a sequence of patches (Dosovitskiy et al. 2021).

The image is cut into a grid of ``patch_size`` x ``patch_size`` squares; one convolution
whose stride equals its kernel (the patch size) projects each square to a d_model vector,
which is a linear map of the patch's flattened pixels. A learned class token is put in
front, learned positions are added (bicubically interpolated to the grid of an image of
another size, as DINO and transformers do), and the sequence runs through the same
pre-norm, bidirectional `Stack` of blocks as any text encoder; a final norm and, when the
checkpoint has one, a linear classifier read the class token. CLIP's vision tower
(Radford et al. 2021) is the same model with a norm right before the blocks
(``embed_norm``) and no classifier.

Shapes: b batch, c channels, H x W pixels, p patch size, gh x gw patch grid, P = gh * gw
patches, n = P + 1 positions (the class token is position 0, then the patches row by row),
D d_model, V classes.
Parameter names: embed.patches (conv [D, c, p, p]), embed.class_token [D],
embed.positions [n_ctx, D], embed.norm, blocks.{i}.*, final_norm, head ([V, D] + bias).
Captured names are the text models' (`explorer.nn.capture`): ``embed`` (class token and
patch embeddings, [b, n, D]), ``pos_embed`` ([n, D], interpolated when the grid differs),
``blocks.{i}.*`` with patches as positions, ``final_norm``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from explorer.config import ModelConfig
from explorer.nn.capture import ActivationCache, Capture, Edit, NameFilter, capture_for
from explorer.nn.model import Stack
from explorer.nn.norms import build_norm


def interpolate_positions(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Learned positions [1 + g*g, D] (class token, then a g x g grid) resized to another
    grid (gh, gw): [1 + gh*gw, D]. Bicubic, ``align_corners=False``, in float32."""
    side = round((table.shape[0] - 1) ** 0.5)
    if (side, side) == grid:
        return table
    patches = rearrange(table[1:].float(), "(h w) d -> 1 d h w", h=side, w=side)
    patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
    patches = rearrange(patches, "1 d h w -> (h w) d").to(table.dtype)
    return torch.cat([table[:1], patches])


class VisionEmbeddings(nn.Module):
    """Pixels -> class token + patch embeddings + positions [, CLIP's pre-blocks norm]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.patches = nn.Conv2d(cfg.n_channels, cfg.d_model, kernel_size=cfg.patch_size,
                                 stride=cfg.patch_size, bias=cfg.patch_bias)
        self.class_token = nn.Parameter(torch.zeros(cfg.d_model))
        self.positions = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.norm = build_norm(cfg) if cfg.embed_norm else None

    def grid(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        """The patch grid (gh, gw) of images [b, c, H, W] (partial patches are dropped)."""
        height, width = pixel_values.shape[-2:]
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(f"an image of {height}x{width} pixels is smaller than one "
                             f"{self.patch_size}x{self.patch_size} patch")
        return height // self.patch_size, width // self.patch_size

    def forward(
        self, pixel_values: torch.Tensor, capture: Capture | None = None, prefix: str = ""
    ) -> torch.Tensor:
        """pixel_values [b, c, H, W] -> the first residual stream [b, 1 + P, D]."""
        dtype = self.patches.weight.dtype
        grid = self.grid(pixel_values)
        patches = self.patches(pixel_values.to(dtype))  # [b, D, gh, gw]
        patches = rearrange(patches, "b d gh gw -> b (gh gw) d")
        cls = self.class_token.to(dtype).expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1)
        if capture is not None:
            x = capture.through(prefix + "embed", x)
        pos = interpolate_positions(self.positions.weight, grid).to(dtype)
        if capture is not None:
            pos = capture.through(prefix + "pos_embed", pos)
        x = x + pos
        return x if self.norm is None else self.norm(x)


class VisionTransformer(Stack):
    """ViT: patch embeddings through a bidirectional pre-norm stack, then the classifier
    on the class token (see module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, cfg.n_layers, causal=False)
        self.embed = VisionEmbeddings(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.d_vocab) if cfg.has_unembed else None

    def features(
        self, pixel_values: torch.Tensor, capture: Capture | None = None, prefix: str = ""
    ) -> torch.Tensor:
        """pixel_values [b, c, H, W] -> final (normed) states [b, 1 + P, D]."""
        x = self.embed(pixel_values, capture, prefix)
        return self.run_blocks(x, capture=capture, prefix=prefix)

    def forward(
        self,
        pixel_values: torch.Tensor,
        *,
        capture: Capture | None = None,
        edits: Mapping[str, Edit] | None = None,
    ) -> torch.Tensor:
        """pixel_values [b, c, H, W] -> class logits [b, V] read from the class token, or
        the final states [b, 1 + P, D] for a model without a classifier."""
        capture = capture_for(capture, edits)
        x = self.features(pixel_values, capture)
        if capture is not None:
            capture.check_applied()
        return x if self.head is None else self.head(x[:, 0])

    def unembed_residual(self, resid: torch.Tensor) -> torch.Tensor:
        """Class logits [..., V] of a residual [..., D] read as if it were the last layer's
        (final norm then classifier): the logit lens of the class token."""
        if self.head is None:
            raise ValueError("this vision model has no classifier")
        x = self.final_norm(resid) if self.final_norm is not None else resid
        return self.head(x)

    @torch.no_grad()
    def run_with_cache(
        self, pixel_values: torch.Tensor, names: NameFilter = None,
        edits: Mapping[str, Edit] | None = None,
    ) -> tuple[torch.Tensor, ActivationCache]:
        """(logits or final states, cache) of one forward over images [b, c, H, W]."""
        capture = Capture(names, edits)
        out = self(pixel_values, capture=capture)
        return out, capture.cache
