"""ViT converter (Dosovitskiy et al. 2021): transformers' ``ViTModel`` and
``ViTForImageClassification`` checkpoints (google/vit-base-patch16-224 and its kin).

Pre-norm LayerNorm blocks with exact GELU, q/k/v/o and MLP biases, a patch convolution with
a bias, a class token, learned positions for the class token and the patch grid, a final
LayerNorm and, when present, a linear classifier on the class token. The pooler (a dense +
tanh that ``ViTModel`` may carry) is not used. Class names come from ``id2label`` and are
kept in ``cfg.extra["labels"]``.

transformers names -> ours (under ``vit.`` when a classifier is present):
  embeddings.cls_token [1, 1, D] -> embed.class_token [D]
  embeddings.position_embeddings [1, n, D] -> embed.positions.weight [n, D]
  embeddings.patch_embeddings.projection -> embed.patches
  encoder.layer.{i}.layernorm_before / layernorm_after -> blocks.{i}.ln1 / ln2
  encoder.layer.{i}.attention.attention.{query,key,value} -> attn.{q,k,v}
  encoder.layer.{i}.attention.output.dense -> attn.o
  encoder.layer.{i}.intermediate.dense / output.dense -> mlp.up / mlp.down
  layernorm -> final_norm;  classifier -> head
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

CLASSIFIER = "classifier.weight"


def _square(value: object, what: str) -> int:
    """An int, or a [h, w] pair with h == w (non-square images are not supported)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise CheckpointError(f"only square {what}s are supported, got {value}")
        value = value[0]
    return int(value)


def class_labels(hf: dict, n_classes: int) -> list[str]:
    """The class names of ``id2label`` in index order (``LABEL_i`` where one is missing)."""
    id2label = {int(k): str(v) for k, v in (hf.get("id2label") or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(n_classes)]


def vit_config(hf: dict, names: frozenset[str] = frozenset()) -> ModelConfig:
    """transformers' ViTConfig dict (+ which tensors exist) -> ModelConfig."""
    require(hf, "hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers")
    image_size = _square(hf.get("image_size", 224), "image")
    patch_size = _square(hf.get("patch_size", 16), "patch")
    classifier = any(n.endswith(CLASSIFIER) for n in names)
    n_classes = len(hf.get("id2label") or {}) or int(hf.get("num_labels", 2))
    if not hf.get("qkv_bias", True):
        raise CheckpointError("ViT without q/k/v biases (qkv_bias=False) is not supported")
    return ModelConfig(
        d_model=hf["hidden_size"],
        n_heads=hf["num_attention_heads"],
        d_mlp=hf["intermediate_size"],
        d_vocab=n_classes if classifier else 1,
        n_ctx=(image_size // patch_size) ** 2 + 1,
        n_layers=hf["num_hidden_layers"],
        positional="learned",
        norm="layernorm",
        norm_position="pre",
        mlp="gelu",
        kind="vision",
        name=hf.get("_name_or_path") or "vit",
        family="vit",
        activation=hf_activation(hf.get("hidden_act", "gelu")),
        norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        has_unembed=classifier,
        image_size=image_size,
        patch_size=patch_size,
        n_channels=int(hf.get("num_channels", 3)),
        extra={"labels": class_labels(hf, n_classes)} if classifier else {},
    )


def vit_weights(cfg: ModelConfig, tensors: Tensors) -> Tensors:
    """ViT tensors -> our state dict, every shape asserted."""
    src = TensorSource(tensors, ("vit.",))
    d, f, p, c = cfg.d_model, cfg.d_mlp, cfg.patch_size, cfg.n_channels
    emb = "embeddings."
    out = {
        "embed.class_token": src.take(emb + "cls_token", 1, 1, d).reshape(d),
        "embed.positions.weight": src.take(emb + "position_embeddings", 1, cfg.n_ctx, d)[0],
        "embed.patches.weight": src.take(emb + "patch_embeddings.projection.weight", d, c, p, p),
        "embed.patches.bias": src.take(emb + "patch_embeddings.projection.bias", d),
    }
    linears = {  # ours: (theirs, out_features, in_features)
        "attn.q": ("attention.attention.query", d, d),
        "attn.k": ("attention.attention.key", d, d),
        "attn.v": ("attention.attention.value", d, d),
        "attn.o": ("attention.output.dense", d, d),
        "mlp.up": ("intermediate.dense", f, d),
        "mlp.down": ("output.dense", d, f),
    }
    for i in range(cfg.n_layers):
        hf, ours = f"encoder.layer.{i}.", f"blocks.{i}."
        for name, (theirs, rows, cols) in linears.items():
            out[f"{ours}{name}.weight"] = src.take(f"{hf}{theirs}.weight", rows, cols)
            out[f"{ours}{name}.bias"] = src.take(f"{hf}{theirs}.bias", rows)
        for norm, theirs in (("ln1", "layernorm_before"), ("ln2", "layernorm_after")):
            out[f"{ours}{norm}.weight"] = src.take(f"{hf}{theirs}.weight", d)
            out[f"{ours}{norm}.bias"] = src.take(f"{hf}{theirs}.bias", d)
    out["final_norm.weight"] = src.take("layernorm.weight", d)
    out["final_norm.bias"] = src.take("layernorm.bias", d)
    if cfg.has_unembed:
        out["head.weight"] = src.take(CLASSIFIER, cfg.d_vocab, d)
        out["head.bias"] = src.take("classifier.bias", cfg.d_vocab)
    return out


VIT = Converter(
    family="vit",
    model_types=("vit",),
    description="Vision Transformer: patch embeddings, class token, optional classifier",
    config=vit_config,
    weights=vit_weights,
)
