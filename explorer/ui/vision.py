"""Glue for the Image attention page: the image input, the shared image run, and the views
(attention over the patch grid, rollout, head map, ViT classes and lens, CLIP captions).

The image comes from an upload (checked by `explorer.models.image.open_image`: a byte cap,
a pixel cap read from the header before decoding, PNG/JPEG/WebP only) or from a few images
drawn here: no photograph ships with the app's packages. One forward per (model, image)
lives in the shared run store (`explorer.ui.runs.run_store`), so moving a slider reruns no
model. Keys of this page's widgets start with ``vision_``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import Any

import pandas as pd
import streamlit as st
import torch
from PIL import Image, ImageDraw

from explorer.analysis.attention import HEAD_SCORES, head_scores
from explorer.models.image import MAX_BYTES, MAX_PIXELS, ImageError, open_image
from explorer.runs.image_run import (
    ImageRun,
    caption_patterns,
    class_lens,
    class_rollout,
    patch_label,
    patch_pca,
    query_weights,
    run_image,
    stream_norms,
)
from explorer.serving import GateTimeout
from explorer.ui.export import show_chart, show_in, show_vega
from explorer.ui.gate import VisitorGone, busy_message, heavy_work
from explorer.ui.resources import model_label
from explorer.ui.runs import run_store
from explorer.ui.url_state import in_url
from explorer.ui.widgets import escape_markdown, is_new_click
from explorer.viz import attention_heatmap, head_map_chart, line_chart, unique_labels
from explorer.viz.vision import (
    attention_overlay,
    class_lens_chart,
    patch_pca_chart,
    probability_bars,
)

log = logging.getLogger(__name__)

LAYER_KEY, HEAD_KEY, QUERY_KEY = "vision_layer", "vision_head", "vision_query"
MAP_KEY, OVERLAY_KEY = "vision_head_map", "vision_overlay"
MEAN_OF_HEADS = -1
VISION_SCORES = {"entropy": "Entropy (nats)", "first_token": "Class-token sink score",
                 "mean_distance": "Mean attention distance (positions)"}
MAX_CAPTIONS, MAX_CAPTION_CHARS = 8, 300


# --------------------------------------------------------------------------- image input


def _sun_over_sea(size: int = 256) -> Image.Image:
    image = Image.new("RGB", (size, size), (120, 180, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, size * 0.6, size, size), fill=(20, 70, 140))
    draw.ellipse((size * 0.55, size * 0.15, size * 0.8, size * 0.4), fill=(250, 210, 60))
    draw.polygon([(size * 0.1, size * 0.62), (size * 0.35, size * 0.62),
                  (size * 0.3, size * 0.7), (size * 0.15, size * 0.7)], fill=(110, 60, 30))
    draw.line((size * 0.22, size * 0.62, size * 0.22, size * 0.35), fill=(80, 50, 30), width=3)
    draw.polygon([(size * 0.23, size * 0.36), (size * 0.23, size * 0.58),
                  (size * 0.34, size * 0.58)], fill=(245, 245, 245))
    return image


def _shapes(size: int = 256) -> Image.Image:
    image = Image.new("RGB", (size, size), (235, 235, 225))
    draw = ImageDraw.Draw(image)
    for i in range(0, size, 32):  # a checkerboard strip at the top
        for j in range(0, size // 4, 32):
            if (i // 32 + j // 32) % 2 == 0:
                draw.rectangle((i, j, i + 31, j + 31), fill=(30, 30, 30))
    draw.ellipse((size * 0.1, size * 0.4, size * 0.45, size * 0.75), fill=(200, 30, 40))
    draw.rectangle((size * 0.55, size * 0.45, size * 0.9, size * 0.85), fill=(40, 150, 60))
    return image


SAMPLES = {"Drawn: a boat under the sun": _sun_over_sea,
           "Drawn: shapes and a checkerboard": _shapes}


@functools.cache
def sample_image(name: str) -> Image.Image:
    return SAMPLES[name]()


def image_input() -> tuple[Image.Image, str] | None:
    """(RGB image, a digest that identifies it) from an upload or a drawn sample; a refused
    upload shows why and returns None."""
    source = st.radio("Image", ["Drawn sample", "Upload"], horizontal=True,
                      **in_url("vision_source"))
    if source == "Drawn sample":
        name = st.selectbox("Sample", list(SAMPLES), **in_url("vision_sample"),
                            help="Simple drawings made by the app: no photographs ship with "
                                 "its packages. Upload a photo to see a trained model at work.")
        return sample_image(name), f"sample:{name}"
    upload = st.file_uploader(
        f"PNG, JPEG or WebP, at most {MAX_BYTES // 2**20} MiB and "
        f"{MAX_PIXELS // 1_000_000} megapixels", type=["png", "jpg", "jpeg", "webp"],
        key="vision_upload")
    if upload is None:
        st.info("Upload an image, or pick a drawn sample.")
        return None
    data = upload.getvalue()
    try:
        image = open_image(data)
    except ImageError as exc:
        st.error(f"{escape_markdown(upload.name[:120])} was refused: {exc}.")
        return None
    return image, hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the run


def image_run(lm: Any, image: Image.Image, digest: str) -> ImageRun | None:
    """The shared forward of ``image`` (None, with a message, when it could not run)."""
    def compute() -> ImageRun:
        with heavy_work("image run"):
            return run_image(lm.model, lm.encode_image(image))

    try:
        with st.spinner("Running the model once over the image…"):
            return run_store().get(("image", model_label(lm), digest), compute)
    except VisitorGone:
        st.stop()
    except GateTimeout as exc:
        st.warning(busy_message(exc))
    except Exception as exc:  # the model may refuse the image: say so, keep the app
        log.exception("image run failed")
        st.error(f"The model could not read this image: {type(exc).__name__}.")
    return None


# --------------------------------------------------------------------------- selection


def sync_from_clicks(run: ImageRun) -> None:
    """Apply a new click on the head map (layer, head) or on the overlay (query patch)."""
    event = st.session_state.get(MAP_KEY)
    try:
        point = (event["selection"].get("head") or [None])[0]
        click = (int(point["layer"]), int(point["head"])) if point else None
    except (AttributeError, KeyError, TypeError, ValueError):
        click = None
    if click and is_new_click(click, "vision_seen_head") and click[0] < run.n_layers \
            and click[1] < run.n_heads:
        st.session_state[LAYER_KEY], st.session_state[HEAD_KEY] = click
    event = st.session_state.get(OVERLAY_KEY)
    try:
        point = event["selection"]["points"][0]
        row, col = (int(v) for v in point["customdata"][:2]) if point.get("customdata") \
            is not None else (None, None)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        row = col = None
    gh, gw = run.grid
    if row is not None and is_new_click((row, col), "vision_seen_patch") \
            and row < gh and col < gw:
        st.session_state[QUERY_KEY] = 1 + row * gw + col
    # A value another model left behind is dropped, not replaced: each widget's first
    # option is its default (setting a default through the session state can leave the
    # browser showing another value after the widget was off the page for a run).
    valid = {LAYER_KEY: range(run.n_layers), HEAD_KEY: (MEAN_OF_HEADS, *range(run.n_heads)),
             QUERY_KEY: range(1 + gh * gw)}
    for key, allowed in valid.items():
        if key in st.session_state and st.session_state[key] not in allowed:
            del st.session_state[key]


def controls(run: ImageRun) -> tuple[int, int, int]:
    """Layer, head (MEAN_OF_HEADS for the mean) and query position widgets."""
    columns = st.columns(3)
    columns[0].selectbox("Layer", range(run.n_layers - 1, -1, -1), **in_url(LAYER_KEY),
                         help="Blocks from the last (the one the output reads) to the first.")
    columns[1].selectbox("Head", (MEAN_OF_HEADS, *range(run.n_heads)), **in_url(HEAD_KEY),
                         format_func=lambda h: "mean of heads" if h == MEAN_OF_HEADS
                         else f"head {h}")
    columns[2].selectbox("Attention from", range(1 + run.grid[0] * run.grid[1]),
                         **in_url(QUERY_KEY), format_func=lambda i: patch_label(i, run.grid),
                         help="The class token, or any patch (click one on the image).")
    return (st.session_state[LAYER_KEY], st.session_state[HEAD_KEY],
            st.session_state[QUERY_KEY])


# --------------------------------------------------------------------------- views


def attention_views(lm: Any, run: ImageRun, prepared: Image.Image, layer: int, head: int,
                    query: int) -> None:
    """The query's attention over the image and the class token's rollout, side by side."""
    chosen = None if head == MEAN_OF_HEADS else head
    weights = query_weights(run, layer, chosen, query)
    pattern = run.patterns[layer]
    own = (pattern[:, query, 0].mean() if chosen is None else pattern[chosen, query, 0]).item()
    who = "mean of heads" if chosen is None else f"head {chosen}"
    gh, gw = run.grid
    marker = None if query == 0 else divmod(query - 1, gw)
    left, right = st.columns(2)
    with left:
        fig = attention_overlay(prepared, weights, f"Layer {layer}, {who}",
                                f"From the {patch_label(query, run.grid)}; "
                                f"{own:.1%} of it goes to the class token (not drawn)",
                                query=marker)
        show_chart(fig, key=OVERLAY_KEY, csv=False, on_select="rerun", selection_mode="points",
                        width="stretch")
    with right:
        rollout = class_rollout(run, layer)
        show_chart(attention_overlay(
            prepared, rollout, f"Attention rollout to layer {layer}",
            "Class token, heads averaged, residual as half of each layer"), width="stretch",
            key="vision_rollout_overlay", csv=False)
    st.caption(f"The image is cut into {gh} x {gw} patches of {lm.config.patch_size} x "
               f"{lm.config.patch_size} pixels; each patch is one position after the class "
               "token. Rollout (Abnar & Zuidema 2020) multiplies the layers' head-averaged "
               "patterns, each mixed half and half with the identity for the residual "
               "connection, to estimate how much the class token draws from each patch.")


def head_map_view(run: ImageRun, layer: int, head: int) -> None:
    """Layer x head map of one score over the class token and patches; click a head."""
    score = st.selectbox("Colour heads by", list(VISION_SCORES), **in_url("vision_score"),
                         format_func=VISION_SCORES.get)
    scores = head_scores(run.patterns, score)
    selected = (layer, head) if head != MEAN_OF_HEADS else None
    chart = head_map_chart(scores, VISION_SCORES[score], selected,
                           reverse=not HEAD_SCORES[score].higher_is_role)
    show_vega(chart.properties(height=min(max(22 * run.n_layers + 40, 200), 480)),
                    on_select="rerun", selection_mode="head", key=MAP_KEY, width="stretch")
    st.caption(HEAD_SCORES[score].description.replace("(BOS/[CLS])", "(the class token)")
               + " Distances count positions in the patch sequence (row by row).")


def patch_geometry_view(run: ImageRun, layer: int) -> None:
    """The patches' residual stream after ``layer`` on two principal axes."""
    coords, explained = patch_pca(run, layer)
    left, right = st.columns([3, 2])
    show_in(left)(patch_pca_chart(coords, run.grid, explained,
                                      f"Patches after block {layer}"), width="stretch",
                  key="vision_patch_pca")
    show_in(right)(line_chart(range(run.n_layers), stream_norms(run),
                                  "Residual stream norms", "after block", "L2 norm"),
                       width="stretch", key="vision_norms")
    st.caption("Each dot is one patch's residual stream after this block, projected on its "
               "two main directions of variation. Dots of one colour on the left share a "
               "row of the image, on the right a column: where they group, the model keeps "
               "track of where a patch is. Right: the length of the residual stream after "
               "each block, for the class token and over the patches.")


def classifier_view(lm: Any, run: ImageRun) -> None:
    """Top-5 classes and the class token's logit lens per layer."""
    labels = lm.config.extra.get("labels") or [str(i) for i in range(lm.config.d_vocab)]
    probs = run.logits.softmax(-1)
    top = probs.topk(min(5, probs.numel()))
    names = [labels[i] for i in top.indices.tolist()]
    left, right = st.columns(2)
    show_in(left)(probability_bars(names, top.values, "Top classes"), width="stretch",
                  key="vision_top_classes")
    lens = class_lens(lm.model, run)
    target = int(top.indices[0])
    layer_top = [labels[i] for i in lens.argmax(-1).tolist()]
    show_in(right)(class_lens_chart(lens[:, target], layer_top, labels[target],
                                        "Logit lens of the class token"), width="stretch",
                   key="vision_class_lens")


def caption_embeddings(lm: Any, captions: tuple[str, ...]) -> torch.Tensor:
    """CLIP text embeddings [t, P] of captions, one forward each (no padding needed)."""
    rows = []
    for caption in captions:
        with torch.no_grad():
            rows.append(lm.model.text_embeds(lm.encode(caption))[0])
    return torch.stack(rows).float().cpu()


def clip_view(lm: Any, run: ImageRun, digest: str) -> None:
    """The image against captions the user types: cosine similarity and softmax."""
    text = st.text_area("Captions, one per line", **in_url("vision_captions"),
                        value="a photo of a cat\na photo of a dog\na drawing of a boat",
                        max_chars=MAX_CAPTIONS * MAX_CAPTION_CHARS)
    captions = tuple(dict.fromkeys(line.strip() for line in text.splitlines()
                                   if line.strip()))[:MAX_CAPTIONS]
    if not captions:
        st.info("Type at least one caption.")
        return
    try:
        with heavy_work("caption run"):
            texts = run_store().get(("captions", model_label(lm), captions),
                                    lambda: caption_embeddings(lm, captions))
    except ValueError as exc:  # a caption longer than the text tower reads
        st.error(escape_markdown(str(exc)))
        return
    except GateTimeout as exc:
        st.warning(busy_message(exc))
        return
    logits = lm.model.similarity(run.image_embed[None].to(lm.device),
                                 texts.to(lm.device))[0].float().cpu()
    probs = logits.softmax(-1)
    scale = lm.model.logit_scale.exp().item()
    show_chart(probability_bars(list(captions), probs, "Zero-shot: which caption fits",
                                     f"softmax of {scale:.1f} x cosine similarity"),
                    width="stretch", key="vision_zero_shot")
    st.dataframe(pd.DataFrame({"caption": list(captions),
                               "cosine": (logits / scale).tolist(),
                               "probability": probs.tolist()}), hide_index=True)
    with st.expander("The text tower's attention"):
        caption_attention_view(lm, captions)


def caption_attention_view(lm: Any, captions: tuple[str, ...]) -> None:
    """One caption's attention in CLIP's text tower, as on the text pages (causal: each
    token sees itself and the tokens before it; the last, end-of-text, token is read)."""
    caption = st.selectbox("Caption", captions, **in_url("vision_text_caption"))
    ids = lm.encode(caption)
    with heavy_work("caption attention"):
        patterns = caption_patterns(lm.model, ids)
    columns = st.columns(2)
    layer = columns[0].selectbox("Text layer", range(patterns.shape[0]),
                                 **in_url("vision_text_layer"))
    head = columns[1].selectbox("Text head", range(patterns.shape[1]), **in_url("vision_text_head"))
    labels = unique_labels(lm.tokens(ids))
    show_chart(attention_heatmap(patterns[layer, head], labels, labels,
                                      f"Text tower, layer {layer}, head {head}"),
                    width="stretch", key="vision_text_attention")
