"""A fast-loading tokenizer with the transformers tokenizer API.

Importing transformers' tokenizer machinery costs about 2.5 s here, more than the whole
warm-load budget, so a converted model's tokenizer is served by `FastTokenizer`: the Rust
``tokenizers.Tokenizer`` read straight from ``tokenizer.json`` (0.1 s) plus the saved
special tokens and chat template. It implements the calls the app makes on every request
(``__call__``, ``encode``, ``decode``, ``convert_ids_to_tokens``, special-token ids, chat
rendering) with the same results as transformers (tests/parity checks it) and hands any
other attribute to the real transformers tokenizer, built lazily on first use from the
same directory. `tokenizer_lock` gives the lock that callers on several threads hold around
each call (one tokenizer serves every browser session).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                 "mask_token")


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _ids_list(ids: Any) -> list[int]:
    if isinstance(ids, torch.Tensor):
        return ids.reshape(-1).tolist()
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


class FastTokenizer:
    """transformers-compatible tokenizer over a saved directory's ``tokenizer.json``."""

    def __init__(self, directory: str | Path) -> None:
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        self.backend = Tokenizer.from_file(str(self.directory / "tokenizer.json"))
        # like transformers: padding/truncation saved in tokenizer.json are not applied
        self.backend.no_padding()
        self.backend.no_truncation()
        config = self._json("tokenizer_config.json")
        config.update({k: v for k, v in self._json("special_tokens_map.json").items()
                       if k not in config})
        self.name_or_path = str(self.directory)
        self.model_max_length = int(config.get("model_max_length", 10**30))
        for name in SPECIAL_NAMES:
            setattr(self, name, _token_text(config.get(name)))
        template = config.get("chat_template")
        template_file = self.directory / "chat_template.jinja"
        if template is None and template_file.is_file():
            template = template_file.read_text(encoding="utf-8")
        self.chat_template: str | None = template if isinstance(template, str) else None
        self._hf = None
        self._lock = threading.Lock()

    def _json(self, name: str) -> dict:
        path = self.directory / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    # -- the transformers API the app uses --------------------------------------------------
    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True,
                 return_tensors: str | None = None, **kwargs: Any) -> dict[str, Any]:
        if kwargs:
            return self.hf(text, add_special_tokens=add_special_tokens,
                           return_tensors=return_tensors, **kwargs)
        batch = [text] if isinstance(text, str) else list(text)
        encodings = self.backend.encode_batch(batch, add_special_tokens=add_special_tokens)
        ids = [e.ids for e in encodings]
        masks = [e.attention_mask for e in encodings]
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(masks)}
        if isinstance(text, str):
            return {"input_ids": ids[0], "attention_mask": masks[0]}
        return {"input_ids": ids, "attention_mask": masks}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(_ids_list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Iterable[Any], skip_special_tokens: bool = False):
        return [self.decode(s, skip_special_tokens) for s in sequences]

    def tokenize(self, text: str) -> list[str]:
        return self.backend.encode(text, add_special_tokens=False).tokens

    def convert_ids_to_tokens(self, ids: int | Any) -> str | list[str | None] | None:
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        return [self.backend.id_to_token(i) for i in _ids_list(ids)]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int | None]:
        if isinstance(tokens, str):
            return self.backend.token_to_id(tokens)
        return [self.backend.token_to_id(t) for t in tokens]

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def _special_id(self, name: str) -> int | None:
        token = getattr(self, name)
        return None if token is None else self.backend.token_to_id(token)

    bos_token_id = property(lambda self: self._special_id("bos_token"))
    eos_token_id = property(lambda self: self._special_id("eos_token"))
    unk_token_id = property(lambda self: self._special_id("unk_token"))
    sep_token_id = property(lambda self: self._special_id("sep_token"))
    pad_token_id = property(lambda self: self._special_id("pad_token"))
    cls_token_id = property(lambda self: self._special_id("cls_token"))
    mask_token_id = property(lambda self: self._special_id("mask_token"))

    @property
    def backend_tokenizer(self) -> Any:
        """The Rust tokenizer, as transformers' fast tokenizers name it (reading its decoder
        must not build the transformers tokenizer: that import costs seconds)."""
        return self.backend

    @property
    def all_special_tokens(self) -> list[str]:
        added = [t.content for t in self.backend.get_added_tokens_decoder().values() if t.special]
        named = [getattr(self, n) for n in SPECIAL_NAMES if getattr(self, n)]
        return list(dict.fromkeys(named + added))

    @property
    def all_special_ids(self) -> list[int]:
        ids = [self.backend.token_to_id(t) for t in self.all_special_tokens]
        return [i for i in ids if i is not None]

    def render_chat(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The chat template applied to ``messages`` as text (as transformers renders it)."""
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template (not an instruct model)")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        specials = {n: getattr(self, n) for n in SPECIAL_NAMES}
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **specials
        )

    # -- everything else: the real transformers tokenizer, built on first use ----------------
    @property
    def hf(self):
        """The transformers tokenizer of the same directory (imports transformers)."""
        with self._lock:
            if self._hf is None:
                from transformers import AutoTokenizer

                self._hf = AutoTokenizer.from_pretrained(str(self.directory))
            return self._hf

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("backend", "directory"):
            raise AttributeError(name)
        return getattr(self.hf, name)

    def __repr__(self) -> str:
        return f"FastTokenizer({self.name_or_path!r}, vocab={len(self)})"


_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def tokenizer_lock(tokenizer: Any) -> threading.RLock:
    """The lock to hold around calls on a tokenizer shared by several threads.

    One tokenizer serves every browser session. A Rust (fast) tokenizer raises
    ``RuntimeError: Already borrowed`` when one thread changes its truncation or padding
    (transformers does so inside ``__call__`` whenever the arguments differ from the last
    call) while another thread is encoding with it; holding this lock around each call
    serialises them. Re-entrant, one per tokenizer object.
    """
    with _LOCKS_GUARD:
        try:
            lock = _LOCKS.get(tokenizer)
            if lock is None:
                lock = _LOCKS[tokenizer] = threading.RLock()
        except TypeError:  # not weak-referenceable: keep the lock on the object itself
            lock = tokenizer.__dict__.setdefault("_explorer_lock", threading.RLock())
        return lock


def load_tokenizer(directory: Path):
    """`FastTokenizer` when the directory has tokenizer.json, else transformers' AutoTokenizer,
    else None (a weights-only directory, such as the tiny test models)."""
    if (directory / "tokenizer.json").is_file():
        return FastTokenizer(directory)
    if not any((directory / f).is_file() for f in ("vocab.txt", "vocab.json", "spiece.model",
                                                   "tokenizer.model", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))
