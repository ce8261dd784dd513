"""CPUs and memory the process may use, read from fake cgroup v1/v2 trees and /proc files."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer import machine

GIB = 2**30


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def v2(tmp_path: Path) -> tuple[Path, Path]:
    """A cgroup v2 tree: the process in /app.slice/web, 2 GiB and 1.5 CPUs on its parent."""
    root = tmp_path / "cgroup"
    write(root / "app.slice" / "memory.max", f"{2 * GIB}\n")
    write(root / "app.slice" / "memory.current", f"{GIB}\n")
    write(root / "app.slice" / "memory.stat", f"anon 1\ninactive_file {GIB // 4}\n")
    write(root / "app.slice" / "cpu.max", "150000 100000\n")
    write(root / "app.slice" / "web" / "memory.max", "max\n")
    write(root / "app.slice" / "web" / "cpu.max", "max 100000\n")
    write(root / "memory.max", "max\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/app.slice/web\n")
    return root, proc


def test_v2_limits_come_from_the_tightest_ancestor(v2) -> None:
    root, proc = v2
    limit = machine.cgroup_memory(root, proc)
    assert limit == machine.MemoryLimit(limit=2 * GIB, used=GIB - GIB // 4)
    assert limit.free == GIB + GIB // 4
    assert machine.cpu_quota(root, proc) == pytest.approx(1.5)
    assert 1 <= machine.usable_cpus(root, proc) <= 2  # ceil(1.5), capped by affinity


def test_available_memory_is_the_cgroup_room_not_the_host(v2, tmp_path: Path) -> None:
    root, proc = v2
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {64 * GIB // 1024} kB\nMemAvailable: {60 * GIB // 1024} kB\n")
    assert machine.host_available_memory(meminfo) == 60 * GIB
    assert machine.available_memory(root, proc, meminfo) == GIB + GIB // 4


def test_v1_quota_and_limit(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "200000\n")
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    write(root / "memory" / "docker" / "abc" / "memory.limit_in_bytes", f"{3 * GIB}\n")
    write(root / "memory" / "docker" / "abc" / "memory.usage_in_bytes", f"{GIB}\n")
    write(root / "memory" / "docker" / "abc" / "memory.stat", "total_inactive_file 0\n")
    write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")  # no limit
    proc = tmp_path / "proc-cgroup"
    proc.write_text("5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n")
    assert machine.cpu_quota(root, proc) == pytest.approx(2.0)
    assert machine.cgroup_memory(root, proc) == machine.MemoryLimit(3 * GIB, GIB)


def test_no_cgroup_limits(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "memory.max", "max\n")
    write(root / "cpu.max", "max 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n")
    assert machine.cgroup_memory(root, proc) is None
    assert machine.cpu_quota(root, proc) is None
    assert machine.usable_cpus(root, proc) >= 1
    missing = tmp_path / "nothing"
    assert machine.available_memory(missing, missing, missing) is None or \
        machine.available_memory(missing, missing, missing) > 0  # sysconf fallback


def test_a_quota_below_one_cpu_still_gives_one(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "7800 100000\n")  # Community Cloud's minimum: 0.078 cores
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n")
    assert machine.cpu_quota(root, proc) == pytest.approx(0.078)
    assert machine.usable_cpus(root, proc) == 1
