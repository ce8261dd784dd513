"""Images in: opening untrusted files safely, and a checkpoint's own preprocessing.

`open_image` reads PNG, JPEG or WebP bytes with a byte cap and a pixel cap checked on the
header, before any pixel is decoded (a "decompression bomb" is a small file that decodes
to gigapixels), and turns every failure into one `ImageError` with a message a user can
act on.

`ImageProcessor` does what transformers' ``ViTImageProcessor`` / ``CLIPImageProcessor``
(their PIL backend) do, from the same ``preprocessor_config.json`` values: convert to RGB
(transparency composited onto white), resize (to a fixed height x width, or the shortest
edge to a length, aspect kept), centre crop, rescale to [0, 1], normalise by the mean and
standard deviation per channel. tests/unit/test_image_processing.py checks it against
transformers on several images. `ImageProcessor.describe` says in words what was done.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

FORMATS = ("PNG", "JPEG", "WEBP")
MAX_BYTES = 10 * 2**20  # 10 MiB per upload
MAX_PIXELS = 40_000_000  # width * height, checked on the header before decoding
RESAMPLE_NAMES = {0: "nearest", 1: "Lanczos", 2: "bilinear", 3: "bicubic", 4: "box",
                  5: "Hamming"}

# What transformers' processors default to when preprocessor_config.json is absent.
VIT_DEFAULTS = {"size": None, "resample": 2, "do_center_crop": False,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
CLIP_DEFAULTS = {"size": None, "resample": 3, "do_center_crop": True,
                 "image_mean": [0.48145466, 0.4578275, 0.40821073],
                 "image_std": [0.26862954, 0.26130258, 0.27577711]}


class ImageError(ValueError):
    """An image we refuse to read: too large, not an image, or a format we do not take."""


def open_image(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
               ) -> Image.Image:
    """A decoded RGB image from untrusted bytes, or ImageError saying why not."""
    if len(data) > max_bytes:
        raise ImageError(f"the file is {len(data) / 2**20:.1f} MiB; images of at most "
                         f"{max_bytes / 2**20:.0f} MiB are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            if image.format not in FORMATS:
                raise ImageError(f"{image.format or 'this'} images are not accepted; "
                                 f"upload a PNG, JPEG or WebP file")
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"the image is {width} x {height} pixels; at most "
                                 f"{max_pixels / 1e6:.0f} megapixels are accepted")
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"the image is too large to decode safely; at most "
                         f"{max_pixels / 1e6:.0f} megapixels are accepted") from exc
    except Exception as exc:  # UnidentifiedImageError, truncated data, codec errors
        raise ImageError("this file is not a readable PNG, JPEG or WebP image") from exc
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (as transformers does)."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _pair(size: dict | int | None, default: int) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = size or {}
    return int(size.get("height", default)), int(size.get("width", default))


@dataclass(frozen=True)
class ImageProcessor:
    """Resize, crop, rescale and normalise like the checkpoint's own image processor.

    ``size`` is (height, width) for a fixed resize; ``shortest_edge`` (when not None)
    resizes the shorter side to that length instead, keeping the aspect ratio.
    """

    size: tuple[int, int] | None
    shortest_edge: int | None
    resample: int
    crop: tuple[int, int] | None
    rescale_factor: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def from_config(cls, config: dict, image_size: int, family: str = "vit") -> ImageProcessor:
        """From preprocessor_config.json's values (defaults: the family's processor's)."""
        merged = {**(CLIP_DEFAULTS if family == "clip" else VIT_DEFAULTS), **config}
        size = merged.get("size")
        if size is None:
            size = image_size
        if isinstance(size, int):  # old configs: CLIP's int is the shortest edge
            size = {"shortest_edge": size} if family == "clip" else {"height": size,
                                                                      "width": size}
        resize = merged.get("do_resize", True)
        shortest = size.get("shortest_edge") if resize else None
        normalize = merged.get("do_normalize", True)
        return cls(
            size=_pair(size, image_size) if resize and not shortest else None,
            shortest_edge=int(shortest) if shortest else None,
            resample=int(merged.get("resample", 2)),
            crop=_pair(merged.get("crop_size"), image_size) if merged.get("do_center_crop")
            else None,
            rescale_factor=float(merged.get("rescale_factor", 1 / 255))
            if merged.get("do_rescale", True) else None,
            mean=tuple(merged["image_mean"]) if normalize else None,
            std=tuple(merged["image_std"]) if normalize else None,
        )

    @classmethod
    def from_directory(cls, directory: Path, image_size: int, family: str) -> ImageProcessor:
        path = Path(directory) / "preprocessor_config.json"
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return cls.from_config(config, image_size, family)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step."""
        if self.shortest_edge is not None:
            short, long = sorted((width, height))
            new_long = int(self.shortest_edge * long / short)
            return ((self.shortest_edge, new_long) if width <= height
                    else (new_long, self.shortest_edge))
        if self.size is not None:
            return self.size[1], self.size[0]
        return width, height

    def prepare(self, image: Image.Image) -> Image.Image:
        """The RGB image the model sees (resized and cropped, not yet normalised)."""
        image = to_rgb(image)
        target = self.resized_size(*image.size)
        if target != image.size:
            image = image.resize(target, resample=Image.Resampling(self.resample))
        if self.crop is not None:
            crop_h, crop_w = self.crop
            width, height = image.size
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
            if top < 0 or left < 0:  # smaller than the crop: pad with black, centred
                canvas = Image.new("RGB", (max(width, crop_w), max(height, crop_h)))
                canvas.paste(image, (max(-left, 0), max(-top, 0)))
                image, top, left = canvas, max(top, 0), max(left, 0)
            image = image.crop((left, top, left + crop_w, top + crop_h))
        return image

    def pixels(self, prepared: Image.Image) -> torch.Tensor:
        """A prepared RGB image -> pixel values [1, 3, H, W] float32."""
        x = torch.frombuffer(bytearray(prepared.tobytes()), dtype=torch.uint8)
        x = x.view(prepared.size[1], prepared.size[0], 3).permute(2, 0, 1).double()
        if self.rescale_factor is not None:
            x = (x * self.rescale_factor).float().double()
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32).double()[:, None, None]
            std = torch.tensor(self.std, dtype=torch.float32).double()[:, None, None]
            x = (x - mean) / std
        return x.float()[None]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """An image -> pixel values [1, 3, H, W] float32, as the checkpoint's processor."""
        return self.pixels(self.prepare(image))

    def describe(self, original: tuple[int, int] | None = None) -> str:
        """What is done to an image, in words (``original``: its (width, height))."""
        steps = []
        method = RESAMPLE_NAMES.get(self.resample, str(self.resample))
        if original is not None:
            steps.append(f"{original[0]} x {original[1]} pixels")
        if self.shortest_edge is not None:
            steps.append(f"shorter side resized to {self.shortest_edge} ({method})")
        elif self.size is not None:
            steps.append(f"resized to {self.size[1]} x {self.size[0]} ({method}, aspect "
                         "ratio not kept)")
        if self.crop is not None:
            steps.append(f"centre {self.crop[1]} x {self.crop[0]} cropped")
        if self.rescale_factor is not None:
            steps.append("scaled to [0, 1]")
        if self.mean is not None:
            mean = ", ".join(f"{m:.3g}" for m in self.mean)
            std = ", ".join(f"{s:.3g}" for s in self.std)
            steps.append(f"normalised per channel (mean {mean}; std {std})")
        return "; ".join(steps)
