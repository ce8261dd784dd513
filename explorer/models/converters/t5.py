"""T5 converter (Raffel et al. 2020): encoder-decoder with relative position biases.

Pre-norm RMSNorm ("T5LayerNorm") blocks, no absolute positions: each stack learns one
relative-position bias table [buckets, heads], stored in its first block only and shared by
all its layers (our per-stack ``rel_bias``). Scores are q.k with no 1/sqrt(d_head)
scaling. The feed-forward is ReLU (T5) or gated GELU (T5 v1.1, flan-T5). With tied
embeddings the decoder output is scaled by d_model^-0.5 before the unembedding.

transformers names -> ours ({s} is encoder or decoder):
  shared -> embed.tokens;  lm_head -> head.unembed (tied when absent)
  {s}.block.{i}.layer.0.SelfAttention.{q,k,v,o} / layer_norm -> {s}.blocks.{i}.attn.* / ln1
  {s}.block.0.layer.0.SelfAttention.relative_attention_bias -> {s}.rel_bias
  decoder.block.{i}.layer.1.EncDecAttention.* / layer_norm -> cross_attn.* / ln_cross
  {s}.block.{i}.layer.{1|2}.DenseReluDense.{wi | wi_0, wi_1, wo} -> mlp.{up | gate, up, down}
  {s}.final_layer_norm -> {s}.final_norm
"""

from __future__ import annotations

from explorer.config import ModelConfig
from explorer.models.converters.base import (
    Converter,
    Tensors,
    TensorSource,
    hf_activation,
    require,
)


def t5_config(hf: dict, names: frozenset[str] = frozenset()) -> ModelConfig:
    """transformers' T5Config dict (+ which tensors exist) -> ModelConfig."""
    require(hf, "d_model", "num_heads", "d_kv", "d_ff", "vocab_size", "num_layers")
    proj = hf.get("feed_forward_proj", "relu")
    gated = proj.startswith("gated-")
    act = proj.split("-")[-1]
    act = "gelu_new" if proj == "gated-gelu" else act
    tied = "lm_head.weight" not in names
    # transformers 5: T5 v1 scales the decoder output, v1.1 (tie_word_embeddings=False) not
    scale_outputs = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings") is not False)
    return ModelConfig(
        d_model=hf["d_model"],
        n_heads=hf["num_heads"],
        d_head=hf["d_kv"],
        d_mlp=hf["d_ff"],
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("n_positions") or 512,
        n_layers=hf["num_layers"],
        n_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        positional="relative",
        norm="rmsnorm",
        norm_position="pre",
        mlp="geglu" if gated else "relu",
        kind="encoder-decoder",
        name=hf.get("_name_or_path") or "t5",
        family="t5",
        activation=hf_activation(act),
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)),
        attn_scale=False,
        norm_bias=False,
        tied_embeddings=tied,
        unembed_scale=hf["d_model"] ** -0.5 if scale_outputs else 1.0,
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128),
        decoder_start_token_id=hf.get("decoder_start_token_id") or 0,
    )


def _attention(src: TensorSource, theirs: str, ours: str, cfg: ModelConfig, out: Tensors):
    inner = cfg.n_heads * cfg.d_head
    for name in "qkv":
        out[f"{ours}.{name}.weight"] = src.take(f"{theirs}.{name}.weight", inner, cfg.d_model)
    out[f"{ours}.o.weight"] = src.take(f"{theirs}.o.weight", cfg.d_model, inner)


def _mlp(src: TensorSource, theirs: str, ours: str, cfg: ModelConfig, out: Tensors) -> None:
    d, f = cfg.d_model, cfg.d_mlp
    if cfg.mlp == "geglu":
        out[f"{ours}.gate.weight"] = src.take(f"{theirs}.wi_0.weight", f, d)
        out[f"{ours}.up.weight"] = src.take(f"{theirs}.wi_1.weight", f, d)
    else:
        out[f"{ours}.up.weight"] = src.take(f"{theirs}.wi.weight", f, d)
    out[f"{ours}.down.weight"] = src.take(f"{theirs}.wo.weight", d, f)


def t5_weights(cfg: ModelConfig, tensors: Tensors) -> Tensors:
    """T5 tensors -> our state dict, every shape asserted."""
    src = TensorSource(tensors)
    d = cfg.d_model
    out = {"embed.tokens.weight": src.take("shared.weight", cfg.d_vocab, d)}
    stacks = (("encoder", cfg.n_layers), ("decoder", cfg.n_decoder_layers))
    for stack, n_layers in stacks:
        bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        out[f"{stack}.rel_bias.weight"] = src.take(bias, cfg.relative_buckets, cfg.n_heads)
        for i in range(n_layers):
            hf, ours = f"{stack}.block.{i}.layer.", f"{stack}.blocks.{i}."
            _attention(src, hf + "0.SelfAttention", ours + "attn", cfg, out)
            out[ours + "ln1.weight"] = src.take(hf + "0.layer_norm.weight", d)
            ff = 1
            if stack == "decoder":
                _attention(src, hf + "1.EncDecAttention", ours + "cross_attn", cfg, out)
                out[ours + "ln_cross.weight"] = src.take(hf + "1.layer_norm.weight", d)
                ff = 2
            _mlp(src, f"{hf}{ff}.DenseReluDense", ours + "mlp", cfg, out)
            out[ours + "ln2.weight"] = src.take(f"{hf}{ff}.layer_norm.weight", d)
        out[f"{stack}.final_norm.weight"] = src.take(f"{stack}.final_layer_norm.weight", d)
    if not cfg.tied_embeddings:
        out["head.unembed.weight"] = src.take("lm_head.weight", cfg.d_vocab, d)
    return out


T5 = Converter(
    family="t5",
    model_types=("t5",),
    description="T5 encoder-decoder: relative position bias, RMSNorm, ReLU or gated GELU",
    config=t5_config,
    weights=t5_weights,
)
