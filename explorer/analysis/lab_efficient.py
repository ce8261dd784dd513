"""The architecture lab's efficient variants: a mixture of experts' routing and its balancing
loss, and LoRA's parameter count and a live fine-tuning run.

- Mixture of experts (Shazeer et al. 2017; the tutorials' ``SparseMoE``): a router sends
  every token to its top-k experts (`explorer.nn.mlp.SparseMoE.route`). The Switch
  Transformer's auxiliary loss (Fedus et al. 2021, eq. 4) is
  ``alpha · E · sum_i f_i · P_i``, f_i the share of routing slots expert i received and P_i
  its mean router probability: 1 (times alpha) when the load is even, up to E when one
  expert takes everything. With top-k routing every token fills k slots.
- LoRA (Hu et al. 2021; `explorer.nn.lora.LoRALinear`): a frozen d_out x d_in weight plus a
  trainable B A of rank r trains r · (d_in + d_out) parameters instead of d_in · d_out. The
  live run adapts a tiny random `explorer.nn` decoder to a toy task (count on: after token t
  comes t + 1) and records the loss per step.

Shapes: n tokens, D d_model, E experts, k experts per token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from explorer.config import ModelConfig
from explorer.nn import build_model
from explorer.nn.lora import LoRALinear
from explorer.nn.mlp import SparseMoE, build_mlp

# --------------------------------------------------------------------------- mixture of experts


def lab_moe(d_model: int, n_experts: int, top_k: int, seed: int = 0, d_mlp: int = 64
            ) -> SparseMoE:
    """A randomly initialised `SparseMoE` layer built from a config."""
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=d_model, n_heads=1, d_mlp=d_mlp, d_vocab=1, n_ctx=1, n_layers=0,
                      mlp="moe", n_experts=n_experts, experts_top_k=top_k)
    return build_mlp(cfg).eval()


def own_embeddings(ids: torch.Tensor, d_model: int, seed: int = 0) -> torch.Tensor:
    """[n, d_model] vectors for token ids [n] from a random N(0, 1) table of the MoE's own:
    one row per distinct id, so equal tokens get equal vectors (an embedding lookup without
    a vocabulary-sized table)."""
    distinct, inverse = ids.unique(return_inverse=True)
    table = torch.randn(len(distinct), d_model, generator=torch.Generator().manual_seed(seed))
    return table[inverse]


def switch_aux_loss(probs: torch.Tensor, experts: torch.Tensor, n_experts: int,
                    alpha: float = 1.0) -> float:
    """alpha · E · sum_i f_i · P_i for router probabilities [n, E] and chosen experts [n, k]."""
    load = torch.bincount(experts.flatten(), minlength=n_experts).double() / experts.numel()
    return float(alpha * n_experts * (load * probs.double().mean(0)).sum())


@dataclass(frozen=True)
class Routing:
    """Where a router sent each token, and how even the load is."""

    probs: torch.Tensor  # [n, E] router probabilities
    experts: torch.Tensor  # [n, k] chosen experts, best first
    assignment: torch.Tensor  # [n, E] each chosen expert's mixing weight, 0 elsewhere
    load: torch.Tensor  # [E] share of the n · k routing slots
    mean_prob: torch.Tensor  # [E] mean router probability
    aux_loss: float  # Switch balancing loss (alpha = 1)


@torch.no_grad()
def route_tokens(moe: SparseMoE, x: torch.Tensor) -> Routing:
    """Route x [n, D] through ``moe``'s own router."""
    probs, experts, weights = moe.route(x)
    n_experts = probs.shape[-1]
    assignment = torch.zeros_like(probs).scatter_(-1, experts, weights)
    load = torch.bincount(experts.flatten(), minlength=n_experts).float() / experts.numel()
    return Routing(probs, experts, assignment, load, probs.mean(0),
                   switch_aux_loss(probs, experts, n_experts))


# --------------------------------------------------------------------------- LoRA counts

PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")
_PROJECTION_NAME = re.compile(r"(^|\.)blocks\.\d+\.(attn|cross_attn|mlp)\.(\w+)$")


def projection_linears(model: nn.Module, which: Sequence[str]) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` s inside the blocks whose last name is in ``which`` (q, k, v, o of
    the attentions, gate, up, down of the feed-forward; experts' MLPs are left out)."""
    found = {}
    for name, module in model.named_modules():
        match = _PROJECTION_NAME.search(name)
        if match and match.group(3) in which and isinstance(module, nn.Linear):
            found[name] = module
    return found


@dataclass(frozen=True)
class LoRACount:
    """Trainable parameters of LoRA of rank r on some projections vs fine-tuning them fully."""

    per_projection: dict[str, tuple[int, int, int]]  # kind -> (matrices, full, lora)
    full: int  # weights (and biases) of the chosen projections
    lora: int  # r · (d_in + d_out) summed over them

    def share_of(self, total: int) -> float:
        return self.lora / total if total else 0.0


def lora_count(model: nn.Module, which: Sequence[str], rank: int) -> LoRACount:
    """What LoRA of ``rank`` on the projections ``which`` of ``model`` trains."""
    per: dict[str, list[int]] = {}
    for name, linear in projection_linears(model, which).items():
        kind = name.rsplit(".", 1)[-1]
        row = per.setdefault(kind, [0, 0, 0])
        row[0] += 1
        row[1] += sum(p.numel() for p in linear.parameters())
        row[2] += rank * (linear.in_features + linear.out_features)
    ordered = {kind: tuple(per[kind]) for kind in PROJECTIONS if kind in per}
    return LoRACount(ordered, sum(r[1] for r in ordered.values()),
                     sum(r[2] for r in ordered.values()))


def add_lora(model: nn.Module, which: Sequence[str], rank: int, alpha: float) -> list[LoRALinear]:
    """Freeze ``model`` and wrap the chosen projections in `LoRALinear` (in place)."""
    model.requires_grad_(False)
    adapters = []
    for name, linear in projection_linears(model, which).items():
        parent_name, child = name.rsplit(".", 1)
        adapter = LoRALinear(linear, rank=rank, alpha=alpha)
        setattr(model.get_submodule(parent_name), child, adapter)
        adapters.append(adapter)
    return adapters


# --------------------------------------------------------------------------- LoRA live run


@dataclass(frozen=True)
class FineTuneRun:
    """Loss per step of fine-tuning a tiny model on the counting task."""

    losses: list[float]
    trainable: int
    total: int
    seconds: float


TOY = ModelConfig(d_model=32, n_heads=4, d_mlp=64, d_vocab=24, n_ctx=16, n_layers=2,
                  positional="learned", name="lab-tiny", family="lab")


def counting_batch(cfg: ModelConfig, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Sequences t, t + 1, t + 2, ... (mod d_vocab) from random starts: [batch, n_ctx]."""
    starts = torch.randint(0, cfg.d_vocab, (batch, 1), generator=generator)
    return (starts + torch.arange(cfg.n_ctx)) % cfg.d_vocab


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread for a while: a tiny model's many small matrix products are
    fastest without thread hand-offs, and on a busy CPU threads that wait for each other
    make them many times slower. Restores the previous count (process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fine_tune(rank: int | None, which: Sequence[str] = ("q", "v"), steps: int = 150,
              lr: float = 1e-2, alpha: float = 16.0, seed: int = 0, cfg: ModelConfig = TOY,
              on_step: Callable[[int, int, float], None] | None = None,
              budget_s: float | None = None) -> FineTuneRun:
    """Train a random ``cfg`` model to count: LoRA of ``rank`` on ``which`` (None: every
    parameter, full fine-tuning). Same seed, same model, same batches either way. With
    ``budget_s`` training stops early once that many seconds have passed."""
    torch.manual_seed(seed)
    model = build_model(cfg).train()
    if rank is not None:
        add_lora(model, which, rank, alpha)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=lr)
    generator = torch.Generator().manual_seed(seed + 1)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        ids = counting_batch(cfg, 16, generator)
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.d_vocab), ids[:, 1:].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, steps, losses[-1])
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return FineTuneRun(losses, sum(p.numel() for p in trainable),
                       sum(p.numel() for p in model.parameters()), time.perf_counter() - start)
