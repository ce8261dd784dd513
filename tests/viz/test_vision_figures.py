"""explorer.viz.vision: the overlay covers the image exactly, labels are escaped, and a
ViT-B-sized figure stays far under the 2 MB a browser chart may take."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from explorer.viz.vision import (
    attention_overlay,
    patch_pca_chart,
    png_data_uri,
    probability_bars,
)

HOSTILE = "<img src=x onerror=alert(1)>"


def _photo(width: int = 224, height: int = 224) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_png_data_uri_round_trips() -> None:
    image = _photo(8, 6)
    data = base64.b64decode(png_data_uri(image).split(",", 1)[1])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(image))


def test_overlay_cells_cover_the_image() -> None:
    weights = np.arange(14 * 14, dtype=np.float32).reshape(14, 14) / 196
    fig = attention_overlay(_photo(), weights, HOSTILE, query=(2, 3))
    image, heatmap = fig.data
    assert (image.x0, image.y0) == (0.5, 0.5)  # pixel i centred on i + 0.5: [0, 224]
    assert heatmap.x[0] == 8 and heatmap.x[-1] == 216  # patch centres of 16 px patches
    assert list(heatmap.customdata[2, 3]) == [2, 3]
    rect = fig.layout.shapes[-1]
    assert (rect.x0, rect.x1, rect.y0, rect.y1) == (48, 64, 32, 48)
    assert fig.layout.title.text == "&lt;img src=x onerror=alert(1)&gt;"
    assert len(fig.to_json()) < 2 * 2**20


def test_overlay_refuses_a_flat_vector() -> None:
    with pytest.raises(ValueError, match="gh, gw"):
        attention_overlay(_photo(16, 16), np.ones(4))


def test_bars_escape_labels() -> None:
    fig = probability_bars(["cat", HOSTILE], np.array([0.25, 0.75]))
    assert list(fig.layout.yaxis.ticktext) == ["cat", "&lt;img src=x onerror=alert(1)&gt;"]
    with pytest.raises(ValueError, match="2 labels for 3 values"):
        probability_bars(["a", "b"], np.ones(3))


def test_patch_pca_chart_colours_by_row_and_column() -> None:
    coords = np.random.default_rng(1).normal(size=(6, 2))
    fig = patch_pca_chart(coords, (2, 3), np.array([0.4, 0.2]))
    by_row, by_col = fig.data
    assert list(by_row.marker.color) == [0, 0, 0, 1, 1, 1]
    assert list(by_col.marker.color) == [0, 1, 2, 0, 1, 2]
    assert "PC1 40% and PC2 20%" in fig.layout.title.subtitle.text
