"""One tokenizer shared by many threads: every call site holds `tokenizer_lock`.

Rust (fast) tokenizers raise ``RuntimeError: Already borrowed`` when one thread changes the
truncation or padding while another encodes. `BorrowChecked` raises the same whenever two
threads are inside it at once, so any call site that forgets the lock fails here.
"""

from __future__ import annotations

import threading
import time

import torch

from explorer.generation.text import IncrementalDetokenizer, prompt_ids, token_text
from explorer.models.tokenizer import tokenizer_lock
from explorer.ui.widgets import tokenize


class BorrowChecked:
    """A word tokenizer that, like a Rust tokenizer, refuses concurrent use."""

    all_special_ids = (0,)
    eos_token_id = 0

    def __init__(self) -> None:
        self._inside = 0
        self._guard = threading.Lock()

    def _enter(self) -> None:
        with self._guard:
            self._inside += 1
            busy = self._inside > 1
        try:
            if busy:
                raise RuntimeError("Already borrowed")
            time.sleep(0.0005)  # hold the borrow long enough for others to collide
        finally:
            with self._guard:
                self._inside -= 1

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        self._enter()
        return {"input_ids": [1 + len(w) for w in text.split()]}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self._enter()
        return [1 + len(w) for w in text.split()]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        self._enter()
        return " ".join(f"w{int(i)}" for i in ids)

    def convert_ids_to_tokens(self, ids):
        self._enter()
        return [f"w{i}" for i in ids]


class FakeLM:
    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.device = tokenizer, torch.device("cpu")


def hammer(work, n_threads: int = 6, rounds: int = 40) -> list[str]:
    errors: list[str] = []

    def run(k: int) -> None:
        for r in range(rounds):
            try:
                work(k, r)
            except RuntimeError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_the_fake_detects_unlocked_concurrent_use() -> None:
    tok = BorrowChecked()
    errors = hammer(lambda k, r: tok.encode(f"session {k} round {r}"))
    assert "Already borrowed" in errors


def test_call_sites_hold_the_lock_across_threads() -> None:
    tok = BorrowChecked()
    lm = FakeLM(tok)

    def work(k: int, r: int) -> None:
        text = f"session {k} says {'x' * (k + 1)} at round {r}"
        ids, pieces = tokenize(f"fake-{k}-{r}", text, tok)  # distinct keys: no cache hits
        assert ids == [1 + len(w) for w in text.split()] and len(pieces) == len(ids)
        assert prompt_ids(lm, text)[0].tolist() == ids
        assert token_text(tok, ids[0]) == f"w{ids[0]}"
        detok = IncrementalDetokenizer(tok, ids[:2])
        detok.push(ids[2])

    assert hammer(work) == []


def test_lock_is_one_reentrant_lock_per_tokenizer() -> None:
    a, b = BorrowChecked(), BorrowChecked()
    assert tokenizer_lock(a) is tokenizer_lock(a)
    assert tokenizer_lock(a) is not tokenizer_lock(b)
    with tokenizer_lock(a), tokenizer_lock(a):  # re-entrant: nested calls do not deadlock
        pass
