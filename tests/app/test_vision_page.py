"""Image attention page (AppTest) with a tiny random ViT and CLIP loaded from local
directories: drawn samples and uploads give the overlay, rollout and classes; bad files are
refused with a message; hostile captions are shown literally; text pages say what to do
with a vision model, and the image page with a text model."""

from __future__ import annotations

import base64
import io
import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from app_helpers import model_in_store
from PIL import Image
from tiny_vision import save_tiny_clip, save_tiny_vit

import explorer
from explorer.config import ModelConfig
from explorer.runs.image_run import class_rollout, run_image
from explorer.ui.widgets import escape_markdown

PAGE = "app_pages/vision.py"
HOSTILE = "<img src=x onerror=alert(1)>"
MARKDOWN = "**bold** $x$ مرحبا\u200b"


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    vit, clip = tmp_path_factory.mktemp("vit"), tmp_path_factory.mktemp("clip")
    save_tiny_vit(vit)
    save_tiny_clip(clip)
    return {"vit": vit, "clip": clip}


@contextmanager
def loaded(at, directory):
    """The model in ``directory`` loaded by explorer.load and selected for ``at``."""
    from explorer.ui.resources import ModelKey, model_store

    key = ModelKey(str(directory), "cpu", "float32", local=True)
    model_store().put(key, explorer.load(directory, device="cpu", dtype="float32"))
    at.session_state["model_key"] = key
    at.session_state["first_load_done"] = True
    try:
        yield model_store().get(key)
    finally:
        model_store().discard(key)


def open_page(at, page: str = PAGE):
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def array(value) -> torch.Tensor:
    """A plotly JSON array: a list, or a typed array {"dtype", "bdata", "shape"}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return torch.from_numpy(flat.copy()).reshape(shape)
    return torch.tensor(value)


def png(size=(40, 30), colour=(200, 30, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_vit_sample_shows_overlay_rollout_and_classes(app, tiny_dirs) -> None:
    with loaded(app, tiny_dirs["vit"]) as lm:
        open_page(app)
        titles = [f["layout"]["title"]["text"] for f in figures(app)]
        assert "Layer 1, mean of heads" in titles
        assert "Attention rollout to layer 1" in titles
        assert "Top classes" in titles and "Logit lens of the class token" in titles
        overlay = figures(app)[titles.index("Attention rollout to layer 1")]
        # the rollout drawn is the class token's rollout of this image's run
        from explorer.ui.vision import sample_image
        image = sample_image(app.session_state["vision_sample"])
        run = run_image(lm.model, lm.encode_image(image))
        expected = class_rollout(run, 1)
        heatmap = next(t for t in overlay["data"] if t["type"] == "heatmap")
        assert torch.allclose(array(heatmap["z"]).float(), expected, atol=1e-6)
        assert overlay["data"][0]["source"].startswith("data:image/png;base64,")
        assert any("resized to 32 x 32 (bilinear" in c.value for c in app.caption)
        # a head and a patch picked: the overlay follows
        app.session_state["vision_head"] = 2
        app.session_state["vision_query"] = 6  # patch row 1, col 1
        app.run()
        assert not app.exception
        titles = [f["layout"]["title"]["text"] for f in figures(app)]
        assert "Layer 1, head 2" in titles
        subtitle = figures(app)[titles.index("Layer 1, head 2")]["layout"]["title"]
        assert "patch row 1, col 1" in subtitle["subtitle"]["text"]


def test_upload_and_bad_files(app, tiny_dirs) -> None:
    with loaded(app, tiny_dirs["vit"]):
        open_page(app)
        app.radio(key="vision_source").set_value("Upload").run()
        assert any("Upload an image" in i.value for i in app.info)
        app.file_uploader(key="vision_upload").set_value(("red.png", png(), "image/png"))
        app.run()
        assert not app.exception and not app.error
        assert any("40 x 30 pixels" in c.value for c in app.caption)
        assert len(figures(app)) == 6  # overlay, rollout, patch PCA, norms, classes, lens
        app.file_uploader(key="vision_upload").set_value(
            ("bad <b>.png", b"GIF89a not really", "image/png"))
        app.run()
        assert not app.exception
        assert [e.value for e in app.error] == [
            escape_markdown("bad <b>.png") + " was refused: this file is not a readable PNG, "
            "JPEG or WebP image."]
        assert not figures(app)


def test_clip_captions_are_shown_literally(app, tiny_dirs) -> None:
    with loaded(app, tiny_dirs["clip"]) as lm:
        open_page(app)
        app.text_area(key="vision_captions").set_value(f"a photo of a cat\n{HOSTILE}\n"
                                                       f"{MARKDOWN}").run()
        assert not app.exception and not app.error
        frame = app.dataframe[0].value
        assert frame["caption"].tolist() == ["a photo of a cat", HOSTILE, MARKDOWN]
        bars = next(f for f in figures(app)
                    if f["layout"]["title"]["text"] == "Zero-shot: which caption fits")
        ticks = bars["layout"]["yaxis"]["ticktext"]
        assert ticks[1] == "&lt;img src=x onerror=alert(1)&gt;" and "<img" not in ticks[1]
        text = next(f for f in figures(app)
                    if f["layout"]["title"]["text"] == "Text tower, layer 0, head 0")
        pattern = array(next(t for t in text["data"] if t["type"] == "heatmap")["z"])
        assert pattern.shape == (7, 7)  # <|startoftext|> a photo of a cat <|endoftext|>
        assert torch.equal(pattern.triu(1), torch.zeros(7, 7))  # causal
        app.text_area(key="vision_captions").set_value("a cat\n" + "big " * 20).run()
        assert not app.exception
        assert [e.value for e in app.error] == [
            escape_markdown(f"text is 22 tokens; {lm.name} reads at most 16")]
        # the probabilities are CLIP's softmax over this image and these captions
        from explorer.ui.vision import sample_image
        image = lm.encode_image(sample_image(app.session_state["vision_sample"]))
        ids = [torch.tensor([lm.tokenizer.encode(c)]) for c in frame["caption"]]
        logits = torch.cat([lm.model(image, i) for i in ids], dim=1)[0]
        assert torch.allclose(torch.tensor(frame["probability"].tolist()),
                              logits.softmax(-1), atol=1e-5)


TEXT_PAGES = ("overview", "tokenizer", "attention", "layers", "generate", "positional",
              "interventions")


def test_text_pages_explain_a_vision_model(app, tiny_dirs) -> None:
    with loaded(app, tiny_dirs["vit"]):
        app.run()
        for name in TEXT_PAGES:
            app.switch_page(f"app_pages/{name}.py")
            app.run()
            assert not app.exception, (name, app.exception)
            assert any("is a vision model" in i.value for i in app.info), name


def test_image_page_with_a_text_model(app) -> None:
    cfg = ModelConfig(d_model=16, n_heads=2, d_mlp=24, d_vocab=37, n_ctx=32, n_layers=1,
                      name="tiny-gpt", family="gpt2")
    with model_in_store(app, "tiny-gpt", cfg):
        open_page(app)
        assert any("This page reads images" in i.value for i in app.info)
