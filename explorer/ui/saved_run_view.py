"""A saved run opened in the app without its model: the sidebar's upload box and a dialog
with the file's head-score maps, logit lens and residual-stream norms.

The upload is untrusted: :func:`explorer.export.load_run` caps its size (the smaller of
:data:`MAX_UPLOAD_MB` and the loader's cap), loads no pickles and says in one sentence what
is wrong with a file it refuses, which the sidebar shows. Everything in the file is shown as
text (model name and prompt through :func:`escape_markdown`, token labels through the
figure builders' escaping). The parsed run is kept for the session under the upload's id,
so reruns do not parse it again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from explorer.analysis.attention import HEAD_SCORES
from explorer.export import SavedRun, SavedRunError, load_run
from explorer.ui.widgets import escape_markdown
from explorer.viz import head_map_chart
from explorer.viz.layers import logit_lens_grid, value_heatmap

MAX_UPLOAD_MB = 200  # Streamlit's default upload limit
OPENED = "saved_run_opened"  # st.session_state: (upload id, SavedRun)


def upload_box() -> None:
    """The sidebar's "Open a saved run" box; a good file gets a button for its dialog."""
    upload = st.file_uploader("Open a saved run (.npz)", type=["npz"], key="export_upload",
                              max_upload_size=MAX_UPLOAD_MB,
                              help="A file from “Download this analysis”: its charts are "
                                   "shown without loading its model.")
    if upload is None:
        st.session_state.pop(OPENED, None)
        return
    opened = st.session_state.get(OPENED)
    if opened is None or opened[0] != upload.file_id:
        try:
            saved = load_run(upload, max_bytes=MAX_UPLOAD_MB * 2**20)
        except SavedRunError as exc:
            st.error(str(exc))
            return
        opened = st.session_state[OPENED] = (upload.file_id, saved)
    if st.button("Show the saved run", key="export_show", width="stretch"):
        saved_run_dialog(opened[1])


@st.dialog("Saved run", width="large")
def saved_run_dialog(saved: SavedRun) -> None:
    meta = saved.meta
    st.markdown(f"**{escape_markdown(saved.model)}** · {escape_markdown(meta.get('page', ''))}"
                f" · saved {escape_markdown(meta.get('created', ''))}")
    st.code(saved.prompt, language=None, wrap_lines=True)
    shown = 0
    for stack in saved.stacks:
        scores = saved.scores(stack)
        names = [name for name in HEAD_SCORES if name in scores]
        wanted = saved.settings.get("attn_score", "induction")  # the score the page showed
        name = st.selectbox(f"Head score ({stack})", names, key=f"saved_score_{stack}",
                            index=names.index(wanted) if wanted in names else 0,
                            format_func=lambda n: HEAD_SCORES[n].label)
        st.altair_chart(head_map_chart(scores[name], HEAD_SCORES[name].label,
                                       reverse=not HEAD_SCORES[name].higher_is_role),
                        width="stretch")
        shown += 1
    for stream in sorted({n.split(".")[1] for n in saved.arrays if n.startswith("lens.")}):
        lens = saved.lens(stream)
        if "top_tokens" in lens:
            st.plotly_chart(lens_figure(saved, stream, lens), key=f"saved_lens_{stream}")
            shown += 1
    for stream in saved.streams:
        st.plotly_chart(norms_figure(saved, stream), key=f"saved_norms_{stream}")
        shown += 1
    if not shown:
        st.info("This file holds no head scores, lens or residual streams to draw.")


def _labels(saved: SavedRun, stream: str) -> list[str]:
    sequence = str(saved.arrays.get(f"stream.{stream}.tokens", np.array(["source"]))[0])
    return [f"{i}: {piece}" for i, piece in enumerate(saved.tokens(sequence)[1])]


def lens_figure(saved: SavedRun, stream: str, lens: dict[str, np.ndarray]) -> Any:
    labels = _labels(saved, stream)
    positions = lens["positions"].tolist()
    return logit_lens_grid(lens["top_tokens"].tolist(), lens["top_probs"],
                           lens["top_probs"][..., 0], lens["rows"].tolist(),
                           [labels[p] for p in positions], "prob",
                           f"Saved logit lens ({stream}): the top token at every layer")


def norms_figure(saved: SavedRun, stream: str) -> Any:
    norms = np.linalg.norm(saved.residual(stream).astype(np.float32), axis=-1)  # [L + 1, N]
    rows = ["embeddings", *(f"L{i}" for i in range(norms.shape[0] - 1))]
    return value_heatmap(np.log10(np.maximum(norms, 1e-6)), rows, _labels(saved, stream),
                         f"Saved residual stream norm ({stream})", "log10 ‖x‖")
