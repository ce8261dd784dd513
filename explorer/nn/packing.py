"""Projections that read the same input, stored as one matrix.

q, k and v multiply the same normalised residual, and so do a gated MLP's gate and up. When
their weights lie one after the other in memory, the rows of all of them form one matrix
[sum of outputs, D], and one matrix-vector product computes every projection at once: the
decode step (`explorer.generation.fast_step`) does one call instead of three, which matters
when a step is ~200 small matrix-vector products whose cost is partly per call.

The modules stay separate ``nn.Linear`` (the tutorials' structure, LoRA wrapping and the
state-dict names are unchanged); each keeps a view of its rows of the shared block. Moving
a model to another dtype or device gives every parameter its own storage again; `packed`
then says so (returns None) and `pack_model` packs it again.
"""

from __future__ import annotations

import torch
from torch import nn

from explorer.nn.attention import Attention
from explorer.nn.mlp import GatedMLP


def projection_groups(model: nn.Module) -> list[tuple[nn.Linear, ...]]:
    """Groups of plain linears that read one input: each self-attention's (q, k, v) and each
    gated MLP's (gate, up)."""
    groups = []
    for module in model.modules():
        names = None
        if isinstance(module, GatedMLP):
            names = ("gate", "up")
        elif isinstance(module, Attention) and not module.cross:
            names = ("q", "k", "v")
        if names is None:
            continue
        linears = tuple(getattr(module, n) for n in names)
        if all(type(lin) is nn.Linear for lin in linears):
            groups.append(linears)
    return groups


def _adjacent(tensors: list[torch.Tensor]) -> bool:
    """True when the tensors are contiguous and each starts where the previous one ends."""
    first = tensors[0]
    offset = first.storage_offset()
    for t in tensors:
        if (not t.is_contiguous() or t.dtype != first.dtype or t.device != first.device
                or t.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
                or t.storage_offset() != offset):
            return False
        offset += t.numel()
    return True


def _rows(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One view over adjacent tensors, stacked along their first dimension."""
    first = tensors[0]
    rows = sum(t.shape[0] for t in tensors)
    return first.as_strided((rows, *first.shape[1:]), first.stride())


def packed(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight [sum of outputs, in], bias [sum of outputs] or None) as views over the
    linears' own parameters when they are packed, else None."""
    weights = [lin.weight for lin in linears]
    if not _adjacent(weights):
        return None
    biases = [lin.bias for lin in linears]
    if all(b is None for b in biases):
        return _rows(weights), None
    if any(b is None for b in biases) or not _adjacent(biases):
        return None
    return _rows(weights), _rows(biases)


def pack(*linears: nn.Linear) -> None:
    """Copy the linears' weights (and biases) into one block and point each at its rows.

    Meta-device (not yet loaded) weights are left alone: the loader packs after assigning
    the real ones, and ``torch.cat`` on meta tensors imports torch's compiler (~1.5 s).
    """
    if any(lin.weight.is_meta for lin in linears) or packed(*linears) is not None:
        return
    names = ["weight"] + (["bias"] if all(lin.bias is not None for lin in linears) else [])
    for name in names:
        block = torch.cat([getattr(lin, name).detach() for lin in linears])
        start = 0
        for lin in linears:
            old = getattr(lin, name)
            rows = old.shape[0]
            setattr(lin, name, nn.Parameter(block[start:start + rows],
                                            requires_grad=old.requires_grad))
            start += rows


def pack_model(model: nn.Module) -> nn.Module:
    """Pack every projection group of ``model`` in place (see module docstring)."""
    for group in projection_groups(model):
        pack(*group)
    return model
