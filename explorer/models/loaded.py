"""`LoadedModel`: a pretrained model in our engine, with its tokenizer, device and dtype.

What `explorer.load` returns and every page uses: ``lm.encode(text)`` gives token ids
[1, n] on the model's device, ``lm.model`` is the `explorer.nn` model in eval mode,
``lm.decode(ids)`` turns ids back into text and ``lm.encode_chat`` applies an instruct
model's chat template. Vision models (ViT, CLIP) read images: ``lm.encode_image(image)``
gives pixel values [1, c, H, W] preprocessed as the checkpoint's image processor does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from explorer.config import ModelConfig
from explorer.models.sources import Source


@dataclass
class LoadedModel:
    """A pretrained model ready to run (see module docstring)."""

    name: str
    source: Source
    config: ModelConfig
    tokenizer: Any  # FastTokenizer / transformers tokenizer; None for weights-only dirs
    model: nn.Module
    device: torch.device
    dtype: torch.dtype
    load_seconds: float = 0.0
    from_cache: bool = False
    image_processor: Any = None  # explorer.models.image.ImageProcessor (vision models)

    def encode_image(self, image: Any) -> torch.Tensor:
        """Pixel values [1, c, H, W] of a PIL image, preprocessed as the checkpoint's own
        image processor does, on ``device`` in ``dtype``."""
        if self.image_processor is None:
            raise ValueError(f"{self.name} does not read images")
        return self.image_processor(image).to(device=self.device, dtype=self.dtype)

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError(f"{self.name} was loaded without a tokenizer; pass token ids")
        return self.tokenizer

    def encode(self, text: str, add_special_tokens: bool = True) -> torch.Tensor:
        """Token ids [1, n] (LongTensor on ``device``); refuses text longer than n_ctx (for
        CLIP, the text tower's)."""
        ids = self._require_tokenizer().encode(text, add_special_tokens=add_special_tokens)
        n_ctx = (self.config.text or self.config).n_ctx
        if len(ids) > n_ctx:
            raise ValueError(f"text is {len(ids)} tokens; {self.name} reads at most {n_ctx}")
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def decode(self, ids: torch.Tensor | list[int] | int, skip_special_tokens: bool = False) -> str:
        """Text of token ids (any shape; flattened)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        elif isinstance(ids, int):
            ids = [ids]
        return self._require_tokenizer().decode(ids, skip_special_tokens=skip_special_tokens)

    def tokens(self, ids: torch.Tensor | list[int]) -> list[str]:
        """The token strings of ids (flattened), for axis labels."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return [self.decode([i]) for i in ids]

    @property
    def is_instruct(self) -> bool:
        """Whether the tokenizer carries a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_text(self, messages: list[dict[str, str]] | str,
                  add_generation_prompt: bool = True) -> str:
        """The chat template applied to messages ({"role", "content"} dicts, or one user
        message as a string)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        tok = self._require_tokenizer()
        if not self.is_instruct:
            raise ValueError(f"{self.name} has no chat template (not an instruct model)")
        if hasattr(type(tok), "render_chat"):
            return tok.render_chat(messages, add_generation_prompt=add_generation_prompt)
        return tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                       tokenize=False)

    def encode_chat(self, messages: list[dict[str, str]] | str,
                    add_generation_prompt: bool = True) -> torch.Tensor:
        """Token ids [1, n] of the chat-formatted conversation (no extra special tokens)."""
        return self.encode(self.chat_text(messages, add_generation_prompt),
                           add_special_tokens=False)

    def __repr__(self) -> str:
        return (f"LoadedModel({self.name!r}, family={self.config.family}, "
                f"layers={self.config.n_layers}, device={self.device}, dtype={self.dtype})")
