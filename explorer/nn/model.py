"""The models: decoder-only, encoder-only and encoder-decoder transformers.

Built from the blocks of the tutorials (embeddings, a stack of `TransformerBlock`s, a final
norm and an unembedding), generalised so one implementation runs GPT-2, Llama-family,
BERT and T5 checkpoints. Vaswani et al. 2017; Radford et al. 2019; Devlin et al. 2019;
Raffel et al. 2020; Touvron et al. 2023.

Shapes: b batch, n positions, m key positions, D d_model, V d_vocab, h heads.
Parameter names (what the loaders in `explorer.models` fill):
  embed.tokens, embed.positions, embed.token_types, embed.norm
  [encoder. | decoder.] blocks.{i}.{ln1, attn.{q,k,v,o}, ln_cross, cross_attn.{q,k,v,o},
                                   ln2, mlp.{up, gate, down, router, experts.{e}.*}}
  [encoder. | decoder.] final_norm, [encoder. | decoder.] rel_bias
  head.transform, head.norm, head.unembed
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from explorer.config import ModelConfig
from explorer.nn.attention import (
    additive_mask,
    causal_mask,
    combine_masks,
    local_window_mask,
    padding_mask,
)
from explorer.nn.block import TransformerBlock
from explorer.nn.capture import ActivationCache, Capture, Edit, NameFilter, capture_for
from explorer.nn.kv_cache import KVCache
from explorer.nn.mlp import ACTIVATIONS
from explorer.nn.norms import build_norm
from explorer.nn.packing import pack_model
from explorer.nn.positional import (
    LearnedPositions,
    RelativePositionBias,
    Rotary,
    SinusoidalPositions,
    alibi_bias,
    alibi_slopes,
)


def embedding_table(cls: type[nn.Embedding], rows: int, d_model: int) -> nn.Embedding:
    """An embedding [rows, d_model] initialised N(0, 1), except on the meta device.

    Loaders build models on the meta device and assign real weights; there, initialising
    is a no-op, but torch's meta ``normal_`` imports its decompositions on first use (about
    1 s once per process, more than a whole warm load), so it is skipped.
    """
    weight = torch.empty(rows, d_model)
    if not weight.is_meta:
        nn.init.normal_(weight)
    return cls(rows, d_model, _weight=weight)


def _learned_positions(n_ctx: int, d_model: int) -> LearnedPositions:
    return embedding_table(LearnedPositions, n_ctx, d_model)


ABSOLUTE_POSITIONS = {"learned": _learned_positions, "sinusoidal": SinusoidalPositions}


class Embeddings(nn.Module):
    """Token embedding plus, where the config has them, absolute positions, token types
    (BERT segments) and a norm (BERT)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.tokens = embedding_table(nn.Embedding, cfg.d_vocab, cfg.d_model)
        positions = ABSOLUTE_POSITIONS.get(cfg.positional)
        self.positions = positions(cfg.n_ctx, cfg.d_model) if positions else None
        self.token_types = (
            embedding_table(nn.Embedding, cfg.n_token_types, cfg.d_model)
            if cfg.n_token_types else None
        )
        self.norm = build_norm(cfg) if cfg.embed_norm else None

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        capture: Capture | None = None,
        prefix: str = "",
    ) -> torch.Tensor:
        """ids [b, n], positions [n] -> the first residual stream [b, n, D]."""
        x = self.tokens(ids)
        if capture is not None:
            x = capture.through(prefix + "embed", x)
        if self.positions is not None:
            pos = self.positions(positions).to(x.dtype)
            if capture is not None:
                pos = capture.through(prefix + "pos_embed", pos)
            x = x + pos
        if self.token_types is not None:
            types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
            x = x + self.token_types(types)
        return x if self.norm is None else self.norm(x)


class LMHead(nn.Module):
    """Residual stream -> logits: [BERT's dense + act + norm transform,] unembedding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.scale = cfg.unembed_scale
        self.transform = nn.Linear(cfg.d_model, cfg.d_model) if cfg.mlm_head else None
        self.act = ACTIVATIONS[cfg.activation]
        self.norm = build_norm(cfg) if cfg.mlm_head else None
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab, bias=cfg.unembed_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> logits [..., V]."""
        if self.transform is not None:
            x = self.norm(self.act(self.transform(x)))
        return self.unembed(x * self.scale if self.scale != 1.0 else x)


class Stack(nn.Module):
    """A stack of blocks with the positional machinery that acts inside attention.

    Rotary angles, ALiBi and relative biases, causal/window/padding masks are computed once
    per forward and shared by every layer.
    """

    def __init__(self, cfg: ModelConfig, n_layers: int, causal: bool, cross: bool = False):
        super().__init__()
        self.cfg, self.causal = cfg, causal
        self.blocks = nn.ModuleList(TransformerBlock(cfg, cross) for _ in range(n_layers))
        self.final_norm = build_norm(cfg) if cfg.final_norm else None
        self.rotary = Rotary(cfg.d_head, cfg.rope_base) if cfg.positional == "rope" else None
        self.rel_bias = (
            RelativePositionBias(cfg.n_heads, cfg.relative_buckets, cfg.relative_max_distance,
                                 bidirectional=not causal)
            if cfg.positional == "relative" else None
        )
        if cfg.positional == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(cfg.n_heads), persistent=False)
        else:
            self.alibi_slopes = None

    def attention_inputs(
        self,
        n: int,
        offset: int,
        device: torch.device,
        dtype: torch.dtype,
        attention_mask: torch.Tensor | None = None,
        explicit_mask: bool = False,
    ) -> dict:
        """Keyword arguments for every block's self-attention: rope, mask, is_causal.

        Queries are positions offset..offset+n, keys 0..offset+n. A plain causal mask is
        left to the fused kernel (``is_causal``); ``explicit_mask`` also builds it as a
        tensor, once for every layer, for the layers whose pattern is computed explicitly.
        """
        m = offset + n
        rope = None
        if self.rotary is not None:
            # Queries and the new keys are both positions offset..m (cached keys are stored
            # already rotated), so only those n angles are needed, never the whole context.
            cos, sin = self.rotary(torch.arange(offset, m, device=device), dtype)
            rope = (cos, sin, cos, sin)
        bias = None
        if self.alibi_slopes is not None:
            bias = alibi_bias(self.alibi_slopes, n, m).to(dtype)
        elif self.rel_bias is not None:
            bias = self.rel_bias(n, m).to(dtype)
        window = None
        if self.cfg.window is not None:
            window = local_window_mask(n, self.cfg.window, self.causal, m, device)
        pad = padding_mask(attention_mask) if attention_mask is not None else None
        needs_causal = self.causal and n > 1
        if needs_causal and offset == 0 and (bias, window, pad) == (None, None, None):
            # Plain causal: the fused kernel applies it itself; the explicit mask (built once
            # here, not per layer) is only there for layers whose pattern is captured.
            causal = additive_mask(causal_mask(n, m, device), dtype) if explicit_mask else None
            return {"rope": rope, "mask": causal, "is_causal": True}
        causal = causal_mask(n, m, device) if needs_causal else None
        return {"rope": rope, "mask": combine_masks(causal, window, pad, bias), "is_causal": False}

    def run_blocks(
        self,
        x: torch.Tensor,
        *,
        offset: int = 0,
        attention_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        capture: Capture | None = None,
        prefix: str = "",
        start_layer: int = 0,
        attention: dict | None = None,
    ) -> torch.Tensor:
        """Residual stream x [b, n, D] through every block and the final norm; with
        ``start_layer``, x enters that block (its resid_pre) and the earlier ones are skipped
        (activation patching reruns only what a patch can change). ``attention`` (rope, mask,
        is_causal) replaces the self-attention inputs built from ``offset`` and
        ``attention_mask``, for queries that are not one run of positions (packed patching
        runs, `explorer.interventions.packed`)."""
        wants_patterns = capture is not None and any(
            capture.touches(f"{prefix}blocks.{i}.attn.pattern") for i in range(len(self.blocks))
        )
        attn_kwargs = attention if attention is not None else self.attention_inputs(
            x.shape[1], offset, x.device, x.dtype, attention_mask, explicit_mask=wants_patterns
        )
        cross_mask = padding_mask(context_mask) if context_mask is not None else None
        for i, block in enumerate(self.blocks):
            if i < start_layer:
                continue
            x = block(
                x, **attn_kwargs, context=context, context_mask=cross_mask,
                kv=kv_cache.layer(i) if kv_cache is not None else None,
                capture=capture, prefix=f"{prefix}blocks.{i}.",
            )
        if self.final_norm is not None:
            x = self.final_norm(x)
            if capture is not None:
                x = capture.through(prefix + "final_norm", x)
        return x

    @torch.no_grad()
    def layer_pattern(
        self, layer: int, resid_pre: torch.Tensor, attention_mask: torch.Tensor | None = None,
        edits: Mapping[str, Edit] | None = None,
    ) -> torch.Tensor:
        """Recompute one layer's self-attention pattern [b, h, n, n] from its resid_pre.

        Costs one layer's Q.K, so views can show any layer of a long prompt without the
        whole cache holding every layer's n x n patterns. ``edits`` may name this layer's
        ``blocks.{layer}.attn.q``, ``.k`` or ``.pattern`` (relative to this stack); anything
        upstream belongs in the forward that produced ``resid_pre``, and is refused.
        """
        prefix = f"blocks.{layer}.attn."
        allowed = {prefix + name for name in ("q", "k", "pattern")}
        if edits and not set(edits) <= allowed:
            raise ValueError(f"a recomputed pattern can only apply edits of {sorted(allowed)}; "
                             f"{sorted(set(edits) - allowed)} act before resid_pre: run the "
                             "forward with them")
        n = resid_pre.shape[1]
        kwargs = self.attention_inputs(
            n, 0, resid_pre.device, resid_pre.dtype, attention_mask, explicit_mask=True
        )
        block = self.blocks[layer]
        capture = Capture(names=(), edits=edits) if edits else None
        pattern = block.attn.pattern(block.attention_input(resid_pre), rope=kwargs["rope"],
                                     mask=kwargs["mask"], capture=capture, prefix=prefix)
        if capture is not None:
            capture.check_applied()
        return pattern


class Transformer(Stack):
    """Decoder-only (causal LM) or encoder-only (bidirectional, BERT-style) transformer."""

    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.kind not in ("decoder", "encoder"):
            raise ValueError(f"kind={cfg.kind!r} is not a Transformer: use build_model "
                             "(EncoderDecoderTransformer, VisionTransformer, CLIP)")
        super().__init__(cfg, cfg.n_layers, causal=cfg.kind == "decoder")
        self.embed = Embeddings(cfg)
        self.head = LMHead(cfg) if cfg.has_unembed else None
        if self.head is not None and cfg.tied_embeddings:
            self.head.unembed.weight = self.embed.tokens.weight

    def forward(
        self,
        ids: torch.Tensor,
        *,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        capture: Capture | None = None,
        last_only: bool = False,
        edits: Mapping[str, Edit] | None = None,
    ) -> torch.Tensor:
        """ids [b, n] -> logits [b, n, V] ([b, 1, V] with ``last_only``).

        With ``kv_cache`` the ids continue the cached positions, and the cache advances by n.
        A model without an unembedding returns the final hidden states [b, n, D].
        ``edits`` replace named activations for this call only (`explorer.nn.capture`).
        """
        capture = capture_for(capture, edits)
        offset = kv_cache.length if kv_cache is not None else 0
        n = ids.shape[1]
        if offset + n > self.cfg.n_ctx:
            raise ValueError(f"{offset + n} positions exceed the context length {self.cfg.n_ctx}")
        positions = torch.arange(offset, offset + n, device=ids.device)
        x = self.embed(ids, positions, token_type_ids, capture)
        x = self.run_blocks(
            x, offset=offset, attention_mask=attention_mask, kv_cache=kv_cache, capture=capture
        )
        if kv_cache is not None:
            kv_cache.advance(n)
        if capture is not None:
            capture.check_applied()
        if last_only:
            x = x[:, -1:]
        return x if self.head is None else self.head(x)

    def unembed_residual(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] the model would give if ``resid`` [..., D] were its last layer's
        output (final norm then unembedding): the logit lens (nostalgebraist 2020)."""
        if self.head is None:
            raise ValueError("this model has no unembedding")
        x = self.final_norm(resid) if self.final_norm is not None else resid
        return self.head(x)

    @torch.no_grad()
    def run_with_cache(
        self, ids: torch.Tensor, names: NameFilter = None,
        edits: Mapping[str, Edit] | None = None, **kwargs,
    ) -> tuple[torch.Tensor, ActivationCache]:
        """(logits, cache) of one forward, keeping the activations ``names`` selects, with
        ``edits`` applied (the cache holds the edited values)."""
        capture = Capture(names, edits)
        logits = self(ids, capture=capture, **kwargs)
        return logits, capture.cache


class EncoderDecoderTransformer(nn.Module):
    """Encoder (bidirectional) and decoder (causal, with cross-attention) sharing embeddings."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.encoder = Stack(cfg, cfg.n_layers, causal=False)
        self.decoder = Stack(cfg, cfg.n_decoder_layers, causal=True, cross=True)
        self.head = LMHead(cfg)
        if cfg.tied_embeddings:
            self.head.unembed.weight = self.embed.tokens.weight

    def encode(
        self,
        encoder_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        capture: Capture | None = None,
    ) -> torch.Tensor:
        """encoder_ids [b, m] -> encoder output [b, m, D]."""
        positions = torch.arange(encoder_ids.shape[1], device=encoder_ids.device)
        x = self.embed(encoder_ids, positions, capture=capture, prefix="encoder.")
        return self.encoder.run_blocks(
            x, attention_mask=attention_mask, capture=capture, prefix="encoder."
        )

    def decode(
        self,
        decoder_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        capture: Capture | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """decoder_ids [b, n] attending to memory [b, m, D] -> logits [b, n, V].

        With ``kv_cache`` (the decoder's self-attention, ``n_decoder_layers`` layers) the ids
        continue the cached positions and the cache advances by n.
        """
        offset = kv_cache.length if kv_cache is not None else 0
        n = decoder_ids.shape[1]
        positions = torch.arange(offset, offset + n, device=decoder_ids.device)
        x = self.embed(decoder_ids, positions, capture=capture, prefix="decoder.")
        x = self.decoder.run_blocks(
            x, offset=offset, context=memory, context_mask=memory_mask, kv_cache=kv_cache,
            capture=capture, prefix="decoder.",
        )
        if kv_cache is not None:
            kv_cache.advance(n)
        return self.head(x)

    def forward(
        self,
        encoder_ids: torch.Tensor,
        decoder_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        capture: Capture | None = None,
        edits: Mapping[str, Edit] | None = None,
    ) -> torch.Tensor:
        """encoder_ids [b, m], decoder_ids [b, n] -> logits [b, n, V]; ``edits`` replace
        named activations (``encoder.``/``decoder.`` names) for this call only."""
        capture = capture_for(capture, edits)
        memory = self.encode(encoder_ids, attention_mask, capture)
        logits = self.decode(decoder_ids, memory, attention_mask, capture)
        if capture is not None:
            capture.check_applied()
        return logits

    def unembed_residual(self, resid: torch.Tensor) -> torch.Tensor:
        """Decoder logit lens: final norm then unembedding of a decoder residual [..., D]."""
        final_norm = self.decoder.final_norm
        return self.head(final_norm(resid) if final_norm is not None else resid)

    @torch.no_grad()
    def run_with_cache(
        self,
        encoder_ids: torch.Tensor,
        decoder_ids: torch.Tensor,
        names: NameFilter = None,
        edits: Mapping[str, Edit] | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, ActivationCache]:
        capture = Capture(names, edits)
        logits = self(encoder_ids, decoder_ids, capture=capture, **kwargs)
        return logits, capture.cache


def model_classes() -> dict[str, type[nn.Module]]:
    """{kind: model class}; the vision models build on this module, so they are imported
    here, when a model is built, not at import time."""
    from explorer.nn.clip import CLIP
    from explorer.nn.vision import VisionTransformer

    return {"decoder": Transformer, "encoder": Transformer,
            "encoder-decoder": EncoderDecoderTransformer,
            "vision": VisionTransformer, "vision-text": CLIP}


def build_model(cfg: ModelConfig) -> nn.Module:
    """A randomly initialised model of the kind ``cfg.kind`` names."""
    return pack_model(model_classes()[cfg.kind](cfg))
