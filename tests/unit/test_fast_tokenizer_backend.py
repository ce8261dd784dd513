"""`FastTokenizer.backend_tokenizer`: the chips of a prompt (`is_byte_level`) read the Rust
tokenizer's decoder without building the transformers tokenizer (an import of seconds that
the first page of a process used to pay), and answer as transformers' own tokenizer does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from explorer.models.tokenizer import FastTokenizer
from explorer.ui.widgets import chips_for, is_byte_level

WORDS = ["the", "cat", "sat", "on", "mat", "a", "b"]


def _save(directory: Path, tokenizer: Tokenizer) -> FastTokenizer:
    directory.mkdir()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"unk_token": "[UNK]"}))
    return FastTokenizer(directory)


def byte_level(tmp_path: Path) -> FastTokenizer:
    """A byte-level BPE (GPT-2 style: spaces become ``Ġ``)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {piece: i for i, piece in enumerate(sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return _save(tmp_path / "bpe", tokenizer)


def word_piece(tmp_path: Path) -> FastTokenizer:
    """A WordPiece tokenizer (BERT style: no byte-level pieces)."""
    vocab = {piece: i for i, piece in enumerate(["[UNK]", *WORDS])}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece()
    return _save(tmp_path / "wordpiece", tokenizer)


@pytest.mark.parametrize(("make", "expected"), [(byte_level, True), (word_piece, False)])
def test_byte_level_answered_without_transformers(tmp_path: Path, make, expected: bool) -> None:
    tokenizer = make(tmp_path)
    assert tokenizer.backend_tokenizer is tokenizer.backend
    assert is_byte_level(tokenizer) is expected
    ids = tokenizer.encode("the cat sat")
    chips = chips_for(tokenizer, ids, tokenizer.convert_ids_to_tokens(ids))
    assert [chip.position for chip in chips] == list(range(len(ids)))
    assert tokenizer._hf is None  # the transformers tokenizer was never built


@pytest.mark.parametrize("make", [byte_level, word_piece])
def test_same_decoder_as_transformers(tmp_path: Path, make) -> None:
    transformers = pytest.importorskip("transformers")
    ours = make(tmp_path)
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(ours.directory /
                                                                     "tokenizer.json"))
    assert repr(ours.backend_tokenizer.decoder) == repr(theirs.backend_tokenizer.decoder)
    assert is_byte_level(ours) is is_byte_level(theirs)
