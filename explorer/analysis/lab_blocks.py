"""The architecture lab's building blocks: feed-forward nonlinearities, pre- vs post-norm
residual paths, and recurrence vs self-attention.

- Feed-forward: one hidden unit of each `explorer.nn.mlp` type with unit weights, so its
  output is the activation itself: ReLU (Vaswani et al. 2017), GELU (Hendrycks & Gimpel
  2016; GPT-2, BERT), SiLU/Swish, and the gated units SwiGLU (Llama) and GeGLU (T5 v1.1),
  which multiply the activated gate by a second projection (Shazeer 2020).
- Norms: tiny stacks of `explorer.nn` blocks, pre-norm (x + f(norm(x)); GPT-2, Llama; Xiong
  et al. 2020) and post-norm (norm(x + f(x)); the original Transformer, BERT): the size of the
  residual stream after each block.
- Sequences (Vaswani et al. 2017, table 1): sequential steps, the longest path between two
  tokens and operations per layer of a recurrent layer, self-attention and local attention;
  and a timing of torch's RNN against `explorer.nn.Attention` over growing lengths.

These build tiny modules from configs (never a loaded model) and run them.
Shapes: N points, L layers, n positions, D d_model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from explorer.config import ModelConfig
from explorer.nn import build_model
from explorer.nn.attention import Attention
from explorer.nn.mlp import build_mlp

# --------------------------------------------------------------------------- feed-forward

# label -> (mlp type, activation); gated types read a gate x and a value u
UNITS = {
    "ReLU (original Transformer)": ("relu", "relu"),
    "GELU (GPT-2, BERT)": ("gelu", "gelu"),
    "SiLU / Swish": ("gelu", "silu"),
    "SwiGLU unit: SiLU(x) · u (Llama)": ("swiglu", "silu"),
    "GeGLU unit: GELU(x) · u (T5 v1.1)": ("geglu", "gelu_tanh"),
}


def unit_mlp(mlp: str, activation: str) -> nn.Module:
    """A one-hidden-unit feed-forward of type ``mlp`` whose weights are 1: a plain MLP reads
    x (d_model 1); a gated one reads (x, u) (d_model 2), gate = x and up = u."""
    gated = mlp in ("swiglu", "geglu")
    cfg = ModelConfig(d_model=2 if gated else 1, n_heads=1, d_mlp=1, d_vocab=1, n_ctx=1,
                      n_layers=0, mlp=mlp, activation=activation)
    module = build_mlp(cfg)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()
        if gated:
            module.gate.weight[0, 0] = 1.0  # gate reads x
            module.up.weight[0, 1] = 1.0  # up reads u
        else:
            module.up.weight.fill_(1.0)
        module.down.weight[0, 0] = 1.0
    return module


@torch.no_grad()
def ffn_curves(x: torch.Tensor, u: float = 1.0) -> dict[str, torch.Tensor]:
    """Each unit's output over inputs x [N] (gated units with the value u)."""
    curves = {}
    for label, (mlp, activation) in UNITS.items():
        module = unit_mlp(mlp, activation)
        if mlp in ("swiglu", "geglu"):
            inputs = torch.stack([x, torch.full_like(x, u)], dim=-1)  # [N, 2]
        else:
            inputs = x[:, None]
        curves[label] = module(inputs[None])[0, :, 0]
    return curves


# --------------------------------------------------------------------------- norms


@torch.no_grad()
def residual_norms(norm_position: str, n_layers: int = 12, d_model: int = 64, n: int = 16,
                   seed: int = 0) -> list[float]:
    """Mean size ||x|| of the residual stream after each block of a random ``n_layers``
    stack (LayerNorm, GELU MLP) built with ``norm_position`` "pre" or "post".

    Post-norm normalises the stream itself after every sub-layer, so it leaves each block
    with size sqrt(d_model) (unit weights at init); pre-norm only normalises what each
    sub-layer reads, and the stream, x + f(norm(x)) + g(...), keeps growing with depth.
    """
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=d_model, n_heads=4, d_mlp=4 * d_model, d_vocab=32, n_ctx=n,
                      n_layers=n_layers, norm_position=norm_position, positional="learned",
                      has_unembed=False)
    model = build_model(cfg).eval()
    ids = torch.randint(0, cfg.d_vocab, (1, n), generator=torch.Generator().manual_seed(seed))
    _, cache = model.run_with_cache(ids, names=["blocks.*.resid_post"])
    return [float(r.norm(dim=-1).mean()) for r in cache.stack("resid_post")]


# --------------------------------------------------------------------------- sequences


@dataclass(frozen=True)
class SequenceCost:
    """One layer type's row of Vaswani et al. 2017, table 1, for n tokens of width d."""

    layer: str
    sequential_steps: int  # operations that must run one after another
    max_path: int  # layers/steps a signal crosses from the first token to the last
    operations: int  # multiply-adds per layer (order of magnitude)


def sequence_costs(n: int, d: int, window: int) -> list[SequenceCost]:
    """Recurrent, self-attention and local-window (|i - j| <= window) layers on n tokens."""
    window = max(1, min(window, n))
    return [
        SequenceCost("recurrent (RNN)", n, n - 1, n * d * d),
        SequenceCost("self-attention", 1, 1 if n > 1 else 0, n * n * d),
        SequenceCost(f"local attention (window {window})", 1, math.ceil((n - 1) / window),
                     n * (2 * window + 1) * d),
    ]


@dataclass(frozen=True)
class LayerTimings:
    """Seconds per forward of one layer at each length (lengths cut when the budget ran out)."""

    lengths: list[int]
    rnn_s: list[float]
    attention_s: list[float]
    d_model: int
    complete: bool  # every requested length was measured


def _best_of(run: Callable[[], object], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def time_layers(lengths: Sequence[int], d_model: int = 128, n_heads: int = 4,
                budget_s: float = 8.0, repeats: int = 3,
                on_step: Callable[[int, int], None] | None = None) -> LayerTimings:
    """Time torch's ``nn.RNN`` (tanh, one layer: a loop over positions) and one
    `explorer.nn.Attention` (all positions at once) on [1, n, d_model] inputs, fastest of
    ``repeats`` runs. Lengths are measured in order until ``budget_s`` is spent (a length
    is started only if the previous one's time says it fits)."""
    torch.manual_seed(0)
    rnn = nn.RNN(d_model, d_model, batch_first=True)
    attention = Attention(ModelConfig(d_model=d_model, n_heads=n_heads, d_mlp=d_model,
                                      d_vocab=1, n_ctx=max(lengths), n_layers=1))
    start = time.perf_counter()
    done: list[int] = []
    rnn_s: list[float] = []
    attention_s: list[float] = []
    last_cost = 0.0
    for i, n in enumerate(lengths):
        elapsed = time.perf_counter() - start
        # a length costs about 2-4 times the previous one (linear and quadratic growth)
        if done and elapsed + 4 * last_cost > budget_s:
            break
        x = torch.randn(1, n, d_model)
        t0 = time.perf_counter()
        rnn_s.append(_best_of(lambda x=x: rnn(x), repeats))
        attention_s.append(_best_of(lambda x=x: attention(x, is_causal=True), repeats))
        last_cost = time.perf_counter() - t0
        done.append(n)
        if on_step is not None:
            on_step(i + 1, len(lengths))
    return LayerTimings(done, rnn_s, attention_s, d_model, len(done) == len(lengths))
