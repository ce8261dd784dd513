"""Tiny random ViT and CLIP checkpoints (no download), saved as transformers would save them.

Each builder makes a transformers model from a tiny config, re-draws its parameters with a
fixed seed (biases and norm weights away from their 0/1 init, so a wrong mapping shows),
saves it with ``save_pretrained`` plus a ``preprocessor_config.json`` (and, for CLIP, a
word-level ``tokenizer.json`` whose texts end with ``<|endoftext|>``), and returns
transformers' own eager reload as the reference. Used by the parity, app and e2e tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CLIP_WORDS = ("a", "photo", "of", "the", "cat", "dog", "car", "red", "blue", "green", "small",
              "big", "tree", "house", "person", "picture", "drawing", "night", "day")
CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>", "[UNK]")  # eos 1, not legacy 2


def randomize(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("logit_scale"):
                p.copy_(torch.tensor(2.0))
            else:
                p.copy_(0.15 * noise)


def _save(model_cls, config, directory: Path, seed: int, processor: dict):
    torch.manual_seed(seed)
    model = model_cls(config)
    randomize(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "preprocessor_config.json").write_text(json.dumps(processor))
    ref = model_cls.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32)
    return ref.eval()


def save_tiny_vit(directory: Path, seed: int = 21, image_size: int = 32, patch_size: int = 8,
                  n_classes: int = 7):
    """A ViTForImageClassification (4 x 4 patches, 2 layers, 4 heads) in ``directory``;
    its processor resizes to image_size x image_size (bilinear) with mean = std = 0.5."""
    from transformers import ViTConfig, ViTForImageClassification

    labels = {i: f"class {i}" for i in range(n_classes)}
    config = ViTConfig(hidden_size=32, num_attention_heads=4, intermediate_size=48,
                       num_hidden_layers=2, image_size=image_size, patch_size=patch_size,
                       id2label=labels, label2id={v: k for k, v in labels.items()})
    processor = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                 "size": {"height": image_size, "width": image_size}, "resample": 2,
                 "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    return _save(ViTForImageClassification, config, directory, seed, processor)


def _clip_tokenizer(directory: Path) -> dict[str, int]:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {w: i for i, w in enumerate(CLIP_SPECIALS + tuple(CLIP_WORDS))}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", vocab["<|startoftext|>"]),
                        ("<|endoftext|>", vocab["<|endoftext|>"])])
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "[UNK]",
        "pad_token": "<|endoftext|>", "model_max_length": 16}))
    return vocab


def save_tiny_clip(directory: Path, seed: int = 22, image_size: int = 32, patch_size: int = 8):
    """A CLIPModel (vision 24-wide, text 32-wide, projection 16) with a word-level tokenizer;
    its processor resizes the shorter side to image_size (bicubic) and centre crops."""
    from transformers import CLIPConfig, CLIPModel

    directory.mkdir(parents=True, exist_ok=True)
    vocab = _clip_tokenizer(directory)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48,
                     "num_hidden_layers": 2, "vocab_size": 64, "max_position_embeddings": 16,
                     "eos_token_id": vocab["<|endoftext|>"],
                     "bos_token_id": vocab["<|startoftext|>"], "pad_token_id": 1},
        vision_config={"hidden_size": 24, "num_attention_heads": 2, "intermediate_size": 40,
                       "num_hidden_layers": 2, "image_size": image_size,
                       "patch_size": patch_size},
        projection_dim=16)
    processor = {"image_processor_type": "CLIPImageProcessor", "do_resize": True,
                 "size": {"shortest_edge": image_size}, "resample": 3,
                 "do_center_crop": True, "crop_size": {"height": image_size,
                                                       "width": image_size},
                 "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "do_convert_rgb": True,
                 "image_mean": [0.48145466, 0.4578275, 0.40821073],
                 "image_std": [0.26862954, 0.26130258, 0.27577711]}
    return _save(CLIPModel, config, directory, seed, processor)
