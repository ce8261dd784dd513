"""What a transformer costs, in closed form from its `ModelConfig`: parameters, FLOPs per
token, the attention matrix's memory (the n² term) and the KV cache; full vs local-window
attention.

- Parameters: every weight and bias `explorer.nn` builds for the config, by the components of
  `explorer.analysis.params` (``parameter_formula(cfg)`` equals
  ``parameter_counts(build_model(cfg))``, a test checks it for every family and for the
  embedded models).
- FLOPs per token of a forward (Kaplan et al. 2020, section 2.1): 2 per weight a token is
  multiplied by (projections, feed-forward, unembedding; a mixture of experts runs only its
  top-k experts), plus attention's 2 · 2 · n_heads · d_head per key the token attends to
  (q·k for every key, then the weighted sum of values). Biases, norms and the softmax are a
  rounding error and are left out, as Kaplan et al. do.
- Memory: eager attention materialises a [heads, queries, keys] score matrix per layer (the n²
  term FlashAttention, Dao et al. 2022, avoids); decoding keeps every past key and value of
  every layer (the KV cache, 2 · layers · kv_heads · d_head values per token: grouped-query
  attention, Ainslie et al. 2023, shrinks it by n_heads / n_kv_heads).
- Local-window attention (Beltagy et al. 2020; Mistral's sliding window): a query sees only
  keys within ``window`` positions (``|i - j| <= window``, `explorer.nn.attention`), so
  attention cost per token stops growing with the context and a causal model's cache can
  drop keys older than the window.

Pure arithmetic on a config: no model is built or run.
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.analysis.params import COMPONENTS
from explorer.config import ModelConfig

GATED_MLPS = ("swiglu", "geglu")


# --------------------------------------------------------------------------- parameters


def _linear(d_in: int, d_out: int, bias: bool) -> int:
    return d_in * d_out + (d_out if bias else 0)


def norm_parameters(cfg: ModelConfig) -> int:
    """One norm: LayerNorm has a weight (and a bias unless ``norm_bias=False``), RMSNorm a
    weight only."""
    if cfg.norm == "rmsnorm":
        return cfg.d_model
    return cfg.d_model * (2 if cfg.norm_bias else 1)


def attention_parameters(cfg: ModelConfig) -> int:
    """One attention module: q [h·d, D], k and v [g·d, D], o [D, h·d] and their biases."""
    D, q_out, kv_out = cfg.d_model, cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
    return (_linear(D, q_out, cfg.qkv_bias) + 2 * _linear(D, kv_out, cfg.qkv_bias)
            + _linear(q_out, D, cfg.out_bias))


def mlp_parameters(cfg: ModelConfig) -> int:
    """One feed-forward sub-layer: up and down (gated: gate, up and down); a mixture of
    experts has a router and ``n_experts`` plain MLPs."""
    D, F, bias = cfg.d_model, cfg.d_mlp, cfg.mlp_bias
    plain = _linear(D, F, bias) + _linear(F, D, bias)
    if cfg.mlp in GATED_MLPS:
        return plain + _linear(D, F, bias)
    if cfg.mlp == "moe":
        return _linear(D, cfg.n_experts, bias) + cfg.n_experts * plain
    return plain


def _stack(cfg: ModelConfig, n_layers: int, cross: bool) -> dict[str, int]:
    """Blocks (norms, self-attention, [cross-attention,] MLP), final norm, relative bias."""
    norms_per_block = 3 if cross else 2
    return {
        "attention": n_layers * attention_parameters(cfg) * (2 if cross else 1),
        "mlp": n_layers * mlp_parameters(cfg),
        "norms": (n_layers * norms_per_block + (1 if cfg.final_norm else 0)) * norm_parameters(cfg),
        "positions": cfg.relative_buckets * cfg.n_heads if cfg.positional == "relative" else 0,
    }


def parameter_formula(cfg: ModelConfig) -> dict[str, int]:
    """Parameters per component (``explorer.analysis.params.COMPONENTS`` order, zeros left
    out), computed from the config alone. Tied unembeddings count once, as the embedding."""
    counts = dict.fromkeys(COMPONENTS, 0)
    D, V = cfg.d_model, cfg.d_vocab
    counts["embedding"] = V * D + cfg.n_token_types * D
    if cfg.positional == "learned":
        counts["positions"] += cfg.n_ctx * D
    if cfg.embed_norm:
        counts["norms"] += norm_parameters(cfg)
    stacks = ([(cfg.n_layers, False), (cfg.n_decoder_layers, True)]
              if cfg.kind == "encoder-decoder" else [(cfg.n_layers, False)])
    for n_layers, cross in stacks:
        for component, count in _stack(cfg, n_layers, cross).items():
            counts[component] += count
    if cfg.has_unembed or cfg.kind == "encoder-decoder":
        if cfg.mlm_head:
            counts["unembedding"] += _linear(D, D, True)
            counts["norms"] += norm_parameters(cfg)
        counts["unembedding"] += (0 if cfg.tied_embeddings else V * D) + (
            V if cfg.unembed_bias else 0)
    return {component: count for component, count in counts.items() if count}


# --------------------------------------------------------------------------- FLOPs


def keys_seen(cfg: ModelConfig, context: int, window: int | None = None, causal: bool = True
              ) -> int:
    """Keys one query attends to in a context of ``context`` tokens: all of them (the last
    token of a causal model, any token of an encoder), or the ones within the window."""
    if window is None:
        return context
    return min(context, window + 1 if causal else 2 * window + 1)


def matmul_weights_per_token(cfg: ModelConfig, n_layers: int | None = None,
                             cross: bool = False) -> int:
    """Weights one token of one stack is multiplied by (biases left out): q, k, v, o and the
    MLP's matrices in every layer (a mixture of experts: the router and top-k experts)."""
    D, F = cfg.d_model, cfg.d_mlp
    attn = 2 * D * cfg.n_heads * cfg.d_head + 2 * D * cfg.n_kv_heads * cfg.d_head
    if cross:  # cross-attention: the decoder token's query and output, and the keys and
        # values of the encoder token it is paired with (computed once per encoder token)
        attn *= 2
    if cfg.mlp in GATED_MLPS:
        mlp = 3 * D * F
    elif cfg.mlp == "moe":
        mlp = D * cfg.n_experts + cfg.experts_top_k * 2 * D * F
    else:
        mlp = 2 * D * F
    layers = cfg.n_layers if n_layers is None else n_layers
    return layers * (attn + mlp)


@dataclass(frozen=True)
class TokenFlops:
    """Forward FLOPs of one token, by where they are spent."""

    projections: int  # q, k, v, o and the feed-forward, every layer
    attention: int  # q·k scores and the weighted sum of values, every layer
    unembedding: int  # the final projection to the vocabulary (and BERT's MLM transform)

    @property
    def total(self) -> int:
        return self.projections + self.attention + self.unembedding


def attention_flops(cfg: ModelConfig, keys: int, n_layers: int | None = None) -> int:
    """2 · 2 · n_heads · d_head · keys per layer: q·k with every key, then pattern · v."""
    layers = cfg.n_layers if n_layers is None else n_layers
    return layers * 4 * cfg.n_heads * cfg.d_head * keys


def flops_per_token(cfg: ModelConfig, context: int, window: int | None = None) -> TokenFlops:
    """Forward FLOPs of the token that sees ``context`` tokens (the last one of a causal
    model decoding with a KV cache; any token of an encoder).

    An encoder-decoder pairs one encoder token and one decoder token (encoder and decoder
    both ``context`` long): the decoder's cross-attention reads all ``context`` encoder
    keys; its self-attention the causal ones.
    """
    window = cfg.window if window is None else window
    unembed = 0
    if cfg.has_unembed or cfg.kind == "encoder-decoder":  # BERT's MLM head: a dense D x D first
        unembed = 2 * cfg.d_model * (cfg.d_vocab + (cfg.d_model if cfg.mlm_head else 0))
    if cfg.kind == "encoder-decoder":
        return TokenFlops(
            projections=2 * (matmul_weights_per_token(cfg)
                             + matmul_weights_per_token(cfg, cfg.n_decoder_layers, cross=True)),
            attention=(attention_flops(cfg, keys_seen(cfg, context, window, causal=False))
                       + attention_flops(cfg, keys_seen(cfg, context, window),
                                         cfg.n_decoder_layers)
                       + attention_flops(cfg, context, cfg.n_decoder_layers)),
            unembedding=unembed,
        )
    keys = keys_seen(cfg, context, window, causal=cfg.causal)
    return TokenFlops(2 * matmul_weights_per_token(cfg), attention_flops(cfg, keys), unembed)


# --------------------------------------------------------------------------- memory


def attention_matrix_bytes(cfg: ModelConfig, context: int, bytes_per_value: int,
                           batch: int = 1, window: int | None = None) -> int:
    """One layer's [batch, heads, queries, keys] attention scores for ``context`` queries:
    the n² term (n · keys with a window, stored as a band)."""
    keys = keys_seen(cfg, context, window, causal=cfg.causal)
    return batch * cfg.n_heads * context * keys * bytes_per_value


def kv_cache_bytes(cfg: ModelConfig, context: int, bytes_per_value: int, batch: int = 1,
                   window: int | None = None) -> int:
    """Keys and values kept while decoding after ``context`` tokens: 2 · layers · kv_heads ·
    d_head values per kept position (a causal window keeps only its last window + 1).

    Encoders do not decode: 0. An encoder-decoder's decoder also keeps the cross-attention
    keys/values of a ``context``-token encoder output in every decoder layer.
    """
    if cfg.kind == "encoder":
        return 0
    window = cfg.window if window is None else window
    kept = keys_seen(cfg, context, window, causal=True)
    per_position = 2 * cfg.n_kv_heads * cfg.d_head * bytes_per_value * batch
    if cfg.kind == "encoder-decoder":
        return cfg.n_decoder_layers * per_position * (kept + context)
    return cfg.n_layers * per_position * kept


def format_bytes(count: float) -> str:
    """A size a person reads at a glance, in powers of 1024: 512 B, 1.5 KiB, 22.5 MiB."""
    for threshold, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if count >= threshold:
            return f"{count / threshold:.1f} {suffix}"
    return f"{int(count)} B"
