"""Llama-family converter: Llama (Touvron et al. 2023), SmolLM2, Mistral, Qwen2.

Pre-norm RMSNorm blocks, rotary positions (Su et al. 2021) in the ``rotate_half``
convention, grouped-query attention (Ainslie et al. 2023) and a SwiGLU feed-forward
(Shazeer 2020). Qwen2 adds biases to q/k/v; Mistral attends within a sliding window.

transformers names -> ours:
  model.embed_tokens            -> embed.tokens
  model.layers.{i}.input_layernorm / post_attention_layernorm -> blocks.{i}.ln1 / ln2
  model.layers.{i}.self_attn.{q,k,v,o}_proj -> blocks.{i}.attn.{q,k,v,o}
  model.layers.{i}.mlp.{gate,up,down}_proj  -> blocks.{i}.mlp.{gate,up,down}
  model.norm -> final_norm;  lm_head -> head.unembed (absent when tied)
"""

from __future__ import annotations

from explorer.config import ModelConfig
from explorer.models.converters.base import (
    Converter,
    Tensors,
    TensorSource,
    check_rope_scaling,
    hf_activation,
    hf_rope_base,
    require,
)


def llama_config(hf: dict, names: frozenset[str] = frozenset()) -> ModelConfig:
    """transformers' LlamaConfig / MistralConfig / Qwen2Config dict -> ModelConfig."""
    require(hf, "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
            "num_hidden_layers")
    check_rope_scaling(hf)
    model_type = hf.get("model_type", "llama")
    n_heads = hf["num_attention_heads"]
    attention_bias = bool(hf.get("attention_bias", False))
    sliding = hf.get("sliding_window") if hf.get("use_sliding_window", True) else None
    return ModelConfig(
        d_model=hf["hidden_size"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        d_head=hf.get("head_dim") or hf["hidden_size"] // n_heads,
        d_mlp=hf["intermediate_size"],
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 2048),
        n_layers=hf["num_hidden_layers"],
        positional="rope",
        norm="rmsnorm",
        norm_position="pre",
        mlp="swiglu",
        kind="decoder",
        name=hf.get("_name_or_path") or model_type,
        family="llama",
        activation=hf_activation(hf.get("hidden_act", "silu")),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_base=hf_rope_base(hf),
        qkv_bias=attention_bias or model_type == "qwen2",
        out_bias=attention_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        norm_bias=False,
        tied_embeddings=bool(hf.get("tie_word_embeddings", False)),
        # Mistral lets query i see keys i - sliding_window < j <= i; our window is |i - j| <= w
        window=sliding - 1 if sliding and model_type == "mistral" else None,
        extra={"model_type": model_type},
    )


def llama_weights(cfg: ModelConfig, tensors: Tensors) -> Tensors:
    """transformers' Llama-family tensors -> our state dict, every shape asserted."""
    src = TensorSource(tensors, ("model.",))
    d, v, f = cfg.d_model, cfg.d_vocab, cfg.d_mlp
    q_dim, kv_dim = cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
    out = {"embed.tokens.weight": src.take("embed_tokens.weight", v, d)}
    for i in range(cfg.n_layers):
        hf, ours = f"layers.{i}.", f"blocks.{i}."
        out[ours + "ln1.weight"] = src.take(hf + "input_layernorm.weight", d)
        out[ours + "ln2.weight"] = src.take(hf + "post_attention_layernorm.weight", d)
        for name, rows in (("q", q_dim), ("k", kv_dim), ("v", kv_dim)):
            theirs = f"{hf}self_attn.{name}_proj"
            out[f"{ours}attn.{name}.weight"] = src.take(theirs + ".weight", rows, d)
            if cfg.qkv_bias:
                out[f"{ours}attn.{name}.bias"] = src.take(theirs + ".bias", rows)
        out[ours + "attn.o.weight"] = src.take(hf + "self_attn.o_proj.weight", d, q_dim)
        if cfg.out_bias:
            out[ours + "attn.o.bias"] = src.take(hf + "self_attn.o_proj.bias", d)
        for name, shape in (("gate", (f, d)), ("up", (f, d)), ("down", (d, f))):
            out[f"{ours}mlp.{name}.weight"] = src.take(f"{hf}mlp.{name}_proj.weight", *shape)
            if cfg.mlp_bias:
                out[f"{ours}mlp.{name}.bias"] = src.take(f"{hf}mlp.{name}_proj.bias", shape[0])
    out["final_norm.weight"] = src.take("norm.weight", d)
    if not cfg.tied_embeddings:
        out["head.unembed.weight"] = src.take("lm_head.weight", v, d)
    return out


LLAMA = Converter(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "smollm2", "smollm"),
    description="Llama family (Llama, SmolLM2, Mistral, Qwen2): RoPE, GQA, RMSNorm, SwiGLU",
    config=llama_config,
    weights=llama_weights,
)
