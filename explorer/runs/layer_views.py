"""What the Layers page reads from a :class:`~explorer.runs.prompt_run.PromptRun`: the logit
lens (nostalgebraist 2020), a token's probability and rank through the layers, direct logit
attribution (Elhage et al. 2021), residual norms and geometry. Each is memoised in the run.

The lens unembeds only the rows and positions asked for, a chunk at a time, and keeps the
top-k, entropy and KL (`explorer.analysis.lens`), never a full-vocabulary tensor per layer.
``logit_lens`` is the library entry point (``explorer.logit_lens``).
Shapes: ``R`` rows, ``C`` positions, ``P`` parts, ``N`` tokens, ``D`` d_model, ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from explorer.analysis.contributions import FinalNorm, direct_logit_attribution
from explorer.analysis.geometry import (
    PCA2D,
    aligned_pca,
    consecutive_cosine,
    residual_norms,
    token_cosine,
)
from explorer.analysis.lens import LensSummary, summarise_logits, token_prob_and_rank
from explorer.runs.prompt_run import PromptRun, ResidualStream, Row, Tokens, run_prompt

LOGITS_CHUNK_BYTES = 32 * 2**20  # unembed at most this many bytes of logits at once


def lens_stream(run: PromptRun) -> ResidualStream | None:
    """The stream the unembedding reads (the decoder's for T5), or None when the model has no
    unembedding (an encoder without a masked-LM head, such as MiniLM)."""
    if getattr(run.model, "head", None) is None:
        return None
    return run.streams["decoder" if run.kind == "encoder-decoder" else "main"]


def _require_lens(run: PromptRun) -> ResidualStream:
    stream = lens_stream(run)
    if stream is None:
        raise ValueError("this model has no unembedding, so there is no logit lens")
    return stream


def _unembed(run: PromptRun, vectors: Tensor) -> Tensor:
    """Logits ``[M, V]`` of residual vectors ``[M, D]`` through the final norm and head."""
    param = next(run.model.parameters())
    with torch.no_grad():
        return run.model.unembed_residual(vectors.to(param.device, param.dtype))


def _chunked_unembed(run: PromptRun, vectors: Tensor, summarise) -> list:
    """``summarise(logits [m, V], start)`` over chunks of ``vectors`` ``[M, D]``."""
    vocab = run.model.cfg.d_vocab
    chunk = max(1, LOGITS_CHUNK_BYTES // (4 * vocab))
    return [summarise(_unembed(run, vectors[s:s + chunk]), s)
            for s in range(0, vectors.shape[0], chunk)]


def _window(stream: ResidualStream, rows: Sequence[Row], positions: Sequence[int]) -> Tensor:
    index = torch.as_tensor(list(positions), dtype=torch.long)
    return torch.stack([stream.residual(row)[index] for row in rows])  # [R, C, D]


def lens(run: PromptRun, rows: Sequence[Row], positions: Sequence[int], k: int = 5
         ) -> LensSummary:
    """The logit lens at ``rows`` x ``positions``: top-k ``[R, C, k]``, entropy and KL to
    the model's final distribution ``[R, C]``."""
    stream = _require_lens(run)
    rows, positions = tuple(rows), tuple(positions)

    def compute() -> LensSummary:
        final = torch.cat(_chunked_unembed(
            run, _window(stream, [Row(stream.n_layers - 1)], positions)[0],
            lambda logits, _: torch.log_softmax(logits.float(), -1)))  # [C, V]
        window = _window(stream, rows, positions)  # [R, C, D]
        n_rows, n_pos = window.shape[:2]
        flat = window.reshape(n_rows * n_pos, -1)
        parts = _chunked_unembed(run, flat, lambda logits, s: summarise_logits(
            logits[None], k, final[torch.arange(s, s + logits.shape[0]) % n_pos]))
        joined = LensSummary.concat(parts, dim=1)
        return LensSummary(*(None if t is None else t.reshape(n_rows, n_pos, *t.shape[2:])
                             for t in (joined.top_ids, joined.top_probs, joined.entropy,
                                       joined.kl)))

    return run.derive(("lens", rows, positions, k), compute)


def token_trajectory(run: PromptRun, rows: Sequence[Row], positions: Sequence[int],
                     token_ids: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
    """Probability and rank ``[R, C]`` of ``token_ids[c]`` at ``positions[c]`` per row; a
    ``[R, C]`` tensor of ids names a token per cell instead (e.g. another run's lens top-1)."""
    stream = _require_lens(run)
    rows, positions = tuple(rows), tuple(positions)
    ids = torch.as_tensor(token_ids, dtype=torch.long)
    per_cell = ids.dim() == 2
    if per_cell and tuple(ids.shape) != (len(rows), len(positions)):
        raise ValueError(f"token ids {tuple(ids.shape)} do not match [rows, positions] = "
                         f"[{len(rows)}, {len(positions)}]")

    def compute() -> tuple[Tensor, Tensor]:
        window = _window(stream, rows, positions)  # [R, C, D]
        n_rows, n_pos = window.shape[:2]
        targets = ids.reshape(-1) if per_cell else ids
        n_targets = targets.shape[0]
        # All rows at once, in chunks: each chunk reads the unembedding matrix once (a row
        # at a time would read it R times: 0.5 s for SmolLM2's 31 rows, now 0.05 s).
        parts = _chunked_unembed(run, window.reshape(n_rows * n_pos, -1), lambda logits, s:
                                 token_prob_and_rank(logits[None], targets[
                                     torch.arange(s, s + logits.shape[0]) % n_targets]))
        prob = torch.cat([p[0] for p, _ in parts]).cpu().reshape(n_rows, n_pos)
        rank = torch.cat([r[0] for _, r in parts]).cpu().reshape(n_rows, n_pos)
        return prob, rank

    key = tuple(map(tuple, ids.tolist())) if per_cell else tuple(ids.tolist())
    return run.derive(("trajectory", rows, positions, key), compute)


def final_logprobs(run: PromptRun, position: int = -1) -> Tensor:
    """The model's output log-probabilities ``[V]`` at ``position`` of the lens stream (read
    off the run's last residual: no forward)."""
    stream = _require_lens(run)
    final = stream.boundaries[-1][[position]]  # [1, D]

    def compute() -> Tensor:
        return torch.log_softmax(_unembed(run, final).float()[0], -1).cpu()

    return run.derive(("final_logprobs", position % len(stream.tokens)), compute)


def next_token_loss(run: PromptRun) -> float | None:
    """Mean next-token loss (nats) of the lens stream's own tokens; None for an encoder
    (it does not predict the next token) or a one-token text."""
    stream = _require_lens(run)
    ids = stream.tokens.ids
    if run.kind == "encoder" or len(ids) < 2:
        return None

    def compute() -> float:
        targets = ids[1:].cpu()
        parts = _chunked_unembed(run, stream.boundaries[-1][:-1], lambda logits, s: (
            torch.log_softmax(logits.float(), -1).cpu().gather(
                -1, targets[s:s + logits.shape[0], None])[:, 0]))
        return float(-torch.cat(parts).mean())

    return run.derive(("next_token_loss",), compute)


@dataclass(frozen=True)
class Contributions:
    """A token's logit at one position split into ``labels`` parts (``values`` ``[P]``) and
    a ``constant`` (norm and unembedding biases); ``logit`` is the model's real logit."""

    labels: list[str]
    values: Tensor
    constant: float
    logit: float


def final_norm_of(run: PromptRun) -> FinalNorm:
    """The final norm of the lens stream's stack, as plain parameters."""
    module = run.module_of(_require_lens(run).name).final_norm
    if module is None:
        return FinalNorm(None)
    bias = getattr(module, "bias", None)
    return FinalNorm(run.model.cfg.norm, module.weight.detach(),
                     None if bias is None else bias.detach(), module.eps)


def contributions_unavailable(run: PromptRun) -> str | None:
    """Why direct logit attribution cannot be read off this model, or None."""
    if lens_stream(run) is None:
        return "the model has no unembedding to attribute a logit to"
    if not lens_stream(run).pre_norm:
        return ("every block of a post-norm model renormalises the sum it writes, so earlier "
                "layers do not reach the logits additively")
    if run.model.head.transform is not None:
        return "the masked-LM head's dense layer and activation are not linear"
    return None


def contributions(run: PromptRun, position: int, token_id: int) -> Contributions:
    """Direct logit attribution of ``token_id`` at ``position`` (pre-norm models)."""
    if (why := contributions_unavailable(run)) is not None:
        raise ValueError(f"no direct logit attribution: {why}")
    stream = _require_lens(run)

    def compute() -> Contributions:
        labels, parts = stream.components([position])  # [P, 1, D]
        final = stream.boundaries[-1][[position]].float()  # [1, D]
        head = run.model.head
        direction = head.unembed.weight[token_id].detach().float()[None]
        bias = head.unembed.bias
        bias = None if bias is None else bias[[token_id]].detach()
        shares, constant = direct_logit_attribution(
            parts, final, direction, final_norm_of(run), head.scale, bias)
        logit = float(_unembed(run, final)[0, token_id])
        return Contributions(labels, shares[:, 0].float().cpu(), float(constant[0]), logit)

    return run.derive(("contributions", stream.name, position, token_id), compute)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class StreamNorms:
    """Norms of the stream after each row ``resid [L + 1, N]`` and of what each sub-layer
    and MLP wrote ``written[name] [L, N]``; ``cosine [L, N]`` between consecutive rows."""

    resid: Tensor
    written: dict[str, Tensor]
    cosine: Tensor


def stream_norms(run: PromptRun, stream_name: str) -> StreamNorms:
    stream = run.streams[stream_name]

    def compute() -> StreamNorms:
        boundaries = stream.boundaries.float()
        written = {name: residual_norms(added) for name, added in stream.sublayers.items()}
        after = boundaries[:-1] + sum(a.float() for a in stream.sublayers.values())
        written["mlp"] = residual_norms(boundaries[1:] - after)
        return StreamNorms(residual_norms(boundaries).cpu(),
                           {k: v.cpu() for k, v in written.items()},
                           consecutive_cosine(boundaries).cpu())

    return run.derive(("norms", stream_name), compute)


def cosine_matrix(run: PromptRun, stream_name: str, row: Row) -> Tensor:
    """Token x token cosine similarity ``[N, N]`` at ``row``."""
    stream = run.streams[stream_name]
    return run.derive(("cosine", stream_name, row),
                      lambda: token_cosine(stream.residual(row)).cpu())


def pca_layers(run: PromptRun, stream_name: str, skip_first: bool = False) -> PCA2D:
    """2-D PCA of the tokens after every block (the embeddings first), axes aligned across
    layers; ``skip_first`` leaves out position 0 (the attention sink's huge norm)."""
    stream = run.streams[stream_name]

    def compute() -> PCA2D:
        rows = stream.boundaries.float()
        return aligned_pca(rows[:, 1:] if skip_first and rows.shape[1] > 1 else rows)

    return run.derive(("pca", stream_name, skip_first), compute)


# --------------------------------------------------------------------------- library


@dataclass(frozen=True)
class LogitLens:
    """``top_ids``/``top_probs`` ``[rows, seq, k]``; ``rows`` names each row."""

    top_ids: Tensor
    top_probs: Tensor
    rows: list[str]


def logit_lens(lm, ids: Tensor, k: int = 5, sublayers: bool = False,
               encoder_ids: Tensor | None = None) -> LogitLens:
    """The logit lens of ``ids`` ``[1, seq]`` (decoder ids for an encoder-decoder model,
    whose encoder reads ``encoder_ids``): rows after the embeddings and after each block
    (and after each attention sub-layer with ``sublayers``). Only the top-k is computed
    and kept per row."""
    def tokens(t: Tensor) -> Tokens:
        flat = t.reshape(-1).cpu()
        return Tokens(flat, [str(int(i)) for i in flat], torch.zeros(len(flat), dtype=bool))

    cfg = lm.config
    if cfg.kind == "encoder-decoder":
        if encoder_ids is None:
            raise ValueError("an encoder-decoder model needs encoder_ids")
        run = run_prompt(lm.model, cfg.kind, cfg.n_heads, tokens(encoder_ids), tokens(ids))
    else:
        run = run_prompt(lm.model, cfg.kind, cfg.n_heads, tokens(ids))
    stream = _require_lens(run)
    rows = stream.rows(sublayers)
    summary = lens(run, rows, range(len(stream.tokens)), k)
    return LogitLens(summary.top_ids, summary.top_probs, [row.label for row in rows])
