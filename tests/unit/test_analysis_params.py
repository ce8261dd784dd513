"""Parameter counts by component, against closed-form counts of tiny configs."""

from __future__ import annotations

import torch

from explorer.analysis.params import component_of, format_count, parameter_counts
from explorer.config import ModelConfig
from explorer.nn import build_model


def test_llama_style_counts_match_formula() -> None:
    torch.manual_seed(0)
    D, h, kv, F, V, L = 64, 4, 2, 128, 100, 2
    cfg = ModelConfig(d_model=D, n_heads=h, n_kv_heads=kv, d_mlp=F, d_vocab=V, n_ctx=32,
                      n_layers=L, positional="rope", norm="rmsnorm", mlp="swiglu",
                      tied_embeddings=True, norm_bias=False)
    model = build_model(cfg)
    d_head = D // h
    counts = parameter_counts(model)
    assert counts == {
        "embedding": V * D,  # tied: the unembedding is not counted again
        "attention": L * (2 * D * D + 2 * D * kv * d_head),
        "mlp": L * 3 * D * F,
        "norms": (2 * L + 1) * D,
    }
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())


def test_encoder_decoder_counts_cross_attention_and_relative_bias() -> None:
    D, h, F, V = 32, 4, 64, 50
    cfg = ModelConfig(d_model=D, n_heads=h, d_mlp=F, d_vocab=V, n_ctx=16, n_layers=1,
                      kind="encoder-decoder", positional="relative", norm_bias=True)
    counts = parameter_counts(build_model(cfg))
    assert counts["attention"] == 3 * 4 * D * D  # encoder self, decoder self, decoder cross
    assert counts["positions"] == 2 * cfg.relative_buckets * h
    assert counts["unembedding"] == D * V


def test_component_of_and_format() -> None:
    assert component_of("blocks.3.attn.q.weight") == "attention"
    assert component_of("decoder.blocks.0.cross_attn.k.weight") == "attention"
    assert component_of("encoder.final_norm.bias") == "norms"
    assert component_of("embed.positions.weight") == "positions"
    assert component_of("head.transform.weight") == "unembedding"
    assert component_of("something.else") == "other"
    assert [format_count(n) for n in (950, 4_200, 134_515_008, 7_000_000_000)] == [
        "950", "4.2K", "134.5M", "7.0B"]
