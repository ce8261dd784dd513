"""Architecture diagrams: a `ModelConfig` -> a Graphviz DOT string.

Draws what the config describes, with tensor shapes on the edges: the token embedding
(plus absolute positions where the model has them), one transformer block's sub-layers
(norms, self-attention with its heads / KV heads / head size, cross-attention for decoders
of encoder-decoder models, the feed-forward network of the config's type, the residual
additions, pre- or post-norm order) inside a box marked "× n_layers", the final norm and the
unembedding. Encoder, decoder and encoder-decoder models draw differently (Vaswani et al.
2017 Fig. 1; Devlin et al. 2019; Raffel et al. 2020).

Pure: config in, DOT text out (``st.graphviz_chart`` renders the text in the browser).
Shapes: n positions, D d_model, h heads, k KV heads, d d_head, F d_mlp, V d_vocab.
"""

from __future__ import annotations

from explorer.config import ModelConfig

POSITIONAL_LABELS = {
    "learned": "learned absolute positions",
    "sinusoidal": "sinusoidal positions",
    "rope": "rotary (RoPE) on q, k",
    "alibi": "ALiBi bias on scores",
    "relative": "relative position bias (T5)",
}
MLP_LABELS = {
    "gelu": "MLP (GELU)",
    "relu": "MLP (ReLU)",
    "swiglu": "gated MLP (SwiGLU)",
    "geglu": "gated MLP (GeGLU)",
    "moe": "mixture of experts",
}
NORM_LABELS = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm"}

_STYLE = {
    "io": 'shape=plaintext, fontcolor="#444444"',
    "embed": 'shape=box, style="rounded,filled", fillcolor="#dbeafe"',
    "norm": 'shape=box, style="rounded,filled", fillcolor="#f3f4f6"',
    "attn": 'shape=box, style="rounded,filled", fillcolor="#fde68a"',
    "mlp": 'shape=box, style="rounded,filled", fillcolor="#bbf7d0"',
    "add": 'shape=circle, width=0.3, fixedsize=true, label="+"',
    "head": 'shape=box, style="rounded,filled", fillcolor="#fbcfe8"',
}


def dot_escape(text: object) -> str:
    """Text safe inside a double-quoted DOT string (backslashes, quotes, newlines)."""
    return (
        str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("\r", " ")
    )


class _Graph:
    """A tiny DOT writer: nodes with escaped labels, edges with shape labels.

    Edges are written after every node and cluster: an edge inside a cluster's braces
    would pull both of its ends into that cluster.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.edges: list[str] = []

    def node(self, name: str, label: str, style: str) -> str:
        lines = "\\n".join(dot_escape(part) for part in label.split("\n"))
        self.lines.append(f'  "{name}" [label="{lines}", {style}];')
        return name

    def add(self, name: str) -> str:
        self.lines.append(f'  "{name}" [{_STYLE["add"]}];')
        return name

    def edge(self, a: str, b: str, label: str = "", extra: str = "") -> None:
        attrs = [f'label="{dot_escape(label)}"'] if label else []
        attrs += [extra] if extra else []
        self.edges.append(f'  "{a}" -> "{b}"' + (f" [{', '.join(attrs)}]" if attrs else "") + ";")


def _attention_label(cfg: ModelConfig, title: str) -> str:
    heads = f"{cfg.n_heads} heads × d_head {cfg.d_head}"
    if cfg.n_kv_heads != cfg.n_heads:
        heads += f"\n{cfg.n_kv_heads} KV heads (grouped-query)"
    extras = []
    if cfg.positional in ("rope", "alibi", "relative") and "cross" not in title:
        extras.append(POSITIONAL_LABELS[cfg.positional])
    if cfg.window is not None:
        extras.append(f"local window ±{cfg.window}")
    keys = "m" if "cross" in title else "n"
    shapes = f"q [n, {cfg.n_heads}, {cfg.d_head}]  k, v [{keys}, {cfg.n_kv_heads}, {cfg.d_head}]"
    return "\n".join([title, heads, shapes, *extras])


def _mlp_label(cfg: ModelConfig) -> str:
    label = f"{MLP_LABELS[cfg.mlp]}\n{cfg.d_model} → {cfg.d_mlp} → {cfg.d_model}"
    if cfg.mlp == "moe":
        label += f"\n{cfg.n_experts} experts, top-{cfg.experts_top_k}"
    return label


def _block(g: _Graph, cfg: ModelConfig, prefix: str, n_layers: int, attn_title: str,
           cross: bool, entry: str) -> str:
    """One block inside a cluster; returns the name of its output node."""
    D = f"[n, {cfg.d_model}]"
    norm = NORM_LABELS[cfg.norm]
    g.lines.append(f'  subgraph "cluster_{prefix}" {{')
    g.lines.append(f'    label="{dot_escape(f"block × {n_layers}")}"; labeljust=r; '
                   'style="rounded,dashed"; color="#6b7280"; fontsize=16;')
    sublayers = [("attn", _attention_label(cfg, attn_title), "attn", "ln1")]
    if cross:
        sublayers.append(("cross", _attention_label(cfg, "cross-attention\n(q from decoder, "
                                                         "k, v from encoder)"), "attn", "ln_cross"))
    sublayers.append(("mlp", _mlp_label(cfg), "mlp", "ln2"))
    current = entry
    for key, label, style, norm_name in sublayers:
        layer = g.node(f"{prefix}{key}", label, _STYLE[style])
        ln = g.node(f"{prefix}{norm_name}", f"{norm_name}: {norm}", _STYLE["norm"])
        plus = g.add(f"{prefix}{key}_add")
        if cfg.norm_position == "pre":
            g.edge(current, ln, D)
            g.edge(ln, layer, D)
            g.edge(layer, plus, D)
            g.edge(current, plus, "residual", 'style=dashed')
            current = plus
        else:
            g.edge(current, layer, D)
            g.edge(layer, plus, D)
            g.edge(current, plus, "residual", 'style=dashed')
            g.edge(plus, ln, D)
            current = ln
    g.lines.append("  }")
    return current


def _embedding(g: _Graph, cfg: ModelConfig, prefix: str, label: str) -> str:
    tokens = g.node(f"{prefix}tokens", f"{label}\n[n]", _STYLE["io"])
    embed = g.node(f"{prefix}embed", f"token embedding\n{cfg.d_vocab} × {cfg.d_model}",
                   _STYLE["embed"])
    g.edge(tokens, embed)
    current = embed
    extras = []
    if cfg.positional in ("learned", "sinusoidal"):
        extras.append(f"+ {POSITIONAL_LABELS[cfg.positional]} [{cfg.n_ctx}, {cfg.d_model}]")
    if cfg.n_token_types:
        extras.append(f"+ token types [{cfg.n_token_types}, {cfg.d_model}]")
    if cfg.embed_norm:
        extras.append(f"{NORM_LABELS[cfg.norm]}")
    if extras:
        current = g.node(f"{prefix}embed_extra", "\n".join(extras), _STYLE["embed"])
        g.edge(embed, current, f"[n, {cfg.d_model}]")
    return current


def _final(g: _Graph, cfg: ModelConfig, prefix: str, current: str) -> str:
    if cfg.final_norm:
        norm = g.node(f"{prefix}final_norm", f"final {NORM_LABELS[cfg.norm]}", _STYLE["norm"])
        g.edge(current, norm, f"[n, {cfg.d_model}]")
        current = norm
    return current


def _head(g: _Graph, cfg: ModelConfig, current: str) -> None:
    D = f"[n, {cfg.d_model}]"
    if not cfg.has_unembed:
        out = g.node("out", f"hidden states\n{D}", _STYLE["io"])
        g.edge(current, out, D)
        return
    if cfg.mlm_head:
        transform = g.node("transform", f"MLM transform\ndense + {cfg.activation} + norm",
                           _STYLE["head"])
        g.edge(current, transform, D)
        current = transform
    tied = " (tied to embedding)" if cfg.tied_embeddings else ""
    unembed = g.node("unembed", f"unembedding{tied}\n{cfg.d_model} × {cfg.d_vocab}",
                     _STYLE["head"])
    g.edge(current, unembed, D)
    logits = g.node("logits", f"logits\n[n, {cfg.d_vocab}]", _STYLE["io"])
    g.edge(unembed, logits)


def _stack(g: _Graph, cfg: ModelConfig, kind: str) -> None:
    """Encoder-only or decoder-only: embedding, blocks, final norm, head."""
    current = _embedding(g, cfg, "", "input tokens")
    title = "self-attention\n(bidirectional)" if kind == "encoder" else "causal self-attention"
    current = _block(g, cfg, "b_", cfg.n_layers, title, False, current)
    _head(g, cfg, _final(g, cfg, "", current))


def _encoder_decoder(g: _Graph, cfg: ModelConfig) -> None:
    enc = _embedding(g, cfg, "enc_", "source tokens")
    enc = _block(g, cfg, "enc_", cfg.n_layers, "encoder self-attention\n(bidirectional)",
                 False, enc)
    enc = _final(g, cfg, "enc_", enc)
    dec = _embedding(g, cfg, "dec_", "target tokens (shared embedding)")
    dec = _block(g, cfg, "dec_", cfg.n_decoder_layers, "decoder causal self-attention",
                 True, dec)
    g.edge(enc, "dec_cross", f"encoder states [m, {cfg.d_model}]",
           'color="#b45309", fontcolor="#b45309"')
    _head(g, cfg, _final(g, cfg, "dec_", dec))


def architecture_dot(cfg: ModelConfig) -> str:
    """The DOT text of a diagram of the model `cfg` describes (see the module docstring)."""
    g = _Graph()
    if cfg.kind == "encoder-decoder":
        _encoder_decoder(g, cfg)
    else:
        _stack(g, cfg, cfg.kind)
    header = [
        "digraph transformer {",
        "  rankdir=TB; nodesep=0.35; ranksep=0.3;",
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, color="#6b7280"];',
        f'  label="{dot_escape(f"{cfg.name} ({cfg.kind})")}"; labelloc=t; fontsize=14;',
    ]
    return "\n".join([*header, *g.lines, *g.edges, "}"])
