"""CLIP converter (Radford et al. 2021): transformers' ``CLIPModel`` checkpoints
(openai/clip-vit-base-patch32 and its kin).

Both towers are pre-norm LayerNorm stacks with q/k/v/o and MLP biases and (for the OpenAI
checkpoints) quick-GELU. The vision tower has a bias-free patch convolution, a class
embedding, learned positions, a LayerNorm before its blocks (``pre_layrnorm``, sic) and one
after (``post_layernorm``, our final norm); the text tower is causal with learned positions
and a final LayerNorm. Both are projected (no bias) to ``projection_dim``; ``logit_scale``
is the log temperature. The returned `ModelConfig` is the vision tower's, with the text
tower in ``cfg.text``.

transformers names -> ours:
  vision_model.embeddings.{class_embedding, patch_embedding, position_embedding}
      -> vision.embed.{class_token, patches, positions}
  vision_model.pre_layrnorm / post_layernorm -> vision.embed.norm / vision.final_norm
  text_model.embeddings.{token_embedding, position_embedding} -> text.embed.{tokens, positions}
  text_model.final_layer_norm -> text.final_norm
  {vision,text}_model.encoder.layers.{i}.layer_norm1 / layer_norm2 -> blocks.{i}.ln1 / ln2
  ....self_attn.{q,k,v,out}_proj -> attn.{q,k,v,o};  ....mlp.fc1 / fc2 -> mlp.up / down
  visual_projection, text_projection, logit_scale -> the same names
"""

from __future__ import annotations

from explorer.config import ModelConfig
from explorer.models.converters.base import (
    Converter,
    Tensors,
    TensorSource,
    hf_activation,
)

# Before transformers PR #24773 CLIP configs said eos_token_id=2; such checkpoints read the
# text embedding at the highest token id (their end-of-text token), as transformers does.
LEGACY_EOS = 2


def _tower(hf: dict, **fields) -> ModelConfig:
    return ModelConfig(
        d_model=hf.get("hidden_size", 512),
        n_heads=hf.get("num_attention_heads", 8),
        d_mlp=hf.get("intermediate_size", 2048),
        positional="learned",
        norm="layernorm",
        norm_position="pre",
        mlp="gelu",
        family="clip",
        activation=hf_activation(hf.get("hidden_act", "quick_gelu")),
        norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        has_unembed=False,
        **fields,
    )


def clip_config(hf: dict, names: frozenset[str] = frozenset()) -> ModelConfig:
    """transformers' CLIPConfig dict -> ModelConfig of the vision tower, text tower in
    ``.text``."""
    text_hf, vision_hf = hf.get("text_config") or {}, hf.get("vision_config") or {}
    eos = text_hf.get("eos_token_id", 49407)
    text = _tower(
        text_hf, d_vocab=text_hf.get("vocab_size", 49408),
        n_ctx=text_hf.get("max_position_embeddings", 77),
        n_layers=text_hf.get("num_hidden_layers", 12), kind="decoder", name="clip-text",
    )
    image_size, patch_size = vision_hf.get("image_size", 224), vision_hf.get("patch_size", 32)
    return _tower(
        vision_hf, d_vocab=1, n_ctx=(image_size // patch_size) ** 2 + 1,
        n_layers=vision_hf.get("num_hidden_layers", 12), kind="vision-text",
        name=hf.get("_name_or_path") or "clip", embed_norm=True, image_size=image_size,
        patch_size=patch_size, n_channels=vision_hf.get("num_channels", 3), patch_bias=False,
        projection_dim=hf.get("projection_dim", 512), text=text,
        eos_token_id=None if eos == LEGACY_EOS else eos,
    )


def _blocks(src: TensorSource, cfg: ModelConfig, theirs: str, ours: str) -> Tensors:
    d, f = cfg.d_model, cfg.d_mlp
    linears = {"attn.q": ("self_attn.q_proj", d, d), "attn.k": ("self_attn.k_proj", d, d),
               "attn.v": ("self_attn.v_proj", d, d), "attn.o": ("self_attn.out_proj", d, d),
               "mlp.up": ("mlp.fc1", f, d), "mlp.down": ("mlp.fc2", d, f)}
    out = {}
    for i in range(cfg.n_layers):
        hf, mine = f"{theirs}encoder.layers.{i}.", f"{ours}blocks.{i}."
        for name, (their_name, rows, cols) in linears.items():
            out[f"{mine}{name}.weight"] = src.take(f"{hf}{their_name}.weight", rows, cols)
            out[f"{mine}{name}.bias"] = src.take(f"{hf}{their_name}.bias", rows)
        for norm, their_name in (("ln1", "layer_norm1"), ("ln2", "layer_norm2")):
            out[f"{mine}{norm}.weight"] = src.take(f"{hf}{their_name}.weight", d)
            out[f"{mine}{norm}.bias"] = src.take(f"{hf}{their_name}.bias", d)
    return out


def _norm(src: TensorSource, theirs: str, ours: str, d: int) -> Tensors:
    return {f"{ours}.weight": src.take(f"{theirs}.weight", d),
            f"{ours}.bias": src.take(f"{theirs}.bias", d)}


def clip_weights(cfg: ModelConfig, tensors: Tensors) -> Tensors:
    """CLIP tensors -> our state dict, every shape asserted."""
    src = TensorSource(tensors)
    text, d, p = cfg.text, cfg.d_model, cfg.patch_size
    emb = "vision_model.embeddings."
    out = {
        "vision.embed.class_token": src.take(emb + "class_embedding", d),
        "vision.embed.patches.weight": src.take(emb + "patch_embedding.weight", d,
                                                cfg.n_channels, p, p),
        "vision.embed.positions.weight": src.take(emb + "position_embedding.weight",
                                                  cfg.n_ctx, d),
        **_norm(src, "vision_model.pre_layrnorm", "vision.embed.norm", d),
        **_blocks(src, cfg, "vision_model.", "vision."),
        **_norm(src, "vision_model.post_layernorm", "vision.final_norm", d),
        "text.embed.tokens.weight": src.take("text_model.embeddings.token_embedding.weight",
                                             text.d_vocab, text.d_model),
        "text.embed.positions.weight": src.take(
            "text_model.embeddings.position_embedding.weight", text.n_ctx, text.d_model),
        **_blocks(src, text, "text_model.", "text."),
        **_norm(src, "text_model.final_layer_norm", "text.final_norm", text.d_model),
        "visual_projection.weight": src.take("visual_projection.weight", cfg.projection_dim, d),
        "text_projection.weight": src.take("text_projection.weight", cfg.projection_dim,
                                           text.d_model),
        "logit_scale": src.take("logit_scale"),
    }
    return out


CLIP = Converter(
    family="clip",
    model_types=("clip",),
    description="CLIP: a ViT image tower and a causal text tower in one embedding space",
    config=clip_config,
    weights=clip_weights,
)
