"""explorer.generation: sampling filters, KV-cache decoding, streaming text, attention capture.

Tiny seeded models and a byte-level tokenizer (one token per UTF-8 byte), no downloads.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import explorer
from explorer.config import ModelConfig
from explorer.generation import (
    IncrementalDetokenizer,
    SamplingParams,
    apply_temperature,
    chat_ids,
    end_token_ids,
    entropy,
    fit_prompt,
    generate,
    prompt_ids,
    sample,
    sampling_distribution,
    top_k_filter,
    top_p_filter,
    validate_messages,
)
from explorer.generation.fast_step import FastDecoder
from explorer.nn import KVCache, build_model
from explorer.nn.packing import pack_model

EOS = 256


class ByteTokenizer:
    """Token i < 256 is byte i; 256 is <eos>. Decodes like byte-level BPE (lossy UTF-8)."""

    eos_token_id = EOS
    unk_token_id = None
    chat_template = "{role}: {content}\n"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        data = bytes(i for i in ids if i < 256)
        text = data.decode("utf-8", errors="replace")
        has_eos = any(i == EOS for i in ids)
        return text + ("<eos>" if has_eos and not skip_special_tokens else "")

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return {"<eos>": EOS, "<|im_end|>": None}.get(token)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True) -> str:
        text = "".join(self.chat_template.format(**m) for m in messages)
        return text + ("assistant:" if add_generation_prompt else "")


class SentencePieceLike(ByteTokenizer):
    """Drops the leading space of the decoded text, as SentencePiece does at a sequence start."""

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        text = super().decode(ids, skip_special_tokens)
        return text[1:] if text.startswith(" ") else text


def tiny_lm(positional: str = "rope", n_ctx: int = 64, seed: int = 0, **overrides):
    cfg = ModelConfig(
        d_model=32, n_heads=4, n_kv_heads=2 if positional == "rope" else 4, d_mlp=48,
        d_vocab=257, n_ctx=n_ctx, n_layers=2, positional=positional,
        norm="rmsnorm" if positional == "rope" else "layernorm",
        mlp="swiglu" if positional == "rope" else "gelu", **overrides,
    )
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    return SimpleNamespace(name="tiny", config=cfg, model=model, tokenizer=ByteTokenizer(),
                           device=torch.device("cpu"), dtype=torch.float32)


POSITIONALS = ["rope", "learned", "alibi"]
PROMPT = torch.tensor([[72, 101, 108, 108, 111, 44, 32, 119]])


# ---- sampling --------------------------------------------------------------------------

def test_top_k_keeps_exactly_the_k_largest() -> None:
    logits = torch.tensor([1.0, 5.0, 3.0, 4.0, 2.0])
    kept = torch.isfinite(top_k_filter(logits, 2)).nonzero().flatten().tolist()
    assert kept == [1, 3]
    assert torch.equal(top_k_filter(logits, 2)[[1, 3]], logits[[1, 3]])
    assert torch.equal(top_k_filter(logits, None), logits)
    assert torch.equal(top_k_filter(logits, 10), logits)


@pytest.mark.parametrize(("p", "expected"), [
    (0.05, {3}), (0.5, {3}), (0.7, {3, 0}), (0.8, {3, 0, 4}), (0.95, {3, 0, 4, 1, 2}),
    (1.0, {0, 1, 2, 3, 4}),
])
def test_top_p_keeps_smallest_set_with_mass_at_least_p(p: float, expected: set[int]) -> None:
    # probabilities 1/2, 1/4, 1/8, 1/16, 1/16 scattered over positions 3, 0, 4, 1, 2
    probs = torch.tensor([0.25, 0.0625, 0.0625, 0.5, 0.125], dtype=torch.float64)
    filtered = top_p_filter(probs.log(), p)
    assert set(torch.isfinite(filtered).nonzero().flatten().tolist()) == expected


def test_top_p_always_keeps_the_most_likely_token() -> None:
    logits = torch.tensor([0.0, 0.0, 10.0])
    assert torch.isfinite(top_p_filter(logits, 1e-9)).nonzero().flatten().tolist() == [2]


def test_temperature_and_distribution() -> None:
    logits = torch.tensor([1.0, 2.0, 4.0])
    assert torch.allclose(apply_temperature(logits, 2.0), logits / 2)
    with pytest.raises(ValueError):
        apply_temperature(logits, 0.0)
    greedy = sampling_distribution(logits, SamplingParams())
    assert torch.allclose(greedy, torch.softmax(logits, -1))
    hot = sampling_distribution(logits, SamplingParams(temperature=0.5, top_k=2))
    expected = torch.softmax(torch.tensor([2.0, 4.0]) / 0.5, -1)
    assert hot[0] == 0 and torch.allclose(hot[1:], expected)
    with pytest.raises(ValueError):
        SamplingParams(top_p=1.5)


def test_entropy_in_nats() -> None:
    assert entropy(torch.full((4,), 0.25)) == pytest.approx(math.log(4))
    assert entropy(torch.tensor([1.0, 0.0, 0.0])) == 0.0


def test_sample_uses_only_the_given_generator() -> None:
    probs = torch.full((1000,), 1e-3)
    draws = [[sample(probs, torch.Generator().manual_seed(s)) for _ in range(1)] for s in (1, 1, 2)]
    assert draws[0] == draws[1]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    gen = torch.Generator().manual_seed(3)
    seq_a = [sample(probs, gen) for _ in range(20)]
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    gen = torch.Generator().manual_seed(3)
    assert [sample(probs, gen) for _ in range(20)] == seq_a
    gen = torch.Generator().manual_seed(4)
    assert [sample(probs, gen) for _ in range(20)] != seq_a


def test_sample_frequencies_follow_probs() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.7, 0.3])
    ones = sum(sample(probs, gen) for _ in range(2000))
    assert abs(ones / 2000 - 0.3) < 0.04


# ---- KV cache and greedy decoding -------------------------------------------------------

@pytest.mark.parametrize("positional", POSITIONALS)
def test_kv_cache_logits_equal_full_recomputation_every_step(positional: str) -> None:
    lm = tiny_lm(positional)
    ids = torch.randint(0, 257, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = lm.model(ids)
        cache = KVCache(lm.config, 20)
        steps = [lm.model(ids[:, :6], kv_cache=cache, last_only=True)]
        steps += [lm.model(ids[:, i:i + 1], kv_cache=cache, last_only=True) for i in range(6, 20)]
    incremental = torch.cat(steps, dim=1)
    assert torch.allclose(incremental, full[:, 5:], atol=1e-5)


FALLBACK_CONFIGS = {
    "post-norm": {"norm_position": "post"},
    "window": {"window": 3},
}


FAST_VARIANTS = {  # every path through FastDecoder's step
    "rope": ("rope", {}),
    "learned": ("learned", {}),
    "alibi": ("alibi", {}),
    "gpt2-biases": ("learned", {"qkv_bias": True, "out_bias": True, "mlp_bias": True}),
    "qwen2-biases": ("rope", {"qkv_bias": True}),
}


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("variant", FAST_VARIANTS)
def test_fast_step_equals_model_forward_every_step(variant: str, packed: bool) -> None:
    positional, overrides = FAST_VARIANTS[variant]
    lm = tiny_lm(positional, seed=3, **overrides)
    if not packed:  # .to() gives each parameter its own storage: concatenated copies
        lm.model.to(torch.float64).to(torch.float32)
    ids = torch.randint(0, 257, (1, 16), generator=torch.Generator().manual_seed(2))
    cache = KVCache(lm.config, 16)
    fast = FastDecoder.build(lm.model, cache)
    assert fast is not None
    with torch.no_grad():
        full, captured = lm.model.run_with_cache(ids, names=["blocks.*.attn.pattern"])
        patterns = captured.stack("attn.pattern")[:, 0]  # [L, h, n, n]
        lm.model(ids[:, :4], kv_cache=cache)
        for i in range(4, 16):
            logits, attention = fast.step(ids[:, i:i + 1], capture_attention=True)
            assert torch.allclose(logits, full[0, i], atol=1e-5)
            assert torch.allclose(attention, patterns[:, :, i, :i + 1], atol=1e-6)
    assert cache.length == 16


@pytest.mark.parametrize("name", FALLBACK_CONFIGS)
def test_general_path_for_other_architectures(name: str) -> None:
    lm = tiny_lm("learned", **FALLBACK_CONFIGS[name])
    assert FastDecoder.build(lm.model, KVCache(lm.config, 8)) is None
    steps = list(generate(lm, PROMPT, max_new_tokens=6, stop_ids=(), capture_attention=True))
    assert [s.token_id for s in steps] == naive_greedy(lm.model, PROMPT, 6)[0]
    assert all(torch.allclose(s.attention.sum(-1), torch.ones(2, 4), atol=1e-5) for s in steps)


def naive_greedy(model, ids: torch.Tensor, n: int) -> tuple[list[int], list[float]]:
    """Greedy decoding re-running the whole sequence each step (no cache)."""
    tokens, probs = [], []
    with torch.no_grad():
        for _ in range(n):
            p = torch.softmax(model(ids)[0, -1], -1)
            tokens.append(int(p.argmax()))
            probs.append(float(p.max()))
            ids = torch.cat([ids, torch.tensor([[tokens[-1]]])], dim=1)
    return tokens, probs


@pytest.mark.parametrize("positional", POSITIONALS)
def test_greedy_generate_equals_recomputation(positional: str) -> None:
    lm = tiny_lm(positional)
    steps = list(generate(lm, PROMPT, max_new_tokens=12, stop_ids=()))
    tokens, probs = naive_greedy(lm.model, PROMPT, 12)
    assert [s.token_id for s in steps] == tokens
    assert [s.prob for s in steps] == pytest.approx(probs, abs=1e-5)
    assert [s.index for s in steps] == list(range(12))
    assert [s.position for s in steps] == list(range(8, 20))
    assert steps[-1].finished == "max_new_tokens" and all(s.finished is None for s in steps[:-1])
    assert all(s.top_ids[0] == s.token_id and s.top_probs[0] == s.prob for s in steps)
    assert all(len(s.top_ids) == 10 and s.top_probs == sorted(s.top_probs, reverse=True)
               for s in steps)
    assert all(s.elapsed > 0 and s.ttft <= s.elapsed for s in steps)


def test_stops_on_eos_and_reports_it() -> None:
    lm = tiny_lm()
    first = next(generate(lm, PROMPT, max_new_tokens=5)).token_id
    steps = list(generate(lm, PROMPT, max_new_tokens=5, stop_ids=[first]))
    assert len(steps) == 1 and steps[0].finished == "eos"
    assert end_token_ids(lm.tokenizer) == {EOS}


def test_seeded_sampling_is_reproducible() -> None:
    lm = tiny_lm()

    def run(seed):
        return [s.token_id for s in generate(lm, PROMPT, max_new_tokens=16, temperature=2.0,
                                             seed=seed, stop_ids=())]

    assert run(7) == run(7)
    assert run(7) != run(8)
    top = list(generate(lm, PROMPT, max_new_tokens=8, temperature=1.0, top_k=3, seed=1,
                        stop_ids=()))
    assert all(sum(p > 0 for p in s.top_probs) <= 3 for s in top)
    assert all(s.token_id in s.top_ids[:3] for s in top)


def test_prompt_cut_from_the_left_and_max_new_tokens_bounded() -> None:
    fit = fit_prompt(torch.arange(30), n_ctx=16, max_new_tokens=6)
    assert fit.cut == 19 and fit.ids[0].tolist() == list(range(19, 30))
    assert fit.max_new_tokens == 6 and not fit.context_bound
    bounded = fit_prompt([1, 2, 3], n_ctx=16, max_new_tokens=1000)
    assert bounded.max_new_tokens == 15 and bounded.context_bound and bounded.cut == 1
    lm = tiny_lm(n_ctx=16)
    steps = list(generate(lm, torch.arange(40, 70), max_new_tokens=100, stop_ids=()))
    assert len(steps) == 15 and steps[-1].finished == "context"
    assert steps[0].prompt_cut == 28 and steps[-1].position == 16
    with pytest.raises(ValueError, match="empty"):
        list(generate(lm, torch.zeros(1, 0, dtype=torch.long)))
    with pytest.raises(ValueError, match="empty"):
        prompt_ids(lm, "   ")


def test_generate_rejects_encoders() -> None:
    lm = tiny_lm("learned", kind="encoder")
    with pytest.raises(ValueError, match="decoder"):
        next(generate(lm, PROMPT))


def test_generation_leaves_model_and_grad_mode_alone() -> None:
    lm = tiny_lm()
    before = copy.deepcopy(lm.model.state_dict())
    for _ in generate(lm, PROMPT, max_new_tokens=4, temperature=1.0, seed=0,
                      capture_attention=True):
        assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bfloat16_weights_generate() -> None:
    lm = tiny_lm()
    lm_bf16 = SimpleNamespace(**{**vars(lm), "model": copy.deepcopy(lm.model).bfloat16()})
    steps = list(generate(lm_bf16, PROMPT, max_new_tokens=6, stop_ids=()))
    assert len(steps) == 6 and all(0 < s.prob <= 1 for s in steps)


# ---- attention capture -----------------------------------------------------------------

@pytest.mark.parametrize("positional", POSITIONALS)
def test_captured_attention_is_the_last_row_of_the_full_pattern(positional: str) -> None:
    lm = tiny_lm(positional)
    plain = [s.token_id for s in generate(lm, PROMPT, max_new_tokens=6, stop_ids=())]
    steps = list(generate(lm, PROMPT, max_new_tokens=6, stop_ids=(), capture_attention=True))
    assert [s.token_id for s in steps] == plain
    for step in steps:
        context = torch.cat([PROMPT, torch.tensor([plain[: step.index]], dtype=torch.long)], 1)
        _, cache = lm.model.run_with_cache(context, names=["blocks.0.attn.pattern",
                                                           "blocks.1.attn.pattern"])
        full = cache.stack("attn.pattern")[:, 0, :, -1]  # [L, h, m]
        assert step.attention.shape == (2, 4, context.shape[1])
        assert torch.allclose(step.attention.sum(-1), torch.ones(2, 4), atol=1e-5)
        assert torch.allclose(step.attention, full, atol=1e-5)


# ---- text ------------------------------------------------------------------------------

def test_incremental_text_holds_back_split_multibyte_characters() -> None:
    text = "Hi 🤗 café ✓"
    tok = ByteTokenizer()
    detok = IncrementalDetokenizer(tok, tok.encode("say: "))
    pieces = [detok.push(i) for i in tok.encode(text)]
    assert "".join(pieces) == text
    emoji_bytes = len("🤗".encode())
    start = len("Hi ")
    assert pieces[start:start + emoji_bytes] == ["", "", "", "🤗"]
    assert "\ufffd" not in "".join(pieces)


def test_incremental_text_keeps_leading_space_with_sentencepiece_style_decoding() -> None:
    tok = SentencePieceLike()
    detok = IncrementalDetokenizer(tok, tok.encode("Hello"))
    assert [detok.push(i) for i in tok.encode(" world")] == list(" world")
    bare = IncrementalDetokenizer(tok)
    assert "".join(bare.push(i) for i in tok.encode(" x")) == "x"  # nothing to anchor on


def test_incomplete_character_at_the_end_is_flushed() -> None:
    tok = ByteTokenizer()
    detok = IncrementalDetokenizer(tok)
    assert detok.push(0xF0) == "" and detok.push(0x9F) == ""
    assert detok.flush() == "\ufffd"


def test_generated_text_concatenates_to_the_decoded_ids() -> None:
    lm = tiny_lm()
    steps = list(generate(lm, PROMPT, max_new_tokens=24, temperature=3.0, seed=5, stop_ids=()))
    ids = [s.token_id for s in steps]
    assert "".join(s.text for s in steps) == lm.tokenizer.decode(ids, skip_special_tokens=True)


def test_chat_ids_and_message_validation() -> None:
    lm = tiny_lm()
    ids = chat_ids(lm, [{"role": "user", "content": "hi"}])
    assert bytes(ids[0].tolist()).decode() == "user: hi\nassistant:"
    with pytest.raises(ValueError, match="empty"):
        validate_messages([])
    with pytest.raises(ValueError, match="role"):
        validate_messages([{"role": "wizard", "content": "x"}])
    lm.tokenizer.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        chat_ids(lm, [{"role": "user", "content": "hi"}])


def test_public_api() -> None:
    assert explorer.generate is generate
    assert explorer.chat_ids is chat_ids


# ---- record ----------------------------------------------------------------------------

def test_attention_storage_fits_the_budget() -> None:
    from explorer.generation import attention_storage

    assert attention_storage(30, 9, 32, 64) == "heads"
    assert attention_storage(30, 9, 4000, 256) == "layers"
    assert attention_storage(30, 9, 4000, 256, budget=1000) == "none"


def test_record_keeps_steps_and_attention_rows() -> None:
    from explorer.generation import GenerationRecord

    lm = tiny_lm()
    record = GenerationRecord(prompt_ids=PROMPT[0].tolist())
    steps = list(generate(lm, PROMPT, max_new_tokens=5, stop_ids=(), capture_attention=True))
    for step in steps:
        record.add(step)
    assert len(record) == 5 and record.finished == "max_new_tokens"
    assert record.text == "".join(s.text for s in steps)
    assert record.top_labels[0] == [str(i) for i in steps[0].top_ids]
    row = record.attention_row(2, layer=1, head=3)
    assert row.shape == (10,) and np.allclose(row, steps[2].attention[1, 3].numpy(), atol=1e-3)
    mean = record.attention_row(2, layer=1, head=None)
    assert np.allclose(mean, steps[2].attention[1].mean(0).numpy(), atol=1e-3)
    averaged = GenerationRecord(prompt_ids=[], storage="layers")
    averaged.add(steps[0])
    assert averaged.attention_row(0, 0, None).shape == (8,)
    assert averaged.attention_row(0, 0, 1) is None and not averaged.has_heads()
    assert record.tokens_per_s > 0 and record.ttft == steps[0].elapsed


@pytest.mark.parametrize("variant", ["rope", "gpt2-biases"])
def test_fast_step_in_float64_matches_to_rounding(variant: str) -> None:
    positional, overrides = FAST_VARIANTS[variant]
    lm = tiny_lm(positional, seed=3, **overrides)
    model = pack_model(lm.model.to(torch.float64))
    ids = torch.randint(0, 257, (1, 10), generator=torch.Generator().manual_seed(2))
    cache = KVCache(lm.config, 10, dtype=torch.float64)
    fast = FastDecoder.build(model, cache)
    with torch.no_grad():
        full = model(ids)[0]
        model(ids[:, :3], kv_cache=cache)
        for i in range(3, 10):
            logits, _ = fast.step(ids[:, i:i + 1])
            assert logits.dtype == torch.float32  # logits leave as float32 on every path
            assert torch.allclose(logits.double(), full[i], atol=1e-6)


@pytest.mark.parametrize("variant", ["rope", "gpt2-biases"])
def test_fast_step_in_bfloat16_is_as_close_to_float32_as_the_model(variant: str) -> None:
    """Half types take other kernels (oneDNN's blocked weights, attention in float32): the
    step's logits are no further from float32 math on the same weights than the model's own
    bfloat16 forward is."""
    positional, overrides = FAST_VARIANTS[variant]
    lm = tiny_lm(positional, seed=3, **overrides)
    model = pack_model(lm.model.to(torch.bfloat16))
    reference = copy.deepcopy(model).float()
    ids = torch.randint(0, 257, (1, 12), generator=torch.Generator().manual_seed(2))
    cache = KVCache(lm.config, 12, dtype=torch.bfloat16)
    fast = FastDecoder.build(model, cache)
    with torch.no_grad():
        exact, half = reference(ids)[0], model(ids)[0].float()
        model(ids[:, :4], kv_cache=cache)
        for i in range(4, 12):
            logits, attention = fast.step(ids[:, i:i + 1], capture_attention=True)
            model_error = (half[i] - exact[i]).abs().max()
            assert (logits - exact[i]).abs().max() <= max(1.5 * model_error, 0.02)
            assert torch.allclose(attention.sum(-1), torch.ones(2, 4), atol=1e-5)
