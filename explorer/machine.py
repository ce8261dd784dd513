"""What this process may use of the machine: CPUs and memory, cgroup limits included.

A container (Streamlit Community Cloud, Docker, Kubernetes) usually sees the host's cores
and RAM in ``os.cpu_count()`` and ``/proc/meminfo`` while its cgroup allows far less: sizing
torch's thread pool or a model check from the host's numbers oversubscribes the CPU quota
and gets the process killed for memory. This module reads the limits the kernel enforces:

- cgroup v2: ``cpu.max`` (``"quota period"`` or ``"max period"``), ``memory.max``,
  ``memory.current`` and ``memory.stat``'s ``inactive_file``;
- cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, ``memory.limit_in_bytes``,
  ``memory.usage_in_bytes`` and ``memory.stat``'s ``total_inactive_file``;

for the process's own cgroup (``/proc/self/cgroup``) and each of its ancestors (the tightest
limit wins, as the kernel applies it), plus the scheduler affinity mask. Everything takes
the cgroup root and the ``/proc/self/cgroup`` path as arguments so tests can point them at
fake files.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
MEMINFO = Path("/proc/meminfo")
UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge page-aligned number


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _ancestors(path: Path, root: Path) -> list[Path]:
    """``path`` and every directory above it up to ``root`` (inclusive), nearest first."""
    found = [path]
    while path != root and root in path.parents:
        path = path.parent
        found.append(path)
    return found


def cgroup_dirs(controller: str, root: Path = CGROUP_ROOT,
                proc_cgroup: Path = PROC_SELF_CGROUP) -> list[Path]:
    """The cgroup directories that limit ``controller`` ("cpu" or "memory") for this
    process, nearest first: v2's unified hierarchy, else v1's ``<root>/<controller>/``."""
    lines = (_read(proc_cgroup) or "").splitlines()
    dirs: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, relative = parts
        relative = relative.lstrip("/")
        if controllers == "":  # v2: "0::/path"
            base = root
        elif controller in controllers.split(","):  # v1: "4:memory:/path", "3:cpu,cpuacct:/"
            base = root / controllers if (root / controllers).is_dir() else root / controller
        else:
            continue
        dirs.extend(d for d in _ancestors(base / relative, base) if d.is_dir())
    if not dirs:  # no /proc/self/cgroup (tests, other systems): the root's own files
        dirs = [d for d in (root, root / controller) if d.is_dir()]
    return list(dict.fromkeys(dirs))


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """CPUs' worth of time the cgroup allows per period (e.g. 2.0), or None when unlimited."""
    quotas = []
    for d in cgroup_dirs("cpu", root, proc_cgroup):
        v2 = _read(d / "cpu.max")
        if v2 is not None:
            fields = v2.split()
            if len(fields) == 2 and fields[0] != "max" and _int(fields[1]):
                quotas.append(int(fields[0]) / int(fields[1]))
            continue
        quota, period = _int(_read(d / "cpu.cfs_quota_us")), _int(_read(d / "cpu.cfs_period_us"))
        if quota is not None and quota > 0 and period:
            quotas.append(quota / period)
    return min(quotas) if quotas else None


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Whole CPUs this process may keep busy: the affinity mask, capped by the cgroup quota
    (rounded up: a 1.5-CPU quota still runs 2 threads well), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = cpu_quota(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


@dataclass(frozen=True)
class MemoryLimit:
    """A cgroup's memory limit and what it holds now (page cache that can be dropped not
    counted), in bytes."""

    limit: int
    used: int

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)


def _stat(path: Path, key: str) -> int:
    for line in (_read(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return _int(value) or 0
    return 0


def cgroup_memory(root: Path = CGROUP_ROOT,
                  proc_cgroup: Path = PROC_SELF_CGROUP) -> MemoryLimit | None:
    """The tightest memory limit over this process's cgroup and its ancestors (the one with
    the least room left), or None when no cgroup limits memory."""
    limits = []
    for d in cgroup_dirs("memory", root, proc_cgroup):
        v2 = _read(d / "memory.max")
        if v2 is not None:
            limit = _int(v2)  # "max" -> None
            current = _int(_read(d / "memory.current"))
            inactive = _stat(d / "memory.stat", "inactive_file")
        else:
            limit = _int(_read(d / "memory.limit_in_bytes"))
            current = _int(_read(d / "memory.usage_in_bytes"))
            inactive = _stat(d / "memory.stat", "total_inactive_file")
        if limit is None or limit >= UNLIMITED:
            continue
        used = max(0, (current or 0) - inactive)
        limits.append(MemoryLimit(limit, used))
    return min(limits, key=lambda m: m.free) if limits else None


def host_available_memory(meminfo: Path = MEMINFO) -> int | None:
    """The host's ``MemAvailable`` in bytes (Linux), else free pages, else None."""
    kib = _stat_colon(meminfo, "MemAvailable")
    if kib is not None:
        return kib * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _stat_colon(path: Path, key: str) -> int | None:
    for line in (_read(path) or "").splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return _int(value.split()[0]) if value.split() else None
    return None


def available_memory(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP,
                     meminfo: Path = MEMINFO) -> int | None:
    """Bytes this process can still allocate: the least of the host's available memory and
    the room left under its cgroup limit (None when neither can be told)."""
    candidates = [host_available_memory(meminfo)]
    limit = cgroup_memory(root, proc_cgroup)
    if limit is not None:
        candidates.append(limit.free)
    known = [c for c in candidates if c is not None]
    return min(known) if known else None
