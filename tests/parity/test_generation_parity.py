"""explorer.generate on the embedded SmolLM2 vs transformers ``generate(do_sample=False)``.

Greedy decoding through our KV cache must pick the same token as transformers at every step;
the SmolLM2 tokenizer's byte tokens must stream as whole characters; chat prompts must be
the template transformers renders.
"""

from __future__ import annotations

import pytest
import torch

import explorer
from explorer.generation import IncrementalDetokenizer, end_token_ids

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "Once upon a time, in a small village by the sea, there lived",
    "Here is a list of fruits: apple, banana,",
]
NEW_TOKENS = 32


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_matches_transformers_generate(smollm2_pair, prompt: str) -> None:
    ours, ref = smollm2_pair
    ids = ours.encode(prompt)
    eos = ref.generation_config.eos_token_id
    with torch.no_grad():
        out = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                           do_sample=False, pad_token_id=eos)
    expected = out[0, ids.shape[1]:].tolist()
    steps = list(explorer.generate(ours, ids, max_new_tokens=NEW_TOKENS, stop_ids=[eos]))
    assert [s.token_id for s in steps] == expected
    assert len(expected) == NEW_TOKENS or steps[-1].finished == "eos"
    text = "".join(s.text for s in steps)
    assert text == ours.tokenizer.decode(expected, skip_special_tokens=True)


@pytest.mark.slow
def test_probabilities_match_transformers_logits(smollm2_pair) -> None:
    ours, ref = smollm2_pair
    ids = ours.encode(PROMPTS[0])
    steps = list(explorer.generate(ours, ids, max_new_tokens=8, stop_ids=()))
    full = torch.cat([ids, torch.tensor([[s.token_id for s in steps]])], dim=1)
    with torch.no_grad():
        probs = torch.softmax(ref(full).logits[0, ids.shape[1] - 1:-1], dim=-1)
    for step, p in zip(steps, probs, strict=True):
        assert step.prob == pytest.approx(float(p[step.token_id]), abs=1e-4)
        ent = float(-(p * p.clamp_min(1e-30).log()).sum())
        assert step.entropy == pytest.approx(ent, abs=1e-3)


@pytest.mark.slow
def test_smollm2_streams_multibyte_characters_whole(smollm2_pair) -> None:
    ours, _ = smollm2_pair
    text = "Hi 🤗 café, naïve — 東京"
    ids = ours.tokenizer.encode(text)
    detok = IncrementalDetokenizer(ours.tokenizer)
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) == text
    assert " 🤗" in pieces and all("\ufffd" not in p for p in pieces)
    assert len(ids) > len(pieces) - pieces.count("")  # some tokens held back


@pytest.mark.slow
def test_smollm2_chat_prompt_and_end_tokens(smollm2_pair) -> None:
    ours, _ = smollm2_pair
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    ids = explorer.chat_ids(ours, messages)
    assert torch.equal(ids, ours.encode_chat(messages))
    assert ours.tokenizer.decode(ids[0].tolist()).endswith("<|im_start|>assistant\n")
    im_end = ours.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in end_token_ids(ours.tokenizer)
    steps = list(explorer.generate(ours, ids, max_new_tokens=48))
    assert steps[-1].finished in ("eos", "max_new_tokens")
    assert "4" in "".join(s.text for s in steps)
