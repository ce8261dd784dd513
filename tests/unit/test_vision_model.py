"""explorer.nn.vision / clip: configs, shapes, capture names, interpolation and edits on
tiny seeded random models (parity with transformers is in tests/parity)."""

from __future__ import annotations

import pytest
import torch

from explorer.config import ModelConfig
from explorer.nn.model import build_model
from explorer.nn.vision import interpolate_positions

VIT = dict(d_model=16, n_heads=2, d_mlp=24, d_vocab=5, n_ctx=17, n_layers=2,
           kind="vision", image_size=16, patch_size=4, qkv_bias=True, out_bias=True)


def _vit(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**VIT, **changes})).eval()


def _clip_config() -> ModelConfig:
    text = ModelConfig(d_model=8, n_heads=2, d_mlp=16, d_vocab=30, n_ctx=10, n_layers=1,
                       has_unembed=False, activation="quick_gelu")
    return ModelConfig(**{**VIT, "kind": "vision-text", "has_unembed": False, "d_vocab": 1},
                       embed_norm=True, projection_dim=6, text=text, eos_token_id=29)


def test_vision_config_checks_the_patch_grid() -> None:
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ModelConfig(**{**VIT, "patch_size": 5})
    with pytest.raises(ValueError, match="class token plus 4x4"):
        ModelConfig(**{**VIT, "n_ctx": 16})
    with pytest.raises(ValueError, match="text tower"):
        ModelConfig(**{**VIT, "kind": "vision-text"})
    cfg = ModelConfig(**VIT)
    assert cfg.grid == 4 and cfg.is_vision and not cfg.causal


def test_clip_config_round_trips_through_a_dict() -> None:
    cfg = _clip_config()
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.text.activation == "quick_gelu"


def test_vit_capture_names_and_shapes() -> None:
    model = _vit()
    pixels = torch.randn(1, 3, 16, 16)
    logits, cache = model.run_with_cache(pixels)
    assert logits.shape == (1, 5)
    assert cache["embed"].shape == (1, 17, 16) and cache["pos_embed"].shape == (17, 16)
    pattern = cache["blocks.1.attn.pattern"]
    assert pattern.shape == (1, 2, 17, 17)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(1, 2, 17))
    # bidirectional: the class token's row reaches the last patch
    assert (pattern[0, :, 0, -1] > 0).all()


def test_interpolation_keeps_the_trained_grid_and_the_class_position() -> None:
    table = torch.randn(17, 8)
    assert interpolate_positions(table, (4, 4)) is table
    bigger = interpolate_positions(table, (6, 3))
    assert bigger.shape == (19, 8) and torch.equal(bigger[0], table[0])


def test_vit_reads_other_image_sizes_and_refuses_tiny_ones() -> None:
    model = _vit()
    _, cache = model.run_with_cache(torch.randn(1, 3, 24, 12), names=["blocks.0.attn.pattern"])
    assert cache["blocks.0.attn.pattern"].shape == (1, 2, 19, 19)  # 6 x 3 patches + class
    with pytest.raises(ValueError, match="smaller than one 4x4 patch"):
        model(torch.randn(1, 3, 3, 16))


def test_zeroing_every_head_removes_the_attention() -> None:
    """An edit of attn.z (every head zeroed) leaves only the output bias in attn.out."""
    model = _vit()
    pixels = torch.randn(1, 3, 16, 16)
    _, cache = model.run_with_cache(pixels, names=["blocks.0.attn.out"],
                                    edits={"blocks.0.attn.z": torch.zeros_like})
    bias = model.blocks[0].attn.o.bias
    torch.testing.assert_close(cache["blocks.0.attn.out"], bias.expand(1, 17, 16))


def test_clip_shapes_and_prefixes() -> None:
    torch.manual_seed(1)
    model = build_model(_clip_config()).eval()
    pixels = torch.randn(2, 3, 16, 16)
    ids = torch.tensor([[0, 5, 7, 29, 29], [0, 3, 29, 29, 29]])
    logits, cache = model.run_with_cache(pixels, ids)
    assert logits.shape == (2, 2)
    assert cache["vision.blocks.0.attn.pattern"].shape == (2, 2, 17, 17)
    text_pattern = cache["text.blocks.0.attn.pattern"]
    assert text_pattern.shape == (2, 2, 5, 5) and text_pattern[0, 0, 0, 1] == 0  # causal
    image, text = model.image_embeds(pixels), model.text_embeds(ids)
    torch.testing.assert_close(logits, model.similarity(image, text))
    cosine = torch.nn.functional.cosine_similarity(image[1], text[0], dim=0)
    torch.testing.assert_close(logits[1, 0], cosine * model.logit_scale.exp())


def test_stream_norms_of_an_image_run() -> None:
    from explorer.runs.image_run import run_image, stream_norms

    model = _vit()
    run = run_image(model, torch.randn(1, 3, 16, 16))
    norms = stream_norms(run)
    resid = run.resid
    torch.testing.assert_close(norms["class token"], resid[:, 0].norm(dim=-1))
    torch.testing.assert_close(norms["patches (max)"], resid[:, 1:].norm(dim=-1).amax(-1))
    assert (norms["patches (min)"] <= norms["patches (mean)"]).all()
