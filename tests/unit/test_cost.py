"""The cost calculator's closed forms against real models: the parameter formula equals the
parameters `explorer.nn` builds (tiny models of every family from the converters' configs,
and the two embedded models), FLOPs per token equal what torch's FlopCounterMode counts in a
real forward, the KV-cache size equals a real KVCache's bytes."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from explorer.analysis.cost import (
    attention_matrix_bytes,
    flops_per_token,
    format_bytes,
    keys_seen,
    kv_cache_bytes,
    parameter_formula,
)
from explorer.analysis.params import parameter_counts
from explorer.config import ModelConfig
from explorer.models.converters.bert import MLM_HEAD, bert_config
from explorer.models.converters.gpt2 import gpt2_config
from explorer.models.converters.llama import llama_config
from explorer.models.converters.t5 import t5_config
from explorer.nn import KVCache, build_model

torch.set_num_threads(1)

LLAMA = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 48, "num_hidden_layers": 2, "vocab_size": 97,
         "max_position_embeddings": 64}
T5 = {"d_model": 32, "d_kv": 8, "d_ff": 48, "num_layers": 2, "num_decoder_layers": 3,
      "num_heads": 4, "vocab_size": 97, "relative_attention_num_buckets": 8}
BERT = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48,
        "num_hidden_layers": 2, "vocab_size": 97, "max_position_embeddings": 64}
TINY = {"d_model": 24, "n_heads": 4, "d_mlp": 40, "d_vocab": 31, "n_ctx": 32, "n_layers": 2}

FAMILIES = {
    "llama-gqa": llama_config(LLAMA),
    "llama-tied": llama_config({**LLAMA, "tie_word_embeddings": True}),
    "qwen2-bias": llama_config({**LLAMA, "model_type": "qwen2", "num_key_value_heads": 1}),
    "mistral-window": llama_config({**LLAMA, "model_type": "mistral", "sliding_window": 4}),
    "gpt2": gpt2_config({"n_embd": 32, "n_head": 4, "n_layer": 2, "vocab_size": 97,
                         "n_positions": 64}),
    "bert-mlm": bert_config(BERT, frozenset({MLM_HEAD})),
    "bert-encoder-only": bert_config(BERT),
    "t5-relu-tied": t5_config(T5),
    "t5-gated-untied": t5_config({**T5, "feed_forward_proj": "gated-gelu",
                                  "tie_word_embeddings": False}, frozenset({"lm_head.weight"})),
    "moe": ModelConfig(**TINY, mlp="moe", n_experts=4, experts_top_k=2, mlp_bias=True),
    "alibi-post-norm": ModelConfig(**TINY, positional="alibi", norm_position="post",
                                   norm_bias=False),
    "sinusoidal-encoder": ModelConfig(**TINY, positional="sinusoidal", kind="encoder",
                                      has_unembed=False),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_parameter_formula_equals_built_model(name: str) -> None:
    cfg = FAMILIES[name]
    model = build_model(cfg)
    assert parameter_formula(cfg) == parameter_counts(model)
    assert sum(parameter_formula(cfg).values()) == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("alias", ["smollm2-135m", "minilm-l6"])
def test_parameter_formula_equals_embedded_models(alias: str) -> None:
    import explorer

    lm = explorer.load(alias, device="cpu")
    total = sum(p.numel() for p in lm.model.parameters())
    assert sum(parameter_formula(lm.config).values()) == total
    assert parameter_formula(lm.config) == parameter_counts(lm.model)
    if alias == "smollm2-135m":
        assert total == 134_515_008


def counted_flops(run) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def explicit_patterns(cfg: ModelConfig, prefix: str = "") -> list[str]:
    """Capturing every pattern makes attention run as explicit matmuls, which the flop
    counter sees (the fused CPU kernel is not counted)."""
    return [f"{prefix}blocks.{i}.attn.pattern" for i in range(cfg.n_layers)]


def test_encoder_flops_equal_counted_forward() -> None:
    cfg = FAMILIES["bert-mlm"]
    model, n = build_model(cfg).eval(), 10
    ids = torch.randint(0, cfg.d_vocab, (1, n))
    counted = counted_flops(lambda: model.run_with_cache(ids, names=explicit_patterns(cfg)))
    assert counted == n * flops_per_token(cfg, context=n).total  # MLM transform included


@pytest.mark.parametrize("name", ["llama-gqa", "gpt2", "moe"])
def test_decoding_step_flops_equal_counted_forward(name: str) -> None:
    """The last token, decoding with a KV cache, attends to every one of the n tokens."""
    cfg = FAMILIES[name]
    torch.manual_seed(0)
    model, n = build_model(cfg).eval(), 9
    ids = torch.randint(0, cfg.d_vocab, (1, n))
    cache = KVCache(cfg, max_len=n)
    with torch.no_grad():
        model(ids[:, :-1], kv_cache=cache)
    counted = counted_flops(lambda: model.run_with_cache(
        ids[:, -1:], names=explicit_patterns(cfg), kv_cache=cache))
    assert counted == flops_per_token(cfg, context=n).total


def test_flops_closed_form_and_window() -> None:
    cfg = ModelConfig(d_model=64, n_heads=4, n_kv_heads=2, d_mlp=128, d_vocab=1000, n_ctx=4096,
                      n_layers=3, mlp="swiglu", positional="rope")
    full = flops_per_token(cfg, context=1000)
    # per layer: q, o 64x64, k, v 64x32, gate/up/down 64x128; 2 FLOPs per weight
    assert full.projections == 2 * 3 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128)
    assert full.attention == 3 * 4 * 64 * 1000
    assert full.unembedding == 2 * 64 * 1000
    local = flops_per_token(cfg, context=1000, window=15)
    assert local.attention == 3 * 4 * 64 * 16 and local.projections == full.projections
    assert keys_seen(cfg, 1000, 15, causal=False) == 31 and keys_seen(cfg, 10, 15) == 10


def test_kv_cache_bytes_equal_a_real_cache() -> None:
    cfg = FAMILIES["llama-gqa"]
    cache = KVCache(cfg, max_len=20, batch=3, dtype=torch.bfloat16)
    assert kv_cache_bytes(cfg, 20, bytes_per_value=2, batch=3) == (
        cache.k.nbytes + cache.v.nbytes)
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 -> 23,040 bytes per token in bfloat16
    smol = ModelConfig(d_model=576, n_heads=9, n_kv_heads=3, d_mlp=1536, d_vocab=49152,
                       n_ctx=8192, n_layers=30, positional="rope", norm="rmsnorm", mlp="swiglu")
    assert kv_cache_bytes(smol, 8192, 2) == 8192 * 23_040
    assert kv_cache_bytes(smol, 8192, 2, window=1023) == 1024 * 23_040
    assert kv_cache_bytes(FAMILIES["bert-mlm"], 100, 4) == 0


def test_attention_matrix_is_the_quadratic_term() -> None:
    cfg = FAMILIES["gpt2"]
    one = attention_matrix_bytes(cfg, 1024, bytes_per_value=4)
    assert one == 4 * 1024 * 1024 * 4
    assert attention_matrix_bytes(cfg, 2048, 4) == 4 * one  # twice the tokens, 4x the memory
    assert attention_matrix_bytes(cfg, 2048, 4, window=127) == 4 * 2048 * 128 * 4


def test_format_bytes() -> None:
    assert [format_bytes(b) for b in (512, 1536, 8192 * 23_040, 3 * 2**40)] == [
        "512 B", "1.5 KiB", "180.0 MiB", "3.0 TiB"]
