"""Direct logit attribution per head (Elhage et al. 2021; Wang et al. 2022's IOI circuit
is read off exactly this map): how much each head's and each MLP's output, read through
the final norm with its scale frozen at the real run's value, pushes the logit of a target
token above a distractor's at one position. With the embeddings, the attention biases
and the norm/unembedding biases, the parts add up to the real logit difference.
Shapes: ``L`` layers, ``H`` heads, ``D`` d_model, ``d`` d_head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from explorer.analysis.contributions import direct_logit_attribution
from explorer.runs import PromptRun, contributions_unavailable, lens_stream
from explorer.runs.layer_views import final_norm_of


@dataclass(frozen=True)
class HeadAttribution:
    """``heads [L, H]``, ``mlps [L]``, the ``embed`` and ``biases`` terms (attention output
    biases, the norm's and the unembedding's), their ``total`` and the model's real
    ``logit_diff``. For T5's decoder, ``heads`` are the self-attention heads and
    ``cross [L, H]`` the cross-attention heads (None elsewhere)."""

    heads: Tensor
    mlps: Tensor
    embed: float
    biases: float
    total: float
    logit_diff: float
    cross: Tensor | None = None


def _head_outputs(run: PromptRun, position: int) -> dict[str, Tensor]:
    """Each head's write into the residual stream at ``position``: ``{sub-layer: [L, H, D]}``
    (one forward capturing ``attn.z``, memoised in the run)."""
    stream = lens_stream(run)
    sub_names = {"attn": "attn", "cross": "cross_attn"}

    def compute() -> dict[str, Tensor]:
        names = [f"{stream.prefix}blocks.*.{sub_names[s]}.z" for s in stream.sublayers]
        if run.kind == "encoder-decoder":
            source = run.streams["encoder"].tokens.ids[None]
            _, cache = run.model.run_with_cache(source, stream.tokens.ids[None], names=names)
            blocks = run.model.decoder.blocks
        else:
            _, cache = run.model.run_with_cache(stream.tokens.ids[None], names=names,
                                                last_only=True)
            blocks = run.model.blocks
        out = {}
        for sub in stream.sublayers:
            per_layer = []
            for layer, block in enumerate(blocks):
                z = cache[f"{stream.prefix}blocks.{layer}.{sub_names[sub]}.z"][0, :, position]
                attn = getattr(block, sub_names[sub])
                w_o = attn.o.weight.detach().float()  # [D, H * d]
                h, d = z.shape
                per_layer.append(torch.einsum("hd,ehd->he", z.float(),
                                              w_o.reshape(-1, h, d)))  # [H, D]
            out[sub] = torch.stack(per_layer)
        return out

    return run.derive(("head_outputs", position), compute)


def head_attribution(run: PromptRun, position: int, target_id: int, distractor_id: int
                     ) -> HeadAttribution:
    """Direct attribution of ``logit[target] - logit[distractor]`` at ``position``."""
    if (why := contributions_unavailable(run)) is not None:
        raise ValueError(f"no direct logit attribution: {why}")
    stream = lens_stream(run)
    _, parts = stream.components([position])  # [P, 1, D]: embed, then per layer subs, mlp
    heads = _head_outputs(run, position)
    n_layers = stream.n_layers
    per_block = len(stream.sublayers) + 1
    # Split each attention part into its heads plus the remainder (the output bias).
    pieces, kinds = [parts[0, 0]], [("embed", -1, -1)]
    for layer in range(n_layers):
        for s, sub in enumerate(stream.sublayers):
            part = parts[1 + layer * per_block + s, 0]
            for head, vec in enumerate(heads[sub][layer]):
                pieces.append(vec)
                kinds.append((sub, layer, head))
            pieces.append(part - heads[sub][layer].sum(0))
            kinds.append(("bias", layer, -1))
        pieces.append(parts[1 + layer * per_block + len(stream.sublayers), 0])
        kinds.append(("mlp", layer, -1))
    head = run.model.head
    w_u = head.unembed.weight.detach().float()
    direction = (w_u[target_id] - w_u[distractor_id])[None]  # [1, D]
    bias = head.unembed.bias
    bias_diff = None if bias is None else (bias[target_id] - bias[distractor_id]).detach()[None]
    final = stream.boundaries[-1][[position]].float()
    shares, constant = direct_logit_attribution(torch.stack(pieces)[:, None], final, direction,
                                                final_norm_of(run), head.scale, bias_diff)
    shares = shares[:, 0].float()
    n_heads = heads["attn"].shape[1]
    grids = {sub: torch.zeros(n_layers, n_heads) for sub in stream.sublayers}
    mlps, embed, biases = torch.zeros(n_layers), 0.0, float(constant[0])
    for (kind, layer, index), value in zip(kinds, shares.tolist(), strict=True):
        if kind == "embed":
            embed += value
        elif kind == "bias":
            biases += value
        elif kind == "mlp":
            mlps[layer] = value
        else:
            grids[kind][layer, index] = value
    with torch.no_grad():
        logits = run.model.unembed_residual(final.to(w_u.dtype))[0]
    return HeadAttribution(grids["attn"], mlps, embed, biases, float(shares.sum()) + float(
        constant[0]), float(logits[target_id] - logits[distractor_id]), grids.get("cross"))
