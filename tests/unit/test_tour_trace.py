"""The tour's step-by-step values equal the real forward's cached activations, and its final
probabilities equal the model's output: tiny random models of every family (Llama with
grouped-query attention, GPT-2, BERT with and without its masked-LM head, T5), built from the
converters' own configs, and the embedded SmolLM2 and MiniLM (slow)."""

from __future__ import annotations

import pytest
import torch

from explorer.generation.sampling import SamplingParams, sampling_distribution
from explorer.models.converters.bert import MLM_HEAD, bert_config
from explorer.models.converters.gpt2 import gpt2_config
from explorer.models.converters.llama import llama_config
from explorer.models.converters.t5 import t5_config
from explorer.nn import build_model
from explorer.runs import Tokens, run_prompt
from explorer.runs.tour import encoder_memory, output_of, trace_sampling, trace_stack

ATOL = 1e-4  # float32 rounding of values up to ~10 (two summation orders)
VOCAB = 61

CONFIGS = {
    "llama-gqa": lambda: llama_config({
        "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 48, "num_hidden_layers": 2, "vocab_size": VOCAB,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5}),
    "gpt2": lambda: gpt2_config({"n_embd": 32, "n_head": 4, "n_layer": 2,
                                 "vocab_size": VOCAB, "n_positions": 64}),
    "bert-mlm": lambda: bert_config({
        "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48,
        "num_hidden_layers": 2, "vocab_size": VOCAB, "max_position_embeddings": 64},
        frozenset({MLM_HEAD})),
    "t5": lambda: t5_config({"d_model": 32, "num_heads": 4, "d_kv": 8, "d_ff": 48,
                             "vocab_size": VOCAB, "num_layers": 2, "num_decoder_layers": 3,
                             "relative_attention_num_buckets": 8,
                             "relative_attention_max_distance": 20,
                             "feed_forward_proj": "gated-gelu"}),
}


def randomised(cfg):
    """A model of ``cfg`` whose norm weights and biases are not the 1s and 0s of a fresh
    init (those would hide a norm applied in the wrong place)."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if "ln" in name or "norm" in name else 0.3 * noise)
    return model


def tokens(ids: list[int]) -> Tokens:
    return Tokens(torch.tensor(ids), [str(i) for i in ids], torch.zeros(len(ids), dtype=bool))


def assert_close(actual, expected, what: str) -> None:
    torch.testing.assert_close(actual.float(), expected.float().cpu(), atol=ATOL, rtol=1e-4,
                               msg=lambda m: f"{what}: {m}")


def check_block(trace, cache, prefix: str, layer: int, t: int) -> None:
    """Every value of the traced block against the forward's cache at position ``t``."""
    name = f"{prefix}blocks.{layer}."
    block = trace.block
    assert_close(block.resid_pre, cache[name + "resid_pre"][0, t], "resid_pre")
    attn = block.attn
    assert_close(attn.q, cache[name + "attn.q"][0, :, t], "q (rotated)")
    assert_close(attn.k, cache[name + "attn.k"][0], "k")
    assert_close(attn.v, cache[name + "attn.v"][0], "v")
    assert_close(attn.pattern, cache[name + "attn.pattern"][0, :, t], "pattern")
    assert_close(attn.z, cache[name + "attn.z"][0, :, t], "z")
    assert_close(attn.out, cache[name + "attn.out"][0, t], "attn.out")
    assert_close(block.resid_mid, cache[name + "resid_mid"][0, t], "resid_mid")
    assert torch.allclose(attn.pattern.sum(-1), torch.ones(attn.pattern.shape[0]))
    # the pieces fit together: masked = scaled + bias, scaled = scores * scale
    finite = torch.isfinite(attn.masked)
    assert torch.allclose(attn.scaled, attn.scores * attn.scale)
    assert torch.allclose(attn.masked[finite], (attn.scaled + attn.bias)[finite])
    if block.cross is not None:
        cross = block.cross
        assert_close(cross.pattern, cache[name + "cross_attn.pattern"][0, :, t], "cross pattern")
        assert_close(cross.out, cache[name + "cross_attn.out"][0, t], "cross out")
        assert_close(block.resid_cross, cache[name + "resid_cross"][0, t], "resid_cross")
    if block.mlp.hidden is not None:
        assert_close(block.mlp.hidden, cache[name + "mlp.post"][0, t], "mlp hidden")
    assert_close(block.mlp.out, cache[name + "mlp.out"][0, t], "mlp.out")
    assert_close(block.resid_post, cache[name + "resid_post"][0, t], "resid_post")


@pytest.mark.parametrize("family", ["llama-gqa", "gpt2", "bert-mlm"])
@pytest.mark.parametrize("layer", [0, 1])
def test_single_stack_tour_equals_the_forward(family: str, layer: int) -> None:
    cfg = CONFIGS[family]()
    model = randomised(cfg)
    ids = [1, 5, 9, 5, 22, 7, 40]
    run = run_prompt(model, cfg.kind, cfg.n_heads, tokens(ids))
    logits, cache = model.run_with_cache(torch.tensor([ids]))
    for t in (0, 3, len(ids) - 1):
        trace = trace_stack(run, "main", t, layer)
        check_block(trace, cache, "", layer, t)
        emb = trace.embeddings
        assert_close(emb.tokens, cache["embed"][0], "token embeddings")
        if cfg.positional == "learned":
            assert_close(emb.positions, cache["pos_embed"], "positions")
        assert_close(emb.out, cache["blocks.0.resid_pre"][0], "embedding output")
        out = output_of(run, "main", t)
        assert_close(out.logits, logits[0, t], "logits")
        assert_close(out.probs, torch.softmax(logits[0, t], -1), "probabilities")
    if cfg.norm_position == "pre":
        assert_close(trace.final, cache["final_norm"][0], "final norm")
    if cfg.n_kv_heads != cfg.n_heads:
        assert trace.block.attn.group_size == cfg.n_heads // cfg.n_kv_heads
        assert trace.block.attn.k.shape[0] == cfg.n_kv_heads


def test_rope_rotates_q_and_k_but_not_v() -> None:
    cfg = CONFIGS["llama-gqa"]()
    run = run_prompt(randomised(cfg), cfg.kind, cfg.n_heads, tokens([1, 2, 3, 4]))
    attn = trace_stack(run, "main", 3).block.attn
    assert torch.allclose(attn.q_raw.norm(dim=-1), attn.q.norm(dim=-1), atol=1e-5)  # rotation
    assert not torch.allclose(attn.q_raw, attn.q)
    assert torch.allclose(attn.k_raw[:, 0], attn.k[:, 0])  # position 0: angle 0
    assert torch.isinf(attn.bias[:, :3]).sum() == 0 and attn.pattern[:, :].sum() > 0
    first = trace_stack(run, "main", 0).block.attn
    assert torch.isinf(first.bias[:, 1:]).all() and (first.pattern[:, 0] == 1).all()


def test_bert_without_a_head_has_embeddings_only() -> None:
    cfg = bert_config({"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48,
                       "num_hidden_layers": 2, "vocab_size": VOCAB})
    model = randomised(cfg)
    run = run_prompt(model, cfg.kind, cfg.n_heads, tokens([1, 4, 8, 2]))
    final, cache = model.run_with_cache(torch.tensor([[1, 4, 8, 2]]))
    trace = trace_stack(run, "main", 2, 1)
    check_block(trace, cache, "", 1, 2)
    assert model.head is None
    assert_close(trace.final, final[0], "final hidden states")


def test_t5_encoder_then_decoder_with_cross_attention() -> None:
    cfg = CONFIGS["t5"]()
    model = randomised(cfg)
    source, target = [3, 8, 13, 21, 1], [0, 17, 4, 9]
    run = run_prompt(model, cfg.kind, cfg.n_heads, tokens(source), tokens(target))
    logits, cache = model.run_with_cache(torch.tensor([source]), torch.tensor([target]))
    memory = encoder_memory(run)
    assert_close(memory, cache["encoder.final_norm"][0], "encoder output")
    for t in range(len(source)):
        enc = trace_stack(run, "encoder", t, 1)
        check_block(enc, cache, "encoder.", 1, t)
        assert enc.block.attn.scale == 1.0  # T5 does not divide by sqrt(d_head)
        assert enc.block.attn.position_bias is not None
    for t in range(len(target)):
        for layer in (0, 2):
            dec = trace_stack(run, "decoder", t, layer, context=memory)
            check_block(dec, cache, "decoder.", layer, t)
            assert dec.block.cross.k.shape[1] == len(source)
        out = output_of(run, "decoder", t)
        assert_close(out.logits, logits[0, t], "logits")
        assert_close(out.probs, torch.softmax(logits[0, t], -1), "probabilities")


def test_sampling_steps_end_at_the_generators_distribution() -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(3)) * 3
    steps = trace_sampling(logits, 0.7, 10, 0.8)
    expected = sampling_distribution(logits, SamplingParams(0.7, 10, 0.8))
    assert torch.allclose(steps.after_top_p, expected)
    assert torch.allclose(steps.probs, torch.softmax(logits, -1))
    assert (steps.after_top_k > 0).sum() == 10
    kept = steps.after_top_p > 0
    assert steps.tempered[kept].sum() >= 0.8 - 1e-6 or kept.sum() == 10
    # lower temperature sharpens: the top token gains probability
    assert steps.tempered.max() > steps.probs.max()


@pytest.mark.slow
@pytest.mark.parametrize("alias", ["smollm2-135m", "minilm-l6"])
def test_embedded_models(alias: str) -> None:
    import explorer

    lm = explorer.load(alias)
    ids = lm.encode("The cat sat on the mat. The cat")[0].cpu().tolist()
    run = run_prompt(lm.model, lm.config.kind, lm.config.n_heads, tokens(ids))
    out, cache = lm.model.run_with_cache(torch.tensor([ids], device=lm.device))
    t = len(ids) - 1
    for layer in (0, lm.config.n_layers - 1):
        check_block(trace_stack(run, "main", t, layer), cache, "", layer, t)
    if lm.model.head is not None:
        probs = output_of(run, "main", t).probs
        assert_close(probs, torch.softmax(out[0, t].float(), -1), "probabilities")
        assert int(probs.argmax()) == int(out[0, t].argmax())
