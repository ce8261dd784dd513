"""The tour's steps from block 1's output to the next token: every block (a per-layer strip),
T5's decoder and cross-attention, the final norm and unembedding (BERT's masked-LM head; an
encoder without a head ends with its contextual vectors), probabilities, and sampling with
temperature, top-k and top-p (Holtzman et al. 2020). Logit lens: nostalgebraist 2020.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
import torch

from explorer.analysis.lens import summarise_logits
from explorer.runs import stream_norms
from explorer.runs.tour import trace_sampling
from explorer.ui.layers import token_texts
from explorer.ui.tour import Step, TourContext
from explorer.ui.tour_steps import shape, shapes, show, you
from explorer.ui.tour_steps_attention import mask_text
from explorer.ui.widgets import escape_markdown
from explorer.viz.tour import key_chart, layer_strip, token_bars, vector_chart

TOP = 10
SAMPLE_SEED_KEY = "tour_sample_draw"


def _lens_row(ctx: TourContext, stream: str) -> tuple[list[str], torch.Tensor] | None:
    """The logit lens's top token and its probability after the embeddings and every block
    at the followed position, where this stream feeds the head."""
    if ctx.output is None or stream != ctx.last_stream:
        return None
    run = ctx.run
    resid = run.streams[stream].boundaries[:, ctx.followed(stream)]  # [L + 1, D]

    def compute():
        param = next(run.model.parameters())
        with torch.no_grad():
            logits = run.model.unembed_residual(resid.to(param.device, param.dtype))
        summary = summarise_logits(logits[None], k=1)
        return summary.top_ids[0, :, 0].cpu(), summary.top_probs[0, :, 0].cpu()

    ids, probs = run.derive(("tour-lens", stream, ctx.followed(stream)), compute)
    return list(token_texts(ctx.lm.tokenizer, ids)), probs


def strip_step(stream: str):
    def render(ctx: TourContext) -> None:
        cfg, run = ctx.cfg, ctx.run
        n_layers = run.streams[stream].n_layers
        t = ctx.followed(stream)
        norms = stream_norms(run, stream)
        lens = _lens_row(ctx, stream)
        who = {"encoder": "encoder ", "decoder": "decoder "}.get(stream, "")
        text = (f"Blocks 2 to {n_layers} repeat the same steps with their own weights. The "
                f"chart follows {you(ctx, stream)} through all {n_layers} {who}blocks: the "
                "length of its residual vector after each block, and how much attention and "
                "the feed-forward wrote into it.")
        if lens is not None:
            text += (" The top row reads the stream after each block through the final norm "
                     "and unembedding (the *logit lens*): what the model would predict if it "
                     "stopped there. The last cell is its real prediction.")
        if stream == "encoder":
            text += (" After the last block a final RMSNorm gives the **encoder output**, "
                     "one vector per encoder token, which every decoder block reads.")
        st.markdown(text)
        st.latex(r"x^{(\ell+1)} = \mathrm{Block}_\ell\big(x^{(\ell)}\big), \quad "
                 rf"\ell = 1, \dots, {n_layers}")
        shapes(f"every block {shape(ctx, 'ND')} → {shape(ctx, 'ND')}"
               if stream == ctx.first_stream else f"`[N={len(ctx.labels(stream))}, "
               f"d_model={cfg.d_model}]` → the same")
        layers = ["emb", *(f"L{i + 1}" for i in range(n_layers))]
        series = {"‖residual‖": norms.resid[:, t]}
        for name, written in norms.written.items():
            label = {"attn": "attention", "cross": "cross-attention", "mlp": "feed-forward"}
            series[f"‖{label.get(name, name)} wrote‖"] = written[:, t]
        tokens, probs = lens if lens is not None else (None, None)
        note = "" if ctx.trace(stream).block.pre_norm else \
            "Post-norm: what a sub-layer wrote is measured after its LayerNorm."
        show(layer_strip(layers, series, f"{ctx.label(stream)} through every block",
                         top_tokens=tokens, top_probs=probs, note=note), f"strip_{stream}")

    return render


# --------------------------------------------------------------------------- T5 decoder


def decoder_self_step(ctx: TourContext) -> None:
    attn = ctx.trace("decoder").block.attn
    h = ctx.head
    text, eq = mask_text(ctx, True, "decoder")
    st.markdown(
        "The decoder reads its own tokens (the decoder text) with blocks like a GPT's: "
        "the same norm, queries, keys, values and softmax as steps 3 to 8, but causal. "
        f"{text} Shown: decoder block 1, head {h}, at {you(ctx, 'decoder')}.")
    st.latex(eq)
    n = len(ctx.labels("decoder"))
    shapes(f"decoder stream `[N_dec={n}, d_model={ctx.cfg.d_model}]`, pattern per head "
           f"`[{n}, {n}]`")
    blocked = (~torch.isfinite(attn.bias[h])).tolist()
    show(key_chart(ctx.labels("decoder"), {"attention weight": attn.pattern[h]},
                   f"Decoder self-attention of {ctx.label('decoder')}, head {h}",
                   y_title="weight", blocked=blocked, query=attn.position), "dec_self")


def cross_step(ctx: TourContext) -> None:
    cfg = ctx.cfg
    cross = ctx.trace("decoder").block.cross
    h = ctx.head
    m, n = len(ctx.labels("source")), len(ctx.labels("target"))
    st.markdown(
        "Then comes what makes an encoder-decoder: **cross-attention**. The query comes "
        f"from the decoder token, the keys and values from the encoder output (the same "
        f"{m} vectors for every decoder block). This is the only road from the input text "
        "to the output. No mask: every encoder token may be read.")
    st.latex(r"a_j = \mathrm{softmax}_j\big(q^{dec} \cdot k_j^{enc}\big),\qquad "
             r"z = \sum_j a_j\, v_j^{enc}")
    shapes(f"Q `[N_dec={n}, n_heads={cfg.n_heads}, d_head={cfg.d_head}]`, K, V "
           f"`[N_enc={m}, n_heads={cfg.n_heads}, d_head={cfg.d_head}]` → pattern "
           f"`[{n}, {m}]` per head")
    left, right = st.columns(2)
    with left:
        show(key_chart(ctx.labels("source"), {"attention weight": cross.pattern[h]},
                       f"{ctx.label('decoder')} reads the encoder, head {h}",
                       y_title="weight"), "cross")
    with right:
        show(vector_chart({"cross-attention output": cross.out},
                          "What cross-attention writes"), "cross_out")


def decoder_steps(cfg: Any) -> list[Step]:
    return [
        Step("encoder_blocks", "Every encoder block, the encoder output",
             strip_step("encoder")),
        Step("decoder_self", "The decoder: causal self-attention", decoder_self_step),
        Step("cross", "Cross-attention: the decoder reads the encoder", cross_step),
    ]


# --------------------------------------------------------------------------- output


def _top_labels(ctx: TourContext, ids: torch.Tensor) -> list[str]:
    return list(token_texts(ctx.lm.tokenizer, ids))


def unembed_step(ctx: TourContext) -> None:
    cfg, out = ctx.cfg, ctx.output
    if out is None:
        return pooled_step(ctx)
    final = "the final " + ("RMSNorm" if cfg.norm == "rmsnorm" else "LayerNorm")
    parts = [f"After the last block, {final} and then the **unembedding** matrix W_U give "
             f"one score (*logit*) per vocabulary token: {cfg.d_vocab:,} of them."]
    eq = r"\text{logits} = \mathrm{Norm}(x^{(L)})\, W_U"
    if out.transformed is not None:
        parts = ["BERT has no final norm after its post-norm blocks; its **masked-LM head** "
                 "transforms the vector (dense layer, GELU, LayerNorm), then W_U and a bias "
                 f"give one logit per vocabulary token ({cfg.d_vocab:,})."]
        eq = (r"\text{logits} = \mathrm{LayerNorm}\big(\mathrm{GELU}(x W_T + b_T)\big)\,"
              r" W_U + b")
    if cfg.tied_embeddings:
        parts.append("This model **ties** W_U to the embedding matrix: a logit is the dot "
                     "product with each token's own embedding.")
    if out.scale != 1.0:
        parts.append(f"T5 first scales the vector by d_model^-½ = {out.scale:.4g}.")
        eq = r"\text{logits} = \big(\mathrm{Norm}(x^{(L)})\, d_{model}^{-1/2}\big)\, W_U"
    st.markdown(" ".join(parts) + f" Shown: the top {TOP} at {you(ctx, ctx.last_stream)}.")
    st.latex(eq)
    shapes(f"`[d_model={cfg.d_model}]` · W_U `[d_model={cfg.d_model}, "
           f"d_vocab={cfg.d_vocab}]` → logits `[d_vocab={cfg.d_vocab}]`")
    top = out.logits.topk(TOP)
    show(token_bars(_top_labels(ctx, top.indices), {"logit": top.values},
                    f"Highest logits at {ctx.label(ctx.last_stream)}", x_title="logit",
                    value_format=".2f"),
         "logits")


def pooled_step(ctx: TourContext) -> None:
    """An encoder without a head (MiniLM): its output is contextual vectors."""
    cfg = ctx.cfg
    final = ctx.trace().final
    pooled = final.mean(0)
    pooled = pooled / pooled.norm()
    st.markdown(
        f"{escape_markdown(ctx.lm.name)} has **no unembedding**: it was trained to produce "
        "embeddings, not words. Its output is one contextual vector per token (each has "
        "now read the whole sentence). Sentence-transformers averages them over the tokens "
        "and scales the mean to length 1: one vector for the whole text, compared with other "
        "texts' vectors by cosine similarity.")
    st.latex(r"e = \frac{\bar h}{\lVert \bar h \rVert},\qquad \bar h = \frac{1}{N}"
             r"\sum_{i} h_i^{(L)}")
    shapes(f"{shape(ctx, 'ND')} → mean → `[d_model={cfg.d_model}]`")
    show(vector_chart({"this token's output": final[ctx.position] / final[ctx.position].norm(),
                       "sentence embedding": pooled},
                      "Output vectors (scaled to length 1)"), "pooled")


def probabilities_step(ctx: TourContext) -> None:
    out = ctx.output
    probs = out.probs
    top = probs.topk(TOP)
    entropy = float(-(probs * probs.clamp_min(1e-30).log()).sum())
    what = "the model's distribution over the next token"
    if ctx.cfg.kind == "encoder":
        mask_id = getattr(ctx.lm.tokenizer, "mask_token_id", None)
        followed = int(ctx.run.streams["main"].tokens.ids[ctx.position])
        what = ("BERT's guess for the **hidden word** under the mask" if followed == mask_id
                else "BERT's guess for the word at this position (it can see that word, so "
                "it mostly gives it back; a mask hides it)")
    st.markdown(
        f"The **softmax** turns the {ctx.cfg.d_vocab:,} logits into probabilities: "
        f"{what}. These are exactly the model's own output probabilities. The top {TOP} "
        f"hold {float(top.values.sum()):.1%} of the mass; the entropy is {entropy:.2f} nats "
        "(0 would be certainty).")
    st.latex(r"p_i = \frac{e^{z_i}}{\sum_{j} e^{z_j}}")
    shapes(f"logits `[d_vocab={ctx.cfg.d_vocab}]` → p `[d_vocab={ctx.cfg.d_vocab}]`, "
           "Σp = 1")
    show(token_bars(_top_labels(ctx, top.indices), {"probability": top.values},
                    f"Most likely tokens at {ctx.label(ctx.last_stream)}"), "probs")


def sampling_step(ctx: TourContext) -> None:
    out = ctx.output
    st.markdown(
        "To write text, the model draws the next token from these probabilities, appends it "
        "and runs again. **Temperature** T divides the logits first: below 1 sharpens the "
        "distribution, above 1 flattens it. **Top-k** keeps the k most likely tokens; "
        "**top-p** keeps the smallest set of most likely tokens whose probability adds up to "
        "p. What is left is renormalised and one token is drawn. Move the sliders.")
    st.latex(r"p_i \propto \exp(z_i / T)\;\;\text{for } i \in \text{top-}k \cap "
             r"\text{top-}p,\qquad \text{token} \sim p")
    shapes(f"`[d_vocab={ctx.cfg.d_vocab}]` → one token id")
    cols = st.columns(4)
    temperature = cols[0].slider("Temperature", 0.1, 2.0, 1.0, 0.05, key="tour_temperature")
    top_k = cols[1].slider("Top-k (0: off)", 0, 100, 50, key="tour_top_k")
    top_p = cols[2].slider("Top-p", 0.05, 1.0, 0.9, 0.05, key="tour_top_p")
    cols[3].button("Draw again", key="tour_draw", on_click=lambda: st.session_state.update(
        {SAMPLE_SEED_KEY: st.session_state.get(SAMPLE_SEED_KEY, 0) + 1}))
    steps = trace_sampling(out.logits, temperature, top_k or None, top_p)
    generator = torch.Generator().manual_seed(st.session_state.get(SAMPLE_SEED_KEY, 0))
    drawn = int(torch.multinomial(steps.after_top_p, 1, generator=generator))
    kept = int((steps.after_top_p > 0).sum())
    token = escape_markdown(_top_labels(ctx, torch.tensor([drawn]))[0])
    st.markdown(f"**{kept:,}** of {ctx.cfg.d_vocab:,} tokens remain; this draw gave "
                f"**“{token}”** (p = {float(steps.after_top_p[drawn]):.3f}).")
    order = torch.unique(torch.cat([steps.tempered.topk(TOP).indices, torch.tensor([drawn])]))
    order = order[steps.tempered[order].argsort(descending=True)]
    show(token_bars(_top_labels(ctx, order),
                    {"model (T = 1)": steps.probs[order],
                     f"T = {temperature:g}": steps.tempered[order],
                     "after top-k and top-p": steps.after_top_p[order]},
                    "Probabilities before and after the sampling filters",
                    note="The drawn token is highlighted.",
                    highlight=int((order == drawn).nonzero()[0, 0])), "sampling")


def output_steps(cfg: Any) -> list[Step]:
    """The per-layer strip of the stream the head reads, then the head and what follows."""
    last = "decoder" if cfg.kind == "encoder-decoder" else "main"
    who = "decoder block" if last == "decoder" else "block"
    steps = [Step("blocks", f"The same through every {who}", strip_step(last))]
    if not cfg.has_unembed:
        return [*steps, Step("output", "The output: contextual vectors", unembed_step)]
    head = "Masked-LM head" if cfg.mlm_head else "Final norm and unembedding"
    steps += [Step("unembed", head, unembed_step),
              Step("probs", "Probabilities", probabilities_step)]
    if cfg.kind != "encoder":
        steps.append(Step("sample", "Sampling: temperature, top-k, top-p", sampling_step))
    return steps
