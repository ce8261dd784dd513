"""CSV downloads of a chart's numbers: tidy frames, guarded against spreadsheet formulas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """Text that a spreadsheet would read as a formula (``= + - @``, tab, CR) gets a ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def frame_csv(frame: pd.DataFrame) -> bytes:
    """UTF-8 CSV of ``frame`` without its index; text cells made spreadsheet safe."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object:
            safe[column] = safe[column].map(spreadsheet_safe)
    return safe.to_csv(index=False, float_format="%.6g").encode("utf-8")


def csv_button(label: str, frame: Callable[[], pd.DataFrame], file_name: str, key: str) -> None:
    """A download button whose CSV is built only when clicked."""
    st.download_button(label, data=lambda: frame_csv(frame()), file_name=file_name,
                       mime="text/csv", on_click="ignore", icon=":material/download:",
                       key=key)
