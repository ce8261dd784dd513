"""Text around generation: streaming detokenisation, end-of-turn tokens, chat templates.

Byte-level BPE (GPT-2, Radford et al. 2019; SmolLM2) can split one character across tokens,
and SentencePiece (Kudo & Richardson 2018) drops a leading space when a token is decoded on
its own. `IncrementalDetokenizer` therefore decodes a short window of running ids (anchored
on the previous tokens) and emits only the new suffix, holding text back while it ends in
the replacement character U+FFFD (an incomplete UTF-8 sequence).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from explorer.models.tokenizer import tokenizer_lock

REPLACEMENT_CHAR = "\ufffd"

# End-of-turn / end-of-text tokens of common chat templates: generation stops on any that
# the tokenizer knows, as well as on its eos_token_id.
END_OF_TURN_TOKENS = (
    "<|im_end|>",  # ChatML: SmolLM2-Instruct, Qwen
    "<|endoftext|>",  # GPT-2, SmolLM2
    "<|eot_id|>",  # Llama 3
    "<|end_of_text|>",  # Llama 3
    "<end_of_turn>",  # Gemma
    "<|end|>",  # Phi-3
    "</s>",  # Llama 2, Mistral, T5
)

CHAT_ROLES = ("system", "user", "assistant")


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    with tokenizer_lock(tokenizer):  # one tokenizer serves every session's thread
        return tokenizer.decode(list(ids), skip_special_tokens=True)


def token_text(tokenizer: Any, token_id: int) -> str:
    """One token decoded on its own, special tokens included (may hold U+FFFD for a byte)."""
    with tokenizer_lock(tokenizer):
        return tokenizer.decode([int(token_id)], skip_special_tokens=False)


class IncrementalDetokenizer:
    """Turns a stream of token ids into a stream of text pieces whose concatenation is the
    decoded text of the whole stream.

    ``context_ids`` (the prompt) anchor the first tokens so a leading space survives.
    Each `push` returns the new text ("" while a multi-byte character is incomplete).
    """

    def __init__(self, tokenizer: Any, context_ids: Sequence[int] = (), n_anchor: int = 4):
        self.tokenizer, self.n_anchor = tokenizer, n_anchor
        self._ids = [int(i) for i in list(context_ids)[-n_anchor:]]
        self._anchor_len = len(self._ids)
        self._anchor_text = _decode(tokenizer, self._ids)

    def push(self, token_id: int) -> str:
        """Add one token id; return the text it completes."""
        self._ids.append(int(token_id))
        text = _decode(self.tokenizer, self._ids)
        if text.endswith(REPLACEMENT_CHAR):
            return ""  # wait for the rest of the character
        if text.startswith(self._anchor_text):
            new = text[len(self._anchor_text):]
        else:  # the anchor decoded differently in context: fall back to the pending ids alone
            new = _decode(self.tokenizer, self._ids[self._anchor_len:])
        self._ids = self._ids[-self.n_anchor:]
        self._anchor_len = len(self._ids)
        self._anchor_text = _decode(self.tokenizer, self._ids)
        return new

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end), as decoded."""
        pending = self._ids[self._anchor_len:]
        if not pending:
            return ""
        text = _decode(self.tokenizer, self._ids)
        self._ids, self._anchor_len = self._ids[-self.n_anchor:], len(self._ids[-self.n_anchor:])
        if text.startswith(self._anchor_text):
            return text[len(self._anchor_text):]
        return _decode(self.tokenizer, pending)


def end_token_ids(tokenizer: Any) -> frozenset[int]:
    """eos_token_id plus every known end-of-turn token the tokenizer has as a single token."""
    ids: set[int] = set()
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, Iterable):
        ids.update(int(i) for i in eos)
    convert = getattr(tokenizer, "convert_tokens_to_ids", None)
    if convert is None:
        return frozenset(ids)
    unk, unk_token = getattr(tokenizer, "unk_token_id", None), getattr(tokenizer, "unk_token", None)
    for token in END_OF_TURN_TOKENS:
        token_id = convert(token)
        # a tokenizer may map an unknown string to its unk id: only a real match counts
        if isinstance(token_id, int) and token_id >= 0 and (token_id != unk or token == unk_token):
            ids.add(token_id)
    return frozenset(ids)


def validate_messages(messages: Sequence[dict]) -> list[dict[str, str]]:
    """Check a chat history: a non-empty list of {"role", "content"} with known roles."""
    if not messages:
        raise ValueError("the conversation is empty: add at least one message")
    clean = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise ValueError(f"message {i}: role must be one of {CHAT_ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be text")
        clean.append({"role": role, "content": content})
    return clean


def _as_ids(lm: Any, ids: Sequence[int]) -> torch.Tensor:
    return torch.tensor([list(ids)], dtype=torch.long, device=getattr(lm, "device", None))


def prompt_ids(lm: Any, text: str) -> torch.Tensor:
    """Token ids [1, n] of a plain prompt, however long (`generate` cuts it to the context)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the prompt is empty: type some text to continue")
    with tokenizer_lock(lm.tokenizer):
        return _as_ids(lm, lm.tokenizer.encode(text))


def chat_ids(lm: Any, messages: Sequence[dict]) -> torch.Tensor:
    """Token ids [1, n] (on ``lm.device``) of a conversation in the model's chat template,
    ending with the prompt for the assistant's next turn (add_generation_prompt=True)."""
    messages = validate_messages(messages)
    tokenizer = lm.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{getattr(lm, 'name', 'this model')} has no chat template: "
                         "use a plain prompt instead")
    with tokenizer_lock(tokenizer):
        if hasattr(lm, "chat_text"):
            text = lm.chat_text(messages, add_generation_prompt=True)
        else:
            text = tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
        return _as_ids(lm, tokenizer.encode(text, add_special_tokens=False))
