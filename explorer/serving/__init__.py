"""Serving one process to many visitors: limits, thread sizing and the heavy-work gate.

No Streamlit here (`explorer.ui.gate` is the Streamlit side).
"""

from explorer.serving.gate import GateTimeout, HeavyGate, shared_gate
from explorer.serving.limits import ServerLimits, configure_torch_threads, env_limits, limits_from

__all__ = ["GateTimeout", "HeavyGate", "ServerLimits", "configure_torch_threads", "env_limits",
           "limits_from", "shared_gate"]
