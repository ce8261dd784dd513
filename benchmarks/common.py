"""Shared benchmark helpers: timing, the matmul peak and a transformers twin of our model."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import torch

from explorer.config import ModelConfig

LLAMA_NAMES = [  # ours -> transformers Llama names
    (r"^embed\.tokens\.", "model.embed_tokens."),
    (r"^blocks\.(\d+)\.ln1\.", r"model.layers.\1.input_layernorm."),
    (r"^blocks\.(\d+)\.ln2\.", r"model.layers.\1.post_attention_layernorm."),
    (r"^blocks\.(\d+)\.attn\.(q|k|v|o)\.", r"model.layers.\1.self_attn.\2_proj."),
    (r"^blocks\.(\d+)\.mlp\.(gate|up|down)\.", r"model.layers.\1.mlp.\2_proj."),
    (r"^final_norm\.", "model.norm."),
    (r"^head\.unembed\.", "lm_head."),
]


def transformers_llama(model: torch.nn.Module, cfg: ModelConfig, attn: str) -> torch.nn.Module:
    """A transformers LlamaForCausalLM holding the same weights as our Llama-family model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(
        hidden_size=cfg.d_model, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.d_head, intermediate_size=cfg.d_mlp, num_hidden_layers=cfg.n_layers,
        vocab_size=cfg.d_vocab, max_position_embeddings=cfg.n_ctx, rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_base, tie_word_embeddings=cfg.tied_embeddings,
    )
    hf = LlamaForCausalLM(hf_cfg).to(torch.float32)
    state = {}
    for name, tensor in model.state_dict().items():
        for pattern, repl in LLAMA_NAMES:
            if re.match(pattern, name):
                state[re.sub(pattern, repl, name)] = tensor
                break
    hf.load_state_dict(state, strict=False)
    hf.config._attn_implementation = attn
    hf.set_attn_implementation(attn)
    return hf.eval()


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(minimum, median) wall seconds of ``fn`` over ``repeats`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[0], times[len(times) // 2]


def paired_times(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Best wall seconds of each of two functions, run alternately (ours, theirs, ours...)
    after a warm-up of each, so load from other processes hits both alike."""
    ours(), theirs()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((ours, theirs)):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Float32 matmul FLOP/s of this machine at the current thread count (best of runs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best, _ = best_time(lambda: torch.mm(a, b), repeats)
    return 2 * size**3 / best


def forward_flops(cfg: ModelConfig, n: int) -> float:
    """Matmul FLOPs of one decoder forward over n tokens (full n x n attention scores)."""
    d, h, g, dh, f = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp
    gated = 3 if cfg.mlp in ("swiglu", "geglu") else 2
    per_token = 2 * d * (h * dh + 2 * g * dh) + 2 * h * dh * d + gated * 2 * d * f
    attention = 4 * n * h * dh  # q.k and pattern.v per token
    return cfg.n_layers * n * (per_token + attention) + 2 * n * d * cfg.d_vocab
