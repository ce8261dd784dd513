"""ViT and CLIP in our engine vs transformers' eager ``ViTForImageClassification`` and
``CLIPModel`` on tiny random checkpoints loaded through ``explorer.load``.

Logits and embeddings within 1e-5, every attention pattern within 1e-5, the residual
stream at every block boundary within 1e-5 (float32); also positions interpolated for
images of another size (transformers' ``interpolate_pos_encoding``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_vision import save_tiny_clip, save_tiny_vit

import explorer

TOL = 1e-5


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def _pixels(height: int, width: int, seed: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vit")
    ref = save_tiny_vit(directory)
    return ref, explorer.load(directory, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clip")
    ref = save_tiny_clip(directory)
    return ref, explorer.load(directory, device="cpu", dtype="float32")


def test_vit_config(vit) -> None:
    _, lm = vit
    cfg = lm.config
    assert (cfg.kind, cfg.family, cfg.grid, cfg.n_ctx, cfg.d_vocab) == ("vision", "vit", 4, 17, 7)
    assert cfg.is_vision and not cfg.causal and cfg.extra["labels"][3] == "class 3"
    assert lm.image_processor is not None and lm.tokenizer is None


@pytest.mark.parametrize("size", [(32, 32), (48, 48), (40, 24)])
def test_vit_parity(vit, size: tuple[int, int]) -> None:
    """Logits, patterns and residuals; other sizes interpolate the learned positions."""
    ref, lm = vit
    pixels = _pixels(*size, seed=sum(size))
    with torch.no_grad():
        out = ref(pixels, output_attentions=True, output_hidden_states=True,
                  interpolate_pos_encoding=size != (32, 32))
    logits, cache = lm.model.run_with_cache(pixels)
    assert _max_diff(logits, out.logits) <= TOL
    assert _max_diff(lm.model(pixels), out.logits) <= TOL  # fused (no-capture) path
    n = 1 + (size[0] // 8) * (size[1] // 8)
    assert cache["blocks.0.attn.pattern"].shape == (2, 4, n, n)
    assert _max_diff(cache.stack("attn.pattern"), torch.stack(out.attentions)) <= TOL
    for i in range(lm.config.n_layers):
        assert _max_diff(cache[f"blocks.{i}.resid_pre"], out.hidden_states[i]) <= TOL
        pattern = lm.model.layer_pattern(i, cache[f"blocks.{i}.resid_pre"])
        assert _max_diff(pattern, out.attentions[i]) <= TOL
    last = lm.config.n_layers
    assert _max_diff(cache[f"blocks.{last - 1}.resid_post"], out.hidden_states[last]) <= TOL
    # the logit lens of the last layer's class token is the classifier's output
    assert _max_diff(lm.model.unembed_residual(cache[f"blocks.{last - 1}.resid_post"][:, 0]),
                     out.logits) <= TOL


def test_clip_config(clip) -> None:
    _, lm = clip
    cfg = lm.config
    assert (cfg.kind, cfg.family, cfg.d_model, cfg.projection_dim) == ("vision-text", "clip",
                                                                         24, 16)
    assert cfg.embed_norm and not cfg.patch_bias and cfg.activation == "quick_gelu"
    assert cfg.text.kind == "decoder" and cfg.text.causal and cfg.text.d_model == 32
    assert cfg.eos_token_id == lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert lm.encode("a " * 14).shape == (1, 16)  # texts are held to the text tower's 16
    with pytest.raises(ValueError, match=r"17 tokens; .* reads at most 16"):
        lm.encode("a " * 15)


def test_clip_parity(clip) -> None:
    """Image and text embeddings, logits per image, both towers' patterns and residuals."""
    ref, lm = clip
    pixels = _pixels(32, 32, seed=5)
    captions = ["a photo of a cat", "a red car at night", "the big blue house"]
    rows = [lm.tokenizer.encode(c) for c in captions]
    n = max(map(len, rows))  # right-padded with the end-of-text token, as CLIP pads
    ids = torch.tensor([r + [lm.config.eos_token_id] * (n - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                  output_attentions=True, output_hidden_states=True)
        image_raw = ref.get_image_features(pixel_values=pixels).pooler_output
        text_raw = ref.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    logits, cache = lm.model.run_with_cache(pixels, ids, attention_mask=mask)
    assert _max_diff(logits, out.logits_per_image) <= TOL
    image = lm.model.image_embeds(pixels)
    text = lm.model.text_embeds(ids, mask)
    assert _max_diff(image, image_raw) <= TOL and _max_diff(text, text_raw) <= TOL
    assert _max_diff(F.normalize(image, dim=-1), out.image_embeds) <= TOL
    assert _max_diff(F.normalize(text, dim=-1), out.text_embeds) <= TOL
    vision, texts = out.vision_model_output, out.text_model_output
    assert _max_diff(cache.stack("attn.pattern", "vision."), torch.stack(vision.attentions)) \
        <= TOL
    # padded keys: transformers' rows give them weight 0 too
    assert _max_diff(cache.stack("attn.pattern", "text."), torch.stack(texts.attentions)) <= TOL
    for i in range(lm.config.n_layers):
        assert _max_diff(cache[f"vision.blocks.{i}.resid_pre"], vision.hidden_states[i]) <= TOL
    for i in range(lm.config.text.n_layers):
        assert _max_diff(cache[f"text.blocks.{i}.resid_pre"], texts.hidden_states[i]) <= TOL
    assert _max_diff(cache["text.final_norm"], texts.last_hidden_state) <= TOL


def test_clip_image_only_run_captures_the_vision_tower(clip) -> None:
    ref, lm = clip
    pixels = _pixels(32, 32, seed=6, batch=1)
    embeds, cache = lm.model.run_with_cache(pixels, names=["vision.blocks.*.attn.pattern"])
    with torch.no_grad():
        theirs = ref.vision_model(pixels, output_attentions=True)
    assert sorted(cache) == ["vision.blocks.0.attn.pattern", "vision.blocks.1.attn.pattern"]
    assert _max_diff(cache.stack("attn.pattern", "vision."), torch.stack(theirs.attentions)) \
        <= TOL
    assert embeds.shape == (1, 16)


def test_clip_legacy_eos_reads_the_highest_id(clip) -> None:
    """Configs from before transformers #24773 (eos_token_id=2): the highest id's state."""
    _, lm = clip
    legacy = lm.model.cfg.replace(eos_token_id=None)
    ids = torch.tensor([[1, 40, 7, 2, 3]])
    from explorer.nn.clip import end_of_text_positions

    assert end_of_text_positions(ids, legacy.eos_token_id).tolist() == [1]
    assert end_of_text_positions(ids, 2).tolist() == [3]
    with pytest.raises(ValueError, match="end-of-text"):
        end_of_text_positions(ids, 9)
