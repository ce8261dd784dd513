"""explorer.ui.url_state: widgets that opt in read their value from the URL on first render,
fall back to their default on a malformed or out-of-range value (silently, and the value
leaves the URL); view_settings lists what defines the view. Writing the URL as values change
happens in the browser (AppTest does not see it): tests/e2e/test_share_e2e.py."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest


def script() -> None:
    import streamlit as st

    from explorer.ui.url_state import in_url, view_settings

    n_layers = st.session_state.get("n_layers", 5)
    st.selectbox("Layer", range(n_layers), **in_url("t_layer"))

    @st.fragment
    def views() -> None:
        st.radio("Combine", ["mean", "max"], horizontal=True, **in_url("t_how"),
                 format_func={"mean": "Mean over heads", "max": "Max over heads"}.get)
        st.multiselect("Positions", ["0: a", "1: b", "2: c"], default=["2: c"],
                       **in_url("t_positions"))
        st.text_input("Target", max_chars=8, **in_url("t_target"))
        st.toggle("Sub-layers", **in_url("t_sub"))
        st.slider("Temperature", 0.0, 2.0, 0.0, 0.05, **in_url("t_temperature"))
        st.number_input("Seed", 0, 1_000, 0, **in_url("t_seed"))

    views()
    st.json(view_settings())


def run(params: dict) -> AppTest:
    at = AppTest.from_function(script)
    at.query_params.update(params)
    at.run(timeout=30)
    assert not at.exception, at.exception
    return at


def settings(at: AppTest) -> dict:
    import json

    return json.loads(at.json[0].value)


def test_values_are_read_from_the_url() -> None:
    at = run({"t_layer": "3", "t_how": "Max over heads", "t_positions": ["0: a", "1: b"],
              "t_target": "Rome", "t_sub": "true", "t_temperature": "0.5", "t_seed": "42"})
    assert settings(at) == {"t_layer": 3, "t_how": "max", "t_positions": ["0: a", "1: b"],
                            "t_target": "Rome", "t_sub": True, "t_temperature": 0.5,
                            "t_seed": 42}


@pytest.mark.parametrize("params", [
    {"t_layer": "9"},  # no such layer
    {"t_layer": "-1"},
    {"t_layer": "three"},
    {"t_how": "max"},  # the URL holds the shown label, not the value
    {"t_how": "<script>alert(1)</script>"},
    {"t_positions": ["7: z"]},
    {"t_temperature": "7"},
    {"t_temperature": "nan"},
    {"t_seed": "1e99"},
    {"t_sub": "maybe"},
])
def test_malformed_or_out_of_range_values_fall_back_to_defaults(params: dict) -> None:
    at = run(params)
    assert settings(at) == {"t_layer": 0, "t_how": "mean", "t_positions": ["2: c"],
                            "t_target": "", "t_sub": False, "t_temperature": 0.0,
                            "t_seed": 0}
    assert not at.error and not at.warning  # silently, for a visitor with an old link
    for key in params:
        assert key not in at.query_params  # and the bad value leaves the URL


def test_text_over_max_chars_is_cut() -> None:
    assert settings(run({"t_target": "much too long for it"}))["t_target"] == "much too"


def test_a_value_valid_for_one_model_falls_back_for_another() -> None:
    at = AppTest.from_function(script)
    at.session_state["n_layers"] = 2
    at.query_params["t_layer"] = "4"
    at.run(timeout=30)
    assert settings(at)["t_layer"] == 0


def test_reserved_names_are_refused() -> None:
    from explorer.ui.url_state import in_url

    with pytest.raises(ValueError, match="written by"):
        in_url("prompt")
