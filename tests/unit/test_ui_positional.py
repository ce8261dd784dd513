"""explorer.ui.positional section helpers outside a running app (Streamlit's bare mode keeps
``st.session_state`` as a plain store): stored widget values kept valid, sections timed and
their errors contained (the fragment around them needs a running app)."""

from __future__ import annotations

import pytest
import streamlit as st

from explorer.ui.positional import TIMINGS_KEY, clamp, keep_in, timed_section


@pytest.fixture(autouse=True)
def clean_state():
    for key in ("pos_test_pick", "pos_test_slider", TIMINGS_KEY):
        st.session_state.pop(key, None)
    yield
    for key in ("pos_test_pick", "pos_test_slider", TIMINGS_KEY):
        st.session_state.pop(key, None)


def test_keep_in_resets_only_a_value_that_is_no_longer_offered() -> None:
    keep_in("pos_test_pick", ["0: a", "1: b"], "1: b")
    assert st.session_state["pos_test_pick"] == "1: b"  # nothing stored yet
    st.session_state["pos_test_pick"] = "0: a"
    keep_in("pos_test_pick", ["0: a", "1: b"], "1: b")
    assert st.session_state["pos_test_pick"] == "0: a"
    keep_in("pos_test_pick", ["0: c", "1: d"], "1: d")  # a new prompt
    assert st.session_state["pos_test_pick"] == "1: d"


@pytest.mark.parametrize(("stored", "expected"), [(None, 8), (5, 5), (0, 1), (300, 127)])
def test_clamp_keeps_a_slider_value_in_its_range(stored, expected) -> None:
    if stored is not None:
        st.session_state["pos_test_slider"] = stored
    clamp("pos_test_slider", 1, 127, 8)
    assert st.session_state["pos_test_slider"] == expected


def test_a_section_records_its_time_and_contains_its_error() -> None:
    calls = []

    def fine(x: int) -> None:
        calls.append(x)

    def broken() -> None:
        raise RuntimeError("the model refused")

    timed_section("fine", fine)(3)
    timed_section("broken", broken)()  # shown as st.error, not raised
    assert calls == [3]
    timings = st.session_state[TIMINGS_KEY]
    assert set(timings) == {"fine", "broken"} and all(t >= 0 for t in timings.values())
