"""From-scratch transformer building blocks and models (torch only, no streamlit)."""

from explorer.nn.attention import Attention, scaled_dot_product_attention
from explorer.nn.capture import ActivationCache, Capture
from explorer.nn.kv_cache import KVCache
from explorer.nn.model import EncoderDecoderTransformer, Transformer, build_model

__all__ = [
    "ActivationCache",
    "Attention",
    "Capture",
    "EncoderDecoderTransformer",
    "KVCache",
    "Transformer",
    "build_model",
    "scaled_dot_product_attention",
]
