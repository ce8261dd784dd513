"""BERT converter (Devlin et al. 2019), which also reads MiniLM (Wang et al. 2020).

Post-norm blocks (LayerNorm after each residual sum), learned absolute positions, token
type (segment) embeddings, a LayerNorm right after the embeddings, GELU MLP and, when the
checkpoint has one, the masked-LM head (dense + GELU + LayerNorm, then the unembedding
tied to the token embeddings, with a bias). Without that head (``BertModel``, MiniLM) the
model returns the final hidden states (``has_unembed=False``). The pooler is not used.

transformers names -> ours (under ``bert.`` when a head is present):
  embeddings.{word,position,token_type}_embeddings -> embed.{tokens,positions,token_types}
  embeddings.LayerNorm -> embed.norm
  encoder.layer.{i}.attention.self.{query,key,value} -> blocks.{i}.attn.{q,k,v}
  encoder.layer.{i}.attention.output.dense / LayerNorm -> attn.o / ln1
  encoder.layer.{i}.intermediate.dense / output.dense / output.LayerNorm -> mlp.up / down / ln2
  cls.predictions.transform.dense / LayerNorm -> head.transform / head.norm
  cls.predictions.decoder (tied), cls.predictions.bias -> head.unembed
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

MLM_HEAD = "cls.predictions.transform.dense.weight"


def bert_config(hf: dict, names: frozenset[str] = frozenset()) -> ModelConfig:
    """transformers' BertConfig dict (+ which tensors exist) -> ModelConfig."""
    require(hf, "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
            "num_hidden_layers")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError("only BERT with absolute position embeddings is supported")
    mlm = MLM_HEAD in names
    return ModelConfig(
        d_model=hf["hidden_size"],
        n_heads=hf["num_attention_heads"],
        d_mlp=hf["intermediate_size"],
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 512),
        n_layers=hf["num_hidden_layers"],
        positional="learned",
        norm="layernorm",
        norm_position="post",
        mlp="gelu",
        kind="encoder",
        name=hf.get("_name_or_path") or "bert",
        family="bert",
        activation=hf_activation(hf.get("hidden_act", "gelu")),
        norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        final_norm=False,
        tied_embeddings=mlm and bool(hf.get("tie_word_embeddings", True)),
        unembed_bias=mlm,
        n_token_types=hf.get("type_vocab_size", 2),
        embed_norm=True,
        mlm_head=mlm,
        has_unembed=mlm,
    )


def bert_weights(cfg: ModelConfig, tensors: Tensors) -> Tensors:
    """BERT tensors -> our state dict, every shape asserted."""
    src = TensorSource(tensors, ("bert.",))
    d, v, f = cfg.d_model, cfg.d_vocab, cfg.d_mlp
    out = {
        "embed.tokens.weight": src.take("embeddings.word_embeddings.weight", v, d),
        "embed.positions.weight": src.take("embeddings.position_embeddings.weight", cfg.n_ctx, d),
        "embed.token_types.weight": src.take(
            "embeddings.token_type_embeddings.weight", cfg.n_token_types, d
        ),
        "embed.norm.weight": src.take("embeddings.LayerNorm.weight", d),
        "embed.norm.bias": src.take("embeddings.LayerNorm.bias", d),
    }
    linears = {  # ours: (theirs, out_features, in_features)
        "attn.q": ("attention.self.query", d, d),
        "attn.k": ("attention.self.key", d, d),
        "attn.v": ("attention.self.value", d, d),
        "attn.o": ("attention.output.dense", d, d),
        "mlp.up": ("intermediate.dense", f, d),
        "mlp.down": ("output.dense", d, f),
    }
    norms = {"ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"}
    for i in range(cfg.n_layers):
        hf, ours = f"encoder.layer.{i}.", f"blocks.{i}."
        for name, (theirs, rows, cols) in linears.items():
            out[f"{ours}{name}.weight"] = src.take(f"{hf}{theirs}.weight", rows, cols)
            out[f"{ours}{name}.bias"] = src.take(f"{hf}{theirs}.bias", rows)
        for name, theirs in norms.items():
            out[f"{ours}{name}.weight"] = src.take(f"{hf}{theirs}.weight", d)
            out[f"{ours}{name}.bias"] = src.take(f"{hf}{theirs}.bias", d)
    if cfg.mlm_head:
        head = "cls.predictions."
        out["head.transform.weight"] = src.take(head + "transform.dense.weight", d, d)
        out["head.transform.bias"] = src.take(head + "transform.dense.bias", d)
        out["head.norm.weight"] = src.take(head + "transform.LayerNorm.weight", d)
        out["head.norm.bias"] = src.take(head + "transform.LayerNorm.bias", d)
        bias_name = head + "bias" if src.has(head + "bias") else head + "decoder.bias"
        out["head.unembed.bias"] = src.take(bias_name, v)
        if not cfg.tied_embeddings:
            out["head.unembed.weight"] = src.take(head + "decoder.weight", v, d)
    return out


BERT = Converter(
    family="bert",
    model_types=("bert",),
    description="BERT / MiniLM encoders: post-norm, token types, optional masked-LM head",
    config=bert_config,
    weights=bert_weights,
)
