"""Server-side limits of a shared deployment, read from the environment (or Streamlit secrets).

One visitor must not hold a shared server for minutes, and a forgotten setting on a public
server must fail closed. Every limit has a safe default and an ``EXPLORER_*`` variable:

| variable | default | what it bounds |
| --- | --- | --- |
| ``EXPLORER_LOCAL_MODELS`` | off | local directories typed in the sidebar (``1`` allows them) |
| ``EXPLORER_MAX_PROMPT_CHARS`` | 12,000 | characters of a prompt that are used |
| ``EXPLORER_MAX_NEW_TOKENS`` | 256 | tokens one generation may write |
| ``EXPLORER_MAX_GRID_CELLS`` | 4,096 | forwards one grid (patching, sweeps) may run |
| ``EXPLORER_MAX_INDUCTION_LEN`` | 256 | length of the induction test's random half |
| ``EXPLORER_HEAVY_SLOTS`` | CPUs // 2, at least 1 | forwards/generations running at once |
| ``EXPLORER_TORCH_THREADS`` | CPUs // slots | torch threads of each |
| ``EXPLORER_MAX_WAIT_S`` | 300 | how long a visitor waits for a slot before "busy" |

CPUs are those the process may use (`explorer.machine.usable_cpus`: cgroup quota and
affinity). On Streamlit Community Cloud the root-level keys of the app's secrets become
environment variables, so the same names work there; `explorer.ui` also reads
``st.secrets`` directly. Values that do not parse fall back to the default with a warning.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields

from explorer.machine import usable_cpus

log = logging.getLogger(__name__)

TRUE = ("1", "true", "yes", "on")
PREFIX = "EXPLORER_"


@dataclass(frozen=True)
class ServerLimits:
    """What one request may take of a shared server (see the module docstring)."""

    local_models: bool = False
    max_prompt_chars: int = 12_000
    max_new_tokens: int = 256
    max_grid_cells: int = 4_096
    max_induction_len: int = 256
    heavy_slots: int = 0  # 0: sized from the CPUs
    torch_threads: int = 0  # 0: sized from the CPUs and the slots
    max_wait_s: int = 300

    def slots(self, cpus: int | None = None) -> int:
        """Heavy jobs run at once: the setting, else half the usable CPUs (at least 1)."""
        if self.heavy_slots > 0:
            return self.heavy_slots
        return max(1, (cpus or usable_cpus()) // 2)

    def threads(self, cpus: int | None = None) -> int:
        """Torch threads: the setting, else the usable CPUs shared among the slots."""
        if self.torch_threads > 0:
            return self.torch_threads
        cpus = cpus or usable_cpus()
        return max(1, cpus // self.slots(cpus))


def _parse(name: str, text: str, default: object) -> object:
    if isinstance(default, bool):
        return text.strip().lower() in TRUE
    try:
        value = int(text.strip().replace("_", "").replace(",", ""))
    except ValueError:
        log.warning("%s%s=%r is not a whole number; using %s", PREFIX, name.upper(), text,
                    default)
        return default
    if value < 0:
        log.warning("%s%s=%r is negative; using %s", PREFIX, name.upper(), text, default)
        return default
    return value


def limits_from(*sources: Mapping[str, object]) -> ServerLimits:
    """Limits from ``EXPLORER_*`` keys; the first source that has a key wins (environment
    first, then secrets). Anything missing or unreadable keeps its safe default."""
    values: dict[str, object] = {}
    for field in fields(ServerLimits):
        key = PREFIX + field.name.upper()
        for source in sources:
            if key in source and source[key] is not None:
                values[field.name] = _parse(field.name, str(source[key]), field.default)
                break
    return ServerLimits(**values)


def env_limits() -> ServerLimits:
    """Limits from the process environment alone (no Streamlit)."""
    return limits_from(os.environ)


_threads_lock = threading.Lock()
_threads_set: int | None = None


def configure_torch_threads(limits: ServerLimits | None = None) -> int:
    """Set torch's intra-op thread count once per process, from the CPUs the process may use
    (not the host's core count); later calls return the count already set."""
    global _threads_set
    with _threads_lock:
        if _threads_set is not None:
            return _threads_set
        import torch

        threads = (limits or env_limits()).threads()
        torch.set_num_threads(threads)
        _threads_set = threads
        log.info("torch uses %d threads (%d usable CPUs)", threads, usable_cpus())
        return threads
