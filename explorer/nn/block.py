"""One transformer block: self-attention, optional cross-attention, feed-forward.

Each sub-layer is wrapped in a residual connection and a norm, either before it (pre-norm:
GPT-2, Llama, T5; Xiong et al. 2020) or after the sum (post-norm: the original Transformer
of Vaswani et al. 2017, BERT, and the tutorials' ``TransformerBlock``).

Captured names (relative to the block's prefix ``blocks.{i}.``): resid_pre, attn.*,
attn.out, resid_mid, [cross_attn.*, cross_attn.out, resid_cross,] mlp.*, mlp.out,
resid_post. Shapes: b batch, n positions, D d_model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from explorer.config import ModelConfig
from explorer.nn.attention import Attention
from explorer.nn.capture import Capture
from explorer.nn.kv_cache import LayerKV
from explorer.nn.mlp import build_mlp
from explorer.nn.norms import build_norm


class TransformerBlock(nn.Module):
    """ln1 + attn, [ln_cross + cross_attn,] ln2 + mlp, each with a residual connection."""

    def __init__(self, cfg: ModelConfig, cross: bool = False) -> None:
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.ln1 = build_norm(cfg)
        self.attn = Attention(cfg)
        self.ln_cross = build_norm(cfg) if cross else None
        self.cross_attn = Attention(cfg, cross=True) if cross else None
        self.ln2 = build_norm(cfg)
        self.mlp = build_mlp(cfg)

    def _residual(
        self, x: torch.Tensor, norm: nn.Module, sublayer: Callable[[torch.Tensor], torch.Tensor],
        edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sub-layer output, new residual) for pre-norm x + f(norm(x)) or post norm(x + f(x));
        ``edit`` may replace the output before it is added."""
        out = sublayer(norm(x) if self.pre_norm else x)
        if edit is not None:
            out = edit(out)
        return out, x + out if self.pre_norm else norm(x + out)

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, ...] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        kv: LayerKV | None = None,
        capture: Capture | None = None,
        prefix: str = "",
    ) -> torch.Tensor:
        """x [b, n, D] -> [b, n, D]; ``context`` [b, m, D] feeds the cross-attention."""
        if capture is None:
            through = None
        else:
            def through(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
                return lambda t: capture.through(prefix + name, t)
        if through:
            x = through("resid_pre")(x)
        _, x = self._residual(x, self.ln1, lambda h: self.attn(
            h, rope=rope, mask=mask, is_causal=is_causal, kv=kv,
            capture=capture, prefix=prefix + "attn.",
        ), through and through("attn.out"))
        if through:
            x = through("resid_mid")(x)
        if self.cross_attn is not None:
            _, x = self._residual(x, self.ln_cross, lambda h: self.cross_attn(
                h, context=context, mask=context_mask, kv=kv, capture=capture,
                prefix=prefix + "cross_attn.",
            ), through and through("cross_attn.out"))
            if through:
                x = through("resid_cross")(x)
        _, x = self._residual(
            x, self.ln2, lambda h: self.mlp(h, capture=capture, prefix=prefix + "mlp."),
            through and through("mlp.out"),
        )
        if through:
            x = through("resid_post")(x)
        return x

    def attention_input(self, resid_pre: torch.Tensor) -> torch.Tensor:
        """What the self-attention reads from the residual stream [b, n, D]."""
        return self.ln1(resid_pre) if self.pre_norm else resid_pre
