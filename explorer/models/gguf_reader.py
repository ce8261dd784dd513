"""Reading GGUF checkpoints (llama.cpp's format) into transformers-style config and tensors.

The ``gguf`` package parses the file and dequantises each tensor (Q4_1, Q8_0, ... ->
float32) exactly as transformers' GGUF loader does, so both start from the same numbers.
llama.cpp's converter permutes the rows of the Llama query and key projections (it pairs
rotary dimensions as interleaved (2i, 2i+1) rather than ``rotate_half``'s (i, i + d/2));
`unpermute_rotary_rows` undoes that with the same reshape as transformers
(``LlamaTensorProcessor._reverse_permute_weights``). The result is named like a transformers
Llama checkpoint, so the ordinary Llama converter takes it from there.

Shapes: rows of a projection are h heads x d_head; GGUF stores [out, in] like nn.Linear.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from explorer.models.converters import UnsupportedArchitecture
from explorer.models.converters.base import CheckpointError, Tensors

logger = logging.getLogger(__name__)

# architectures whose q/k rows llama.cpp permutes (transformers' TENSOR_PROCESSORS["llama"])
PERMUTED_ARCHITECTURES = {"llama"}
SUPPORTED_ARCHITECTURES = ("llama", "qwen2")

# GGUF tensor name (after "blk.{i}.") -> transformers Llama name (after "model.layers.{i}.")
BLOCK_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


def unpermute_rotary_rows(weights: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: [h*d, ...] rows (h, 2, d/2) -> (h, d/2, 2).

    Same operation as transformers' ``_reverse_permute_weights`` (weights [rows, cols] or
    a bias [rows]).
    """
    half = weights.shape[0] // n_heads // 2
    w = weights.reshape(n_heads, half, 2, *weights.shape[1:])
    return w.swapaxes(2, 1).reshape(weights.shape)


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    return value


def hf_config_from_gguf(reader, path: Path) -> dict:
    """A transformers-style Llama/Qwen2 config dict from the GGUF metadata."""
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitecture(
            f"GGUF architecture {arch!r} is not supported; supported GGUF architectures: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    names = {t.name for t in reader.tensors}
    n_heads = int(_field(reader, f"{arch}.attention.head_count"))
    d_model = int(_field(reader, f"{arch}.embedding_length"))
    vocab = _field(reader, f"{arch}.vocab_size")
    if vocab is None:
        vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    return {
        "model_type": arch,
        "_name_or_path": _field(reader, "general.name") or path.stem,
        "hidden_size": d_model,
        "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(_field(reader, f"{arch}.attention.head_count_kv", n_heads)),
        "head_dim": int(_field(reader, f"{arch}.attention.key_length", d_model // n_heads)),
        "num_hidden_layers": int(_field(reader, f"{arch}.block_count")),
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length", 2048)),
        "rms_norm_eps": float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "vocab_size": int(vocab),
        "tie_word_embeddings": "output.weight" not in names,
        "hidden_act": "silu",
    }


def _hf_name(gguf_name: str) -> str | None:
    stem, _, kind = gguf_name.rpartition(".")  # kind: weight | bias
    if stem.startswith("blk."):
        _, layer, part = stem.split(".", 2)
        mapped = BLOCK_TENSORS.get(part)
        return f"model.layers.{layer}.{mapped}.{kind}" if mapped else None
    mapped = TOP_TENSORS.get(stem)
    return f"{mapped}.{kind}" if mapped else None


def read_gguf(
    path: str | Path, progress: Callable[[float, str], None] | None = None
) -> tuple[dict, Tensors]:
    """(transformers-style config dict, float32 tensors with transformers Llama names)."""
    import gguf  # imported here: only GGUF sources need it

    path = Path(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the gguf package raises bare ValueErrors / struct errors
        raise CheckpointError(f"cannot read GGUF file {path}: {exc}") from exc
    hf = hf_config_from_gguf(reader, path)
    permute = hf["model_type"] in PERMUTED_ARCHITECTURES
    heads = {"attn_q": hf["num_attention_heads"], "attn_k": hf["num_key_value_heads"]}
    tensors: Tensors = {}
    total = len(reader.tensors)
    for index, tensor in enumerate(reader.tensors):
        name = _hf_name(tensor.name)
        if name is None:
            logger.info("ignoring GGUF tensor %s", tensor.name)
            continue
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        part = tensor.name.split(".")[-2]
        if permute and part in heads:
            weights = unpermute_rotary_rows(weights, heads[part])
        weights = np.ascontiguousarray(weights, dtype=np.float32)
        if not weights.flags.writeable:  # an unquantised tensor is a view of the mapped file
            weights = weights.copy()
        tensors[name] = torch.from_numpy(weights)
        if progress is not None and index % 16 == 0:
            progress(index / total, f"dequantising {tensor.name}")
    return hf, tensors


def tokenizer_from_gguf(path: str | Path):
    """A transformers fast tokenizer built from the GGUF's vocabulary, as transformers does."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        convert_gguf_tokenizer,
        get_gguf_tokenizer,
    )

    architecture, tokenizer_dict, tokenizer_config = get_gguf_tokenizer(str(path))
    backend, extra = convert_gguf_tokenizer(architecture, tokenizer_dict)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra)
