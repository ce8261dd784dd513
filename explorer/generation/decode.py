"""Streaming autoregressive generation on our own model with a preallocated KV cache.

The prompt runs once (the prefill), then each step feeds only the newest token: its keys and
values are appended to the cache so the prefix is never recomputed (the incremental
decoding of Vaswani et al. 2017, Sec. 3.2; Pope et al. 2022 on why one step is bound by
reading the weights). Every step yields a `GenerationStep` with what the model considered
(top candidates, entropy) and, on request, where it looked (the attention of the query that
produced the token over the whole context, every layer and head). An encoder-decoder (T5)
runs its encoder over the prompt once and generates from its decoder the same way; the
attention it reports is the decoder's cross-attention over the prompt.

Shapes: n prompt positions, V d_vocab, L n_layers, h n_heads, m context positions.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from explorer.generation.fast_step import FastDecoder
from explorer.generation.sampling import (
    SamplingParams,
    choose_token,
    entropy,
    sampling_distribution,
)
from explorer.generation.text import IncrementalDetokenizer, end_token_ids, token_text
from explorer.nn.capture import Capture, Edit
from explorer.nn.kv_cache import KVCache

PATTERN_SUFFIX = ".attn.pattern"
CROSS_PATTERN_SUFFIX = ".cross_attn.pattern"


@dataclass(frozen=True)
class GenerationStep:
    """One generated token and what the model saw when it chose it.

    ``text`` is the new text this token completes (incremental detokenisation: "" while a
    multi-byte character is still incomplete); ``token`` is the token decoded alone.
    ``prob``, ``top_ids``/``top_probs`` and ``entropy`` (nats) describe the distribution
    the token was drawn from (the model's softmax when greedy, after temperature/top-k/top-p
    otherwise). ``finished`` is None, or why generation ends here: "eos", "max_new_tokens"
    or "context". ``elapsed`` counts seconds from the call; ``ttft`` is the first step's.
    ``attention`` [L, h, m] (when asked) is the attention of the last fed position (the one
    whose output chose this token) over the m = ``position`` context positions; for an
    encoder-decoder, its decoder's cross-attention over the m prompt positions.
    """

    index: int
    token_id: int
    text: str
    token: str
    prob: float
    top_ids: list[int]
    top_probs: list[float]
    entropy: float
    finished: str | None
    elapsed: float
    ttft: float
    position: int
    prompt_cut: int = 0
    attention: torch.Tensor | None = field(default=None, repr=False)

    @property
    def tokens_per_s(self) -> float:
        """Decoding speed after the first token (tokens per second), 0 before it."""
        decode_time = self.elapsed - self.ttft
        return self.index / decode_time if self.index and decode_time > 0 else 0.0


@dataclass(frozen=True)
class PromptFit:
    """A prompt cut to fit the context with room for the generation."""

    ids: torch.Tensor  # [1, n] kept (rightmost) prompt tokens
    cut: int  # tokens removed from the left
    max_new_tokens: int  # bounded by the context
    context_bound: bool  # True when max_new_tokens was lowered to fit the context


def fit_prompt(
    ids: torch.Tensor | Iterable[int], n_ctx: int, max_new_tokens: int,
    shared_context: bool = True,
) -> PromptFit:
    """Bound ``max_new_tokens`` and keep the rightmost prompt tokens that fit.

    A decoder's prompt and generated tokens share ``n_ctx`` positions (the last token is
    never fed): max_new_tokens goes to [1, n_ctx - 1] and the prompt keeps n_ctx - max_new + 1
    tokens. With ``shared_context`` False (an encoder-decoder: the prompt is the encoder's,
    the output the decoder's) each side gets n_ctx positions.

    ids: [n] or [1, n]. Raises ValueError on an empty prompt.
    """
    ids = torch.as_tensor(ids if isinstance(ids, torch.Tensor) else list(ids), dtype=torch.long)
    ids = ids.reshape(1, -1)
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty: type some text to continue")
    if n_ctx < 2:
        raise ValueError(f"a context of {n_ctx} position(s) leaves no room to generate")
    if shared_context:
        max_new = max(1, min(int(max_new_tokens), n_ctx - 1))
        keep = n_ctx - max_new + 1
    else:
        max_new, keep = max(1, min(int(max_new_tokens), n_ctx)), n_ctx
    cut = max(0, ids.shape[1] - keep)
    return PromptFit(ids[:, cut:], cut, max_new, max_new < max_new_tokens)


def _pattern_names(name: str) -> bool:
    return name.endswith(PATTERN_SUFFIX)


@torch.inference_mode()
def _forward(
    model: torch.nn.Module,
    ids: torch.Tensor,
    cache: KVCache,
    capture_attention: bool,
    fast: FastDecoder | None = None,
    edits: Mapping[str, Edit] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Feed ids [1, n] through the cache -> (last logits [V] float32, attention [L, h, m]).

    A single token goes through the lean `FastDecoder` when the model has one (never with
    ``edits``: they take this general path, applied to every step's activations).
    """
    if fast is not None and ids.shape[1] == 1:
        if edits:
            raise ValueError("the fast decoder cannot apply edits")
        return fast.step(ids, capture_attention)
    capture = None
    if capture_attention or edits:
        capture = Capture(_pattern_names if capture_attention else (), edits)
    logits = model(ids, kv_cache=cache, last_only=True, capture=capture)[0, -1].float()
    if not capture_attention:
        return logits, None
    pattern = capture.cache.stack("attn.pattern")  # [L, 1, h, 1, m]
    return logits, pattern[:, 0, :, -1].float()


@torch.inference_mode()
def _describe(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    top_n: int,
) -> tuple[int, float, list[int], list[float], float]:
    """(token id, its probability, top ids, top probs, entropy) for logits [V]."""
    probs = sampling_distribution(logits, params)
    top = torch.topk(probs, min(max(top_n, 2), probs.shape[-1]))
    token_id = choose_token(logits, probs, params, generator, top)
    top_ids, top_probs = top.indices[:top_n].tolist(), top.values[:top_n].tolist()
    return (
        token_id, float(probs[token_id]), top_ids, top_probs, entropy(probs),
    )


class _DecoderRun:
    """A decoder: the prompt runs once through the cache, then one token per step (the lean
    `FastDecoder` step when the architecture has one). Attention is self-attention over the
    prompt and the tokens so far."""

    def __init__(self, model: torch.nn.Module, prompt: torch.Tensor, max_new: int,
                 capture_attention: bool, edits: Mapping[str, Edit] | None = None) -> None:
        weight = next(model.parameters())
        self.model, self.prompt, self.capture = model, prompt, capture_attention
        self.edits = dict(edits or {})
        self.cache = KVCache(model.cfg, prompt.shape[1] + max_new, device=weight.device,
                             dtype=weight.dtype)
        # The lean step has no activation points to edit: edited runs take the general path.
        self.fast = None if self.edits else FastDecoder.build(model, self.cache)
        self.context_ids = prompt[0].tolist()  # the text continues the prompt

    @property
    def position(self) -> int:
        return self.cache.length

    def start(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        prompt, edits = self.prompt, self.edits
        if self.capture and prompt.shape[1] > 1:  # the last prompt token runs as a cached,
            _forward(self.model, prompt[:, :-1], self.cache, False, edits=edits)  # captured step
            return _forward(self.model, prompt[:, -1:], self.cache, True, self.fast, edits)
        return _forward(self.model, prompt, self.cache, self.capture, self.fast, edits)

    def step(self, token_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = torch.tensor([[token_id]], device=self.prompt.device)
        return _forward(self.model, ids, self.cache, self.capture, self.fast, self.edits)


def _cross_pattern_names(name: str) -> bool:
    return name.startswith("decoder.") and name.endswith(CROSS_PATTERN_SUFFIX)


class _Seq2SeqRun:
    """An encoder-decoder (T5): the prompt runs once through the encoder; the decoder starts
    from its start token, keeps its own self-attention cache and reads the encoder output
    through cross-attention (Vaswani et al. 2017, Sec. 3.2.3). Attention is that
    cross-attention over the prompt: which input tokens each output token was read from."""

    @torch.inference_mode()
    def __init__(self, model: torch.nn.Module, prompt: torch.Tensor, max_new: int,
                 capture_attention: bool, edits: Mapping[str, Edit] | None = None) -> None:
        cfg = model.cfg
        weight = next(model.parameters())
        self.model, self.capture = model, capture_attention
        edits = dict(edits or {})
        unknown = [n for n in edits if not n.startswith(("encoder.", "decoder."))]
        if unknown:
            raise ValueError(f"an encoder-decoder's edits start with encoder. or decoder.: "
                             f"{unknown}")
        encoder_edits = {n: f for n, f in edits.items() if n.startswith("encoder.")}
        self.decoder_edits = {n: f for n, f in edits.items() if n.startswith("decoder.")}
        capture = Capture(names=(), edits=encoder_edits) if encoder_edits else None
        self.memory = model.encode(prompt, capture=capture)  # [1, n, D]
        if capture is not None:
            capture.check_applied()
        self.cache = KVCache(cfg.replace(n_layers=cfg.n_decoder_layers), max_new + 1,
                             device=weight.device, dtype=weight.dtype)
        self.start_id = cfg.decoder_start_token_id
        self.context_ids: list[int] = []  # the output is new text, not a continuation

    @property
    def position(self) -> int:
        return self.cache.length

    def start(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.step(self.start_id)

    @torch.inference_mode()
    def step(self, token_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = torch.tensor([[token_id]], device=self.memory.device)
        capture = None
        if self.capture or self.decoder_edits:
            capture = Capture(_cross_pattern_names if self.capture else (), self.decoder_edits)
        logits = self.model.decode(ids, self.memory, capture=capture, kv_cache=self.cache)
        logits = logits[0, -1].float()
        if capture is not None:
            capture.check_applied()
        if not self.capture:
            return logits, None
        pattern = capture.cache.stack(CROSS_PATTERN_SUFFIX.lstrip("."), prefix="decoder.")
        return logits, pattern[:, 0, :, -1].float()  # [L, h, n]


def generate(
    lm: Any,
    ids: torch.Tensor | Iterable[int],
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: Iterable[int] | None = None,
    capture_attention: bool = False,
    top_n: int = 10,
    edits: Mapping[str, Edit] | None = None,
) -> Iterator[GenerationStep]:
    """Stream tokens that ``lm.model`` generates from ``ids`` ([1, n] or [n]): a decoder
    continues them; an encoder-decoder (T5) reads them with its encoder and writes new text
    from its decoder start token (its attention rows are then cross-attention over ``ids``).

    ``temperature`` 0 is greedy; otherwise tokens are drawn after temperature, top-k and
    top-p with a generator seeded by ``seed`` (None: a fresh random seed). Stops after an
    end token (``stop_ids``, default: the tokenizer's eos and end-of-turn tokens) or
    ``max_new_tokens`` (bounded by the context; a too-long prompt is cut from the left and
    each step reports the cut). The shared model is only read: each call owns its cache.
    ``edits`` (`explorer.nn.capture`) replace named activations at every step, the prompt's
    included; such a run takes the general (not the fast) decoding path.
    """
    start = time.perf_counter()
    model, tokenizer = lm.model, lm.tokenizer
    cfg = model.cfg
    runs = {"decoder": _DecoderRun, "encoder-decoder": _Seq2SeqRun}
    if cfg.kind not in runs:
        raise ValueError(f"generation needs a decoder or an encoder-decoder model; {cfg.name} is "
                         f"an {cfg.kind}")
    params = SamplingParams(temperature, top_k, top_p)
    top_n = max(1, int(top_n))
    fit = fit_prompt(ids, cfg.n_ctx, max_new_tokens, shared_context=cfg.kind == "decoder")
    weight = next(model.parameters())
    prompt = fit.ids.to(weight.device)
    stops = end_token_ids(tokenizer) if stop_ids is None else frozenset(int(i) for i in stop_ids)
    generator = None
    if not params.greedy:
        generator = torch.Generator(device=weight.device)
        generator.manual_seed(seed) if seed is not None else generator.seed()

    run = runs[cfg.kind](model, prompt, fit.max_new_tokens, capture_attention, edits)
    logits, attention = run.start()
    detok = IncrementalDetokenizer(tokenizer, run.context_ids)
    ttft = None
    for index in range(fit.max_new_tokens):
        token_id, prob, top_ids, top_probs, ent = _describe(logits, params, generator, top_n)
        if token_id in stops:
            finished = "eos"
        elif index == fit.max_new_tokens - 1:
            finished = "context" if fit.context_bound else "max_new_tokens"
        else:
            finished = None
        text = detok.push(token_id)
        if finished is not None:
            text += detok.flush()
        elapsed = time.perf_counter() - start
        ttft = elapsed if ttft is None else ttft
        yield GenerationStep(
            index=index, token_id=token_id, text=text, token=token_text(tokenizer, token_id),
            prob=prob, top_ids=top_ids, top_probs=top_probs, entropy=ent, finished=finished,
            elapsed=elapsed, ttft=ttft, position=run.position, prompt_cut=fit.cut,
            attention=None if attention is None else attention.clone(),
        )
        if finished is not None:
            return
        logits, attention = run.step(token_id)
