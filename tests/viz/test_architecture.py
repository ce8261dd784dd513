"""Architecture DOT diagrams differ per model kind and carry the config's shapes."""

from __future__ import annotations

import re

from explorer.config import ModelConfig
from explorer.viz.architecture import architecture_dot, dot_escape

BASE = {"d_model": 64, "n_heads": 4, "d_mlp": 256, "d_vocab": 1000, "n_ctx": 128}


def clusters(dot: str) -> list[str]:
    return re.findall(r'subgraph "(cluster_[^"]*)"', dot)


def test_decoder_llama_style() -> None:
    cfg = ModelConfig(**BASE, n_layers=3, n_kv_heads=2, positional="rope", norm="rmsnorm",
                      mlp="swiglu", name="tiny-llama")
    dot = architecture_dot(cfg)
    assert clusters(dot) == ["cluster_b_"]
    assert "block × 3" in dot and "causal self-attention" in dot
    assert "2 KV heads (grouped-query)" in dot and "q [n, 4, 16]  k, v [n, 2, 16]" in dot
    assert "rotary (RoPE)" in dot and "RMSNorm" in dot and "64 → 256 → 64" in dot
    assert "logits\\n[n, 1000]" in dot and "token embedding\\n1000 × 64" in dot
    # edges come after the cluster, so the embedding is not drawn inside the block
    cluster = dot[dot.index("subgraph"):dot.index("  }")]
    assert '"embed"' not in cluster and "->" not in cluster


def test_encoder_bert_style() -> None:
    cfg = ModelConfig(**BASE, n_layers=2, kind="encoder", norm_position="post",
                      n_token_types=2, embed_norm=True, has_unembed=False)
    dot = architecture_dot(cfg)
    assert "bidirectional" in dot and "causal" not in dot
    assert "learned absolute positions [128, 64]" in dot and "token types [2, 64]" in dot
    assert "hidden states" in dot and "logits" not in dot
    assert '"b_mlp_add" -> "b_ln2"' in dot  # post-norm: the norm comes after the sum


def test_encoder_decoder() -> None:
    cfg = ModelConfig(**BASE, n_layers=2, n_decoder_layers=3, kind="encoder-decoder",
                      positional="relative")
    dot = architecture_dot(cfg)
    assert clusters(dot) == ["cluster_enc_", "cluster_dec_"]
    assert "block × 2" in dot and "block × 3" in dot
    assert '"enc_final_norm" -> "dec_cross"' in dot and "k, v [m, 4, 16]" in dot


def test_names_are_escaped() -> None:
    dot = architecture_dot(ModelConfig(**BASE, n_layers=1, name='evil"];\nx [label="'))
    assert 'evil\\"];' in dot and "\nx [label" not in dot
    assert dot_escape('a"b\\c') == 'a\\"b\\\\c'
