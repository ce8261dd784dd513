"""Information flow routes of a prompt's run (`explorer.analysis.flow`): every block's
importances, from the residual stream the run keeps, the attention patterns it recomputes
and each head's value vectors through the output projection (one layer at a time,
memoised in the run)."""

from __future__ import annotations

import torch
from torch import Tensor

from explorer.analysis.flow import FlowImportances, head_importances, layer_importances
from explorer.nn.attention import repeat_kv
from explorer.runs.prompt_run import PromptRun

FLOW_MAX_TOKENS = 256  # [L, N, N] importances: 30 x 256^2 floats = 7.9 MB


def flow_unavailable(run: PromptRun) -> str | None:
    """Why the flow graph cannot be drawn for this run, or None."""
    if run.kind not in ("decoder", "encoder"):
        return ("the flow graph follows one stack of self-attention blocks; an encoder-decoder "
                "also reads its encoder through cross-attention")
    stream = run.streams["main"]
    if not stream.pre_norm:
        return ("every block of a post-norm model renormalises the sum it writes, so its "
                "output is not a sum of the parts the graph weighs")
    if run.edits:
        return "this run was edited (an intervention); the graph reads the unedited model"
    if len(stream.tokens) > FLOW_MAX_TOKENS:
        return (f"the prompt has {len(stream.tokens):,} tokens; the graph covers prompts of up "
                f"to {FLOW_MAX_TOKENS} (its importances grow with the square of the length)")
    return None


def values_out(run: PromptRun, layer: int) -> Tensor:
    """``[H, N, D]``: each head's value vector of each token through that head's slice of
    the output projection (what the head writes when it attends to that token alone).
    Recomputed per call (one projection of one layer), not kept: 5 MB a layer at 256 tokens."""
    block = run.model.blocks[layer]
    attn = block.attn
    with torch.no_grad():
        x = run.streams["main"].boundaries[layer][None].to(attn.v.weight)
        v = attn.v(block.attention_input(x))[0].float()  # [N, g * d]
        v = v.reshape(v.shape[0], attn.n_kv_heads, attn.d_head).transpose(0, 1)  # [g, N, d]
        v = repeat_kv(v[None], attn.n_heads // attn.n_kv_heads)[0]  # [H, N, d]
        w_o = attn.o.weight.float().reshape(-1, attn.n_heads, attn.d_head)  # [D, H, d]
        return torch.bmm(v, w_o.permute(1, 2, 0)).cpu()  # [H, N, d] @ [H, d, D]


def _layer_inputs(run: PromptRun, layer: int) -> tuple[Tensor, ...]:
    stream = run.streams["main"]
    pre = stream.boundaries[layer].float()
    mid = pre + stream.sublayers["attn"][layer].float()
    return run.layer("self", layer), values_out(run, layer), pre, mid, \
        stream.boundaries[layer + 1].float()


def information_flow(run: PromptRun) -> FlowImportances:
    """Every block's importances (computed once per run)."""
    if (why := flow_unavailable(run)) is not None:
        raise ValueError(f"no flow graph: {why}")
    stream = run.streams["main"]
    return run.derive(("flow",), lambda: layer_importances(
        stream.n_layers, lambda layer: _layer_inputs(run, layer), causal=run.kind == "decoder"))


def edge_heads(run: PromptRun, layer: int, target: int, source: int) -> Tensor:
    """``[H]``: how the heads of ``layer`` split the edge ``source -> target``."""
    pattern, out, _, mid, _ = _layer_inputs(run, layer)
    return head_importances(pattern, out, mid, target, source)
