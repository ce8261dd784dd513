"""Helpers for reading an AppTest run (imported by the app tests by a unique module name)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from streamlit.testing.v1 import AppTest


def sidebar_errors(at: AppTest) -> list[str]:
    return [error.value for error in at.sidebar.error]


class WordTokenizer:
    """Whitespace tokenizer over a tiny vocabulary: id 1 starts a sequence ([BOS]-like)."""

    all_special_ids = (0, 1)
    bos_token_id = 1

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [2 + sum(map(ord, word)) % 30 for word in text.split()]
        return [1, *ids] if add_special_tokens else ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def convert_ids_to_tokens(self, ids):
        return ["<s>" if i == 1 else f"w{i}" for i in ids]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        tokens = self.convert_ids_to_tokens([int(i) for i in ids])
        return " ".join(t for t in tokens if not (skip_special_tokens and t == "<s>"))


@contextmanager
def model_in_store(at: AppTest, name: str, cfg) -> Iterator[None]:
    """A random model built from ``cfg`` (no download, :class:`WordTokenizer`) put in the
    app's model store and selected for the AppTest session ``at``, removed afterwards."""
    from explorer.models.loaded import LoadedModel
    from explorer.nn import build_model
    from explorer.ui.resources import ModelKey, model_store

    torch.manual_seed(0)
    lm = LoadedModel(name, None, cfg, WordTokenizer(), build_model(cfg).eval(),
                     torch.device("cpu"), torch.float32)
    key = ModelKey(f"{name}-test")
    model_store().put(key, lm)
    at.session_state["model_key"] = key
    at.session_state["first_load_done"] = True
    try:
        yield
    finally:
        model_store().discard(key)


def tiny_t5_in_store(at: AppTest):
    """A tiny random T5-like model in the store, selected for ``at`` (a context manager)."""
    from explorer.config import ModelConfig

    cfg = ModelConfig(d_model=16, n_heads=4, d_mlp=24, d_vocab=37, n_ctx=64, n_layers=2,
                      kind="encoder-decoder", positional="relative", norm="rmsnorm",
                      mlp="geglu", n_decoder_layers=3, name="tiny-t5", family="t5")
    return model_in_store(at, "tiny-t5", cfg)
