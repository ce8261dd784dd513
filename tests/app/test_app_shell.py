"""The app shell: navigation, the sidebar model picker, URL state, failed loads."""

from __future__ import annotations

import pytest
from app_helpers import sidebar_errors

from explorer.ui.sidebar import OTHER
from explorer.ui.state import valid_model_name

pytestmark = pytest.mark.slow


def _load_typed_name(app, name: str) -> None:
    """Run the app, then type ``name`` under "Other" in the sidebar and press Load."""
    app.run()
    app.selectbox(key="model_choice").select(OTHER).run()
    app.text_input(key="model_custom").input(name).run()
    app.button[0].click().run()


def test_first_run_loads_default_model_and_writes_url(app) -> None:
    app.run()
    assert not app.exception
    assert app.session_state["model_key"].name == "smollm2-135m"
    assert app.query_params["model"] == "smollm2-135m"
    assert [s.label for s in app.sidebar.selectbox] == ["Model", "Device", "Dtype"]
    assert app.sidebar.selectbox(key="model_device").options[-1] == "cpu"
    assert "smollm2" in app.sidebar.success[0].value
    assert app.title[0].value == "Model overview"


def test_url_model_is_loaded(app) -> None:
    app.query_params["model"] = "minilm-l6"
    app.run()
    assert not app.exception
    assert app.session_state["model_key"].name == "minilm-l6"
    assert app.selectbox(key="model_choice").value == "minilm-l6"


def test_unknown_url_model_falls_back_to_default_with_error(app) -> None:
    app.query_params["model"] = "no-such-org/no-such-model"
    app.run()
    assert not app.exception
    errors = sidebar_errors(app)
    assert len(errors) == 1 and "no\\-such\\-org/no\\-such\\-model" in errors[0]
    assert app.session_state["model_key"].name == "smollm2-135m"


def test_failed_load_keeps_previous_model(app) -> None:
    _load_typed_name(app, "/definitely/not/a/dir")
    assert not app.exception
    errors = sidebar_errors(app)
    assert len(errors) == 1 and "Could not load" in errors[0]
    assert app.session_state["model_key"].name == "smollm2-135m"
    assert app.metric[0].label == "Parameters"  # the overview still renders


def test_malformed_name_is_refused_before_loading(app) -> None:
    _load_typed_name(app, "http://evil.example/<script>")
    assert "not a model id or a path" in sidebar_errors(app)[0]
    assert app.session_state["model_key"].name == "smollm2-135m"


def test_switching_model_with_load_button(app) -> None:
    app.run()
    app.selectbox(key="model_choice").select("minilm-l6").run()
    app.button[0].click().run()
    assert app.session_state["model_key"].name == "minilm-l6"
    assert app.query_params["model"] == "minilm-l6"
    assert any(m.label == "Layers" and m.value == "6" for m in app.metric)


@pytest.mark.parametrize(
    ("name", "ok"),
    [("smollm2-135m", True), ("HuggingFaceTB/SmolLM2-135M", True), ("./models/gpt2", True),
     ("", False), ("a" * 201, False), ("http://x.example/m", False), ("<img src=x>", False),
     ("bad\nname", False)],
)
def test_valid_model_name(name: str, ok: bool) -> None:
    assert valid_model_name(name) is ok


def test_url_local_path_is_never_loaded(app, tmp_path) -> None:
    """A shared link naming a local directory loads the default model, not the directory."""
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    app.query_params["model"] = str(tmp_path)
    app.run()
    assert not app.exception
    assert app.session_state["model_key"].name == "smollm2-135m"
    assert app.session_state["model_key"].local is False
    assert app.query_params["model"] == "smollm2-135m"
    assert app.selectbox(key="model_choice").value == "smollm2-135m"


@pytest.mark.parametrize("setting", [None, "0", "maybe"])
def test_local_directories_refused_unless_enabled(app, monkeypatch, tmp_path, setting) -> None:
    """Unset (a forgotten setting) or anything but a yes refuses local directories."""
    if setting is None:
        monkeypatch.delenv("EXPLORER_LOCAL_MODELS", raising=False)
    else:
        monkeypatch.setenv("EXPLORER_LOCAL_MODELS", setting)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    _load_typed_name(app, str(tmp_path))
    assert not app.exception
    errors = sidebar_errors(app)
    assert len(errors) == 1 and "Local directories are turned off" in errors[0]
    assert "EXPLORER_LOCAL_MODELS=1" in errors[0]
    assert app.session_state["model_key"].name == "smollm2-135m"
