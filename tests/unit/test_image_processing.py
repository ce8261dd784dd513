"""explorer.models.image: preprocessing equals transformers' image processors (PIL backend)
on several images; untrusted files are refused with a message, before any decoding."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.models.image import ImageError, ImageProcessor, open_image


def _image(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(data.squeeze(-1) if channels == 1 else data, mode)


IMAGES = [(50, 70, "RGB"), (300, 200, "RGB"), (224, 224, "RGB"), (97, 31, "RGBA"),
          (64, 48, "L")]
VIT = {"do_resize": True, "size": {"height": 32, "width": 40}, "resample": 2,
       "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
       "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}
CLIP = {"do_resize": True, "size": {"shortest_edge": 48}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": 48, "width": 48}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}


@pytest.mark.parametrize(("family", "settings"), [("vit", VIT), ("clip", CLIP)])
@pytest.mark.parametrize(("width", "height", "mode"), IMAGES)
def test_matches_transformers(family, settings, width, height, mode) -> None:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    image = _image(width, height, seed=width + height, mode=mode)
    theirs_cls = CLIPImageProcessorPil if family == "clip" else ViTImageProcessorPil
    if mode != "RGB" and family == "vit":  # ViT's processor has no RGB conversion step
        image = image.convert("RGB")
    theirs = theirs_cls(**settings)(image, return_tensors="pt")["pixel_values"]
    ours = ImageProcessor.from_config(settings, image_size=48, family=family)(image)
    assert ours.shape == theirs.shape and ours.dtype == torch.float32
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_defaults_without_a_config() -> None:
    vit = ImageProcessor.from_config({}, image_size=224, family="vit")
    assert (vit.size, vit.crop, vit.mean) == ((224, 224), None, (0.5, 0.5, 0.5))
    clip = ImageProcessor.from_config({"size": 224, "crop_size": 224}, 224, "clip")
    assert (clip.shortest_edge, clip.crop) == (224, (224, 224))
    assert "shorter side resized to 224 (bicubic)" in clip.describe((640, 480))
    assert "centre 224 x 224 cropped" in clip.describe()


def test_small_image_is_padded_to_the_crop() -> None:
    processor = ImageProcessor.from_config({"do_resize": False, "do_center_crop": True,
                                            "crop_size": {"height": 8, "width": 8}}, 8, "clip")
    prepared = processor.prepare(_image(4, 6, seed=1))
    assert prepared.size == (8, 8)


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_open_image_accepts_the_three_formats(fmt: str) -> None:
    image = open_image(_png_bytes(_image(20, 10, seed=2), fmt))
    assert image.size == (20, 10) and image.mode == "RGB"


def test_open_image_composites_transparency_on_white() -> None:
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert open_image(_png_bytes(clear)).getpixel((0, 0)) == (255, 255, 255)


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels (a few hundred bytes on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * 16) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) \
        + chunk(b"IEND", b"")


@pytest.mark.parametrize(("data", "message"), [
    (b"not an image at all", "not a readable PNG, JPEG or WebP"),
    (_bomb_png(100_000, 100_000), "megapixels"),  # PIL's own bomb check fires
    (_bomb_png(8_000, 6_000), "8000 x 6000 pixels"),  # ours: 48 MP, under PIL's limit
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable"),
    (b"x" * (11 * 2**20), "MiB"),
])
def test_open_image_refuses_bad_files(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        open_image(data)


def test_open_image_refuses_other_formats() -> None:
    with pytest.raises(ImageError, match="GIF images are not accepted"):
        open_image(_png_bytes(_image(8, 8, seed=3), "GIF"))


def test_truncated_image_is_refused() -> None:
    data = _png_bytes(_image(64, 64, seed=4))
    with pytest.raises(ImageError, match="not a readable"):
        open_image(data[: len(data) // 2])
