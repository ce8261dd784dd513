"""Server limits from env/secrets, torch threads, and the heavy-work gate under threads."""

from __future__ import annotations

import threading
import time

import pytest

from explorer.serving import GateTimeout, HeavyGate, ServerLimits, limits_from


def test_limits_default_to_safe_values() -> None:
    limits = limits_from({})
    assert limits == ServerLimits()
    assert limits.local_models is False
    assert limits.max_new_tokens == 256 and limits.max_prompt_chars == 12_000


def test_environment_wins_over_secrets_and_bad_values_keep_defaults(caplog) -> None:
    env = {"EXPLORER_MAX_NEW_TOKENS": "64", "EXPLORER_MAX_PROMPT_CHARS": "lots"}
    secrets = {"EXPLORER_MAX_NEW_TOKENS": 999, "EXPLORER_LOCAL_MODELS": "true",
               "EXPLORER_HEAVY_SLOTS": 3}
    limits = limits_from(env, secrets)
    assert limits.max_new_tokens == 64
    assert limits.max_prompt_chars == 12_000  # "lots" is not a number
    assert limits.local_models is True
    assert limits.heavy_slots == 3
    assert "EXPLORER_MAX_PROMPT_CHARS" in caplog.text


@pytest.mark.parametrize("value", ["0", "no", "", "maybe", "2"])
def test_local_models_need_an_explicit_yes(value: str) -> None:
    assert limits_from({"EXPLORER_LOCAL_MODELS": value}).local_models is False


@pytest.mark.parametrize(("cpus", "slots", "threads"), [(1, 1, 1), (2, 1, 2), (4, 2, 2),
                                                        (16, 8, 2)])
def test_slots_and_threads_share_the_cpus(cpus: int, slots: int, threads: int) -> None:
    limits = ServerLimits()
    assert limits.slots(cpus) == slots
    assert limits.threads(cpus) == threads
    assert ServerLimits(heavy_slots=2, torch_threads=3).threads(cpus) == 3


def test_torch_threads_follow_the_usable_cpus(monkeypatch) -> None:
    """In a fresh interpreter (the setting is once per process): 3 usable CPUs, 1 slot."""
    import subprocess
    import sys

    code = ("import torch, explorer.serving.limits as L, explorer.machine as M\n"
            "L.usable_cpus = lambda: 3\n"
            "print(L.configure_torch_threads(L.ServerLimits(heavy_slots=1)), "
            "L.configure_torch_threads(), torch.get_num_threads())\n"
            "import threading\n"
            "out = []\n"
            "t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))\n"
            "t.start(); t.join(); print(out[0])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    first, second = result.stdout.strip().splitlines()
    assert first.split() == ["3", "3", "3"]  # set once; the second call keeps it
    assert second == "3"  # a script thread started later sees the same count


@pytest.mark.parametrize("capacity", [1, 2])
def test_gate_runs_capacity_jobs_at_once_in_arrival_order(capacity: int) -> None:
    gate = HeavyGate(capacity=capacity)
    running, peak, order = [0], [0], []
    lock = threading.Lock()
    release = threading.Event()

    def job(i: int) -> None:
        with gate.slot(poll_s=0.01):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(i)
            release.wait(5)
            with lock:
                running[0] -= 1

    threads = []
    for i in range(6):
        t = threading.Thread(target=job, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.02)  # arrive in order
    time.sleep(0.1)
    assert gate.running == capacity and gate.waiting == 6 - capacity
    assert order == list(range(capacity))
    release.set()
    for t in threads:
        t.join(5)
    assert peak[0] == capacity
    if capacity == 1:  # one at a time: strictly first come, first served
        assert order == list(range(6))
    assert sorted(order) == list(range(6))
    assert gate.running == 0 and gate.waiting == 0


def test_waiter_sees_how_many_are_ahead_and_leaves_when_it_gives_up() -> None:
    gate = HeavyGate(capacity=1)
    first = gate.enter()
    second = gate.enter()
    seen: list[int] = []

    class Gone(Exception):
        pass

    def on_wait(n_ahead: int) -> None:
        seen.append(n_ahead)
        if len(seen) == 3:
            raise Gone  # the tab was closed

    with pytest.raises(Gone), gate.slot(on_wait, poll_s=0.01):
        pytest.fail("must not run")
    assert seen == [2, 2, 2]  # the running job and the one queued before
    assert gate.waiting == 1  # its place was given back; `second` is still queued
    gate.leave(first)
    assert gate.ahead_of(second) == 0 and gate.running == 1
    gate.leave(second)
    gate.leave(second)  # idempotent
    assert gate.running == 0


def test_slot_is_released_when_the_body_raises_and_waits_time_out() -> None:
    gate = HeavyGate(capacity=1)
    with pytest.raises(RuntimeError), gate.slot():
        assert gate.running == 1
        raise RuntimeError("rerun")
    assert gate.running == 0
    holder = gate.enter()
    with pytest.raises(GateTimeout), gate.slot(max_wait_s=0.05, poll_s=0.01):
        pass
    assert gate.waiting == 0
    gate.leave(holder)
    with pytest.raises(ValueError):
        HeavyGate(0)
