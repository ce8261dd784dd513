"""GPT-2 converter (Radford et al. 2019): learned positions, pre-norm LayerNorm, GELU MLP.

GPT-2 stores its projections as ``Conv1D`` weights, [in, out] (the transpose of
``nn.Linear``), and fuses the query, key and value projections into one ``c_attn``
[D, 3D]. We split it into q, k, v and transpose each.

transformers names -> ours:
  wte, wpe -> embed.tokens, embed.positions;  h.{i}.ln_1 / ln_2 -> blocks.{i}.ln1 / ln2
  h.{i}.attn.c_attn -> attn.{q,k,v};  h.{i}.attn.c_proj -> attn.o
  h.{i}.mlp.c_fc / c_proj -> mlp.up / mlp.down;  ln_f -> final_norm;  lm_head tied to wte
"""

from __future__ import annotations

from explorer.config import ModelConfig
from explorer.models.converters.base import (
    CheckpointError,
    Converter,
    Tensors,
    TensorSource,
    hf_activation,
    require,
)


def gpt2_config(hf: dict, names: frozenset[str] = frozenset()) -> ModelConfig:
    """transformers' GPT2Config dict -> ModelConfig."""
    require(hf, "n_embd", "n_head", "n_layer", "vocab_size")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise CheckpointError(f"GPT-2 option {flag}=True is not supported")
    if hf.get("scale_attn_weights", True) is False:
        raise CheckpointError("GPT-2 option scale_attn_weights=False is not supported")
    d = hf["n_embd"]
    return ModelConfig(
        d_model=d,
        n_heads=hf["n_head"],
        d_mlp=hf.get("n_inner") or 4 * d,
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("n_positions", 1024),
        n_layers=hf["n_layer"],
        positional="learned",
        norm="layernorm",
        norm_position="pre",
        mlp="gelu",
        kind="decoder",
        name=hf.get("_name_or_path") or "gpt2",
        family="gpt2",
        activation=hf_activation(hf.get("activation_function", "gelu_new")),
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        tied_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )


def gpt2_weights(cfg: ModelConfig, tensors: Tensors) -> Tensors:
    """GPT-2 tensors -> our state dict: split c_attn, transpose every Conv1D weight."""
    src = TensorSource(tensors, ("transformer.",))
    d, v, f = cfg.d_model, cfg.d_vocab, cfg.d_mlp
    out = {
        "embed.tokens.weight": src.take("wte.weight", v, d),
        "embed.positions.weight": src.take("wpe.weight", cfg.n_ctx, d),
    }
    for i in range(cfg.n_layers):
        hf, ours = f"h.{i}.", f"blocks.{i}."
        for hf_norm, norm in (("ln_1", "ln1"), ("ln_2", "ln2")):
            out[f"{ours}{norm}.weight"] = src.take(f"{hf}{hf_norm}.weight", d)
            out[f"{ours}{norm}.bias"] = src.take(f"{hf}{hf_norm}.bias", d)
        qkv_w = src.take(hf + "attn.c_attn.weight", d, 3 * d)  # Conv1D [in, out]
        qkv_b = src.take(hf + "attn.c_attn.bias", 3 * d)
        for j, name in enumerate("qkv"):
            out[f"{ours}attn.{name}.weight"] = qkv_w[:, j * d:(j + 1) * d].t().contiguous()
            out[f"{ours}attn.{name}.bias"] = qkv_b[j * d:(j + 1) * d].contiguous()
        out[ours + "attn.o.weight"] = src.take(hf + "attn.c_proj.weight", d, d).t().contiguous()
        out[ours + "attn.o.bias"] = src.take(hf + "attn.c_proj.bias", d)
        out[ours + "mlp.up.weight"] = src.take(hf + "mlp.c_fc.weight", d, f).t().contiguous()
        out[ours + "mlp.up.bias"] = src.take(hf + "mlp.c_fc.bias", f)
        out[ours + "mlp.down.weight"] = src.take(hf + "mlp.c_proj.weight", f, d).t().contiguous()
        out[ours + "mlp.down.bias"] = src.take(hf + "mlp.c_proj.bias", d)
    out["final_norm.weight"] = src.take("ln_f.weight", d)
    out["final_norm.bias"] = src.take("ln_f.bias", d)
    if not cfg.tied_embeddings:
        out["head.unembed.weight"] = src.take("lm_head.weight", v, d)
    return out


GPT2 = Converter(
    family="gpt2",
    model_types=("gpt2",),
    description="GPT-2: learned positions, LayerNorm, GELU, fused Conv1D c_attn",
    config=gpt2_config,
    weights=gpt2_weights,
)
