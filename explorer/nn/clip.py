"""CLIP: an image tower and a text tower trained to meet in one embedding space
(Radford et al. 2021).

The vision tower is a `VisionTransformer` with a norm before its blocks and no classifier;
its class token's final (normed) state, projected, is the image embedding. The text tower
is a causal pre-norm `Transformer` with learned positions and quick-GELU MLPs and no
unembedding; the final state of the end-of-text token, projected, is the text embedding.
Image-text logits are the cosine similarities of the two embeddings times
``exp(logit_scale)`` (the learned temperature).

Shapes: b images, t texts, n text positions, P projection_dim.
Parameter names: vision.* (as `explorer.nn.vision`), text.* (as `explorer.nn.model`),
visual_projection [P, D_vision], text_projection [P, D_text], logit_scale [].
Captured names are prefixed ``vision.`` and ``text.`` (``vision.blocks.3.attn.pattern``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from explorer.config import ModelConfig
from explorer.nn.capture import ActivationCache, Capture, Edit, NameFilter, capture_for
from explorer.nn.model import Transformer
from explorer.nn.vision import VisionTransformer


def end_of_text_positions(ids: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """Where each text's embedding is read, [t]: the first ``eos_token_id`` of each row of
    ids [t, n], or (None) each row's highest id, the original CLIP vocabulary's
    end-of-text token. A row without the token is refused."""
    if eos_token_id is None:
        return ids.argmax(dim=-1)
    is_eos = ids == eos_token_id
    if not bool(is_eos.any(dim=-1).all()):
        raise ValueError(f"every text must contain the end-of-text token {eos_token_id}")
    return is_eos.int().argmax(dim=-1)


class CLIP(nn.Module):
    """Image and text towers with their projections (see module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.text is None:
            raise ValueError("a CLIP config needs its text tower (cfg.text)")
        self.cfg = cfg
        self.vision = VisionTransformer(cfg)
        self.text = Transformer(cfg.text)
        self.visual_projection = nn.Linear(cfg.d_model, cfg.projection_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text.d_model, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.zeros(()))

    def image_embeds(
        self, pixel_values: torch.Tensor, capture: Capture | None = None
    ) -> torch.Tensor:
        """pixel_values [b, c, H, W] -> image embeddings [b, P] (not normalised)."""
        states = self.vision.features(pixel_values, capture, prefix="vision.")
        return self.visual_projection(states[:, 0])

    def text_embeds(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        capture: Capture | None = None,
    ) -> torch.Tensor:
        """input_ids [t, n] -> text embeddings [t, P] (not normalised)."""
        n = input_ids.shape[1]
        if n > self.cfg.text.n_ctx:
            raise ValueError(f"{n} text positions exceed the context length "
                             f"{self.cfg.text.n_ctx}")
        positions = torch.arange(n, device=input_ids.device)
        x = self.text.embed(input_ids, positions, capture=capture, prefix="text.")
        x = self.text.run_blocks(x, attention_mask=attention_mask, capture=capture,
                                 prefix="text.")
        at = end_of_text_positions(input_ids, self.cfg.eos_token_id)
        return self.text_projection(x[torch.arange(x.shape[0], device=x.device), at])

    def similarity(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Logits per image [b, t]: exp(logit_scale) * cosine(image, text)."""
        image = F.normalize(image_embeds.float(), dim=-1)
        text = F.normalize(text_embeds.float(), dim=-1)
        return self.logit_scale.float().exp() * image @ text.T

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        capture: Capture | None = None,
        edits: Mapping[str, Edit] | None = None,
    ) -> torch.Tensor:
        """Logits per image [b, t] of images against texts; without texts, the image
        embeddings [b, P]. ``edits`` name ``vision.`` / ``text.`` activations."""
        capture = capture_for(capture, edits)
        image = self.image_embeds(pixel_values, capture)
        out = image
        if input_ids is not None:
            out = self.similarity(image, self.text_embeds(input_ids, attention_mask, capture))
        if capture is not None:
            capture.check_applied()
        return out

    @torch.no_grad()
    def run_with_cache(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        names: NameFilter = None,
        edits: Mapping[str, Edit] | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, ActivationCache]:
        """(forward's output, cache): the vision tower's activations under ``vision.``,
        the text tower's (when texts are given) under ``text.``."""
        capture = Capture(names, edits)
        out = self(pixel_values, input_ids, capture=capture, **kwargs)
        return out, capture.cache
