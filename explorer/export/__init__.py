"""Leaving the app: a run saved as one NPZ file (and read back without the model) and a page's
figures as one self-contained HTML report.

``save_run`` / ``load_run`` (:mod:`explorer.export.saved_run`): the run's small arrays (token
ids and pieces, residual streams, head scores, logit-lens top-k, generated steps) in an NPZ
file whose ``meta.json`` entry holds the model, prompt and settings as JSON. ``load_run``
treats the file as untrusted (size cap, no pickle, clear :class:`SavedRunError`).
``html_report`` (:mod:`explorer.export.report`): plotly figures and Vega-Lite charts in one
HTML file with plotly.js inlined, readable offline.
"""

from typing import Any

from explorer.export.saved_run import (
    SavedRun,
    SavedRunError,
    generation_arrays,
    load_run,
    run_arrays,
    save_run,
)

__all__ = [
    "SavedRun",
    "SavedRunError",
    "generation_arrays",
    "html_report",
    "load_run",
    "run_arrays",
    "save_run",
]


def __getattr__(name: str) -> Any:
    """``html_report`` is imported on first use: it loads plotly, which ``import explorer``
    does not need."""
    if name == "html_report":
        from explorer.export.report import html_report

        return html_report
    raise AttributeError(f"module 'explorer.export' has no attribute {name!r}")
