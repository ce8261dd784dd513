"""Suite-wide setup: offline hub, deterministic and modest threading, GPU test skipping.

Local model directories are refused unless the server enables them (a public server fails
closed); the tests load tiny models from temporary directories, so they enable them here
(tests of the refusal unset it).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("EXPLORER_LOCAL_MODELS", "1")

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
