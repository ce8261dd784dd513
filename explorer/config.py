"""`ModelConfig`: one frozen dataclass that describes every model the explorer can run.

The dimension vocabulary is the one used everywhere in the package (TransformerLens'
naming): ``d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab, n_ctx, n_layers``. The
architecture choices (positional scheme, norm, norm position, MLP type, model kind) are
plain strings checked against the registries that implement them, so adding a choice means
adding one registry entry, not another ``elif``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

POSITIONAL = ("sinusoidal", "learned", "rope", "alibi", "relative")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
MLPS = ("gelu", "relu", "swiglu", "geglu", "moe")
KINDS = ("encoder", "decoder", "encoder-decoder", "vision", "vision-text")
VISION_KINDS = ("vision", "vision-text")  # read pixels: ViT, and CLIP's image + text towers
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "quick_gelu")

# The activation each MLP type uses unless the checkpoint says otherwise.
DEFAULT_ACTIVATION = {
    "gelu": "gelu",
    "relu": "relu",
    "swiglu": "silu",
    "geglu": "gelu_tanh",
    "moe": "gelu",
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model; validated on construction.

    ``n_kv_heads`` and ``d_head`` default to ``n_heads`` and ``d_model // n_heads``.
    Encoder-decoder models use ``n_layers`` for the encoder and ``n_decoder_layers``
    (default ``n_layers``) for the decoder.
    """

    d_model: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    n_layers: int
    n_kv_heads: int | None = None
    d_head: int | None = None
    positional: str = "learned"
    norm: str = "layernorm"
    norm_position: str = "pre"
    mlp: str = "gelu"
    kind: str = "decoder"

    # Everything below has a sensible default.
    name: str = "custom"
    family: str = "custom"
    activation: str | None = None  # None: DEFAULT_ACTIVATION[mlp]
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    attn_scale: bool = True  # False for T5: scores are q.k, not q.k / sqrt(d_head)
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    norm_bias: bool = True  # LayerNorm has a bias; RMSNorm never does
    final_norm: bool | None = None  # None: pre-norm models have one, post-norm ones don't
    tied_embeddings: bool = False
    unembed_bias: bool = False
    unembed_scale: float = 1.0  # T5 scales the tied unembedding by d_model ** -0.5
    n_token_types: int = 0  # BERT: segment (token type) embeddings
    embed_norm: bool = False  # BERT: LayerNorm right after the embeddings
    mlm_head: bool = False  # BERT: dense + act + LayerNorm before the unembedding
    has_unembed: bool = True  # False: an encoder without an LM head returns final states
    relative_buckets: int = 32
    relative_max_distance: int = 128
    n_experts: int = 8
    experts_top_k: int = 2
    window: int | None = None  # local attention: each query sees keys within +-window
    n_decoder_layers: int | None = None
    decoder_start_token_id: int = 0
    # Vision models (kind "vision" / "vision-text"): square images of image_size pixels cut
    # into patch_size patches; n_ctx is then the class token plus (image_size/patch_size)^2.
    image_size: int = 0
    patch_size: int = 0
    n_channels: int = 3
    patch_bias: bool = True  # ViT's patch convolution has a bias, CLIP's has none
    # CLIP ("vision-text"): this config is the vision tower, ``text`` the text tower, both
    # projected to projection_dim; the text's embedding is read at its first eos_token_id
    # (None: at its highest token id, as the original CLIP vocabulary's end-of-text is).
    projection_dim: int = 0
    text: ModelConfig | None = None
    eos_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.d_head is None:
            if self.n_heads <= 0 or self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) "
                    "when d_head is not given"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        if self.activation is None and self.mlp in DEFAULT_ACTIVATION:
            object.__setattr__(self, "activation", DEFAULT_ACTIVATION[self.mlp])
        if self.final_norm is None:
            object.__setattr__(self, "final_norm", self.norm_position == "pre")
        if self.n_decoder_layers is None:
            object.__setattr__(self, "n_decoder_layers", self.n_layers)
        self._validate()

    def _validate(self) -> None:
        for name in ("d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab", "n_ctx"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_layers < 0 or self.n_decoder_layers < 0:
            raise ValueError("n_layers and n_decoder_layers must not be negative")
        choices = {
            "positional": POSITIONAL,
            "norm": NORMS,
            "norm_position": NORM_POSITIONS,
            "mlp": MLPS,
            "kind": KINDS,
            "activation": ACTIVATIONS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})"
            )
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"d_model ({self.d_model}) must be even for sinusoidal positions")
        if self.positional == "rope" and self.d_head % 2:
            raise ValueError(f"d_head ({self.d_head}) must be even for rotary positions")
        if self.mlp == "moe" and not 0 < self.experts_top_k <= self.n_experts:
            raise ValueError(
                f"experts_top_k ({self.experts_top_k}) must be in 1..n_experts ({self.n_experts})"
            )
        if self.window is not None and self.window < 0:
            raise ValueError(f"window must be >= 0, got {self.window}")
        if self.kind in VISION_KINDS:
            self._validate_vision()

    def _validate_vision(self) -> None:
        if self.patch_size <= 0 or self.image_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a positive multiple of "
                             f"patch_size ({self.patch_size}) for a vision model")
        if self.n_ctx != self.grid**2 + 1:
            raise ValueError(f"n_ctx ({self.n_ctx}) must be the class token plus "
                             f"{self.grid}x{self.grid} patches")
        if self.kind == "vision-text" and (self.text is None or self.projection_dim <= 0):
            raise ValueError("a vision-text model needs a text tower and a projection_dim")

    @property
    def grid(self) -> int:
        """Patches per side of the image the positions were trained on (vision models)."""
        return self.image_size // self.patch_size if self.patch_size else 0

    @property
    def is_vision(self) -> bool:
        """Whether the model reads images (its ``run_with_cache`` takes pixel values)."""
        return self.kind in VISION_KINDS

    @property
    def causal(self) -> bool:
        """Whether the (decoder) self-attention is causal."""
        return self.kind in ("decoder", "encoder-decoder")

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        if isinstance(fields.get("text"), dict):
            fields["text"] = cls.from_dict(fields["text"])
        return cls(**fields)
