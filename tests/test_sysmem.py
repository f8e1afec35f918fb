"""`--max-memory N%` in bytes: the machine's memory from sysconf or /proc/meminfo, capped by a
cgroup limit (files written by the test stand for the kernel's)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from broker import sysmem
from broker.config import Share


def test_meminfo_total(tmp_path: Path) -> None:
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:        8029412 kB\nMemFree:          123456 kB\n")
    assert sysmem.meminfo_total(f) == 8029412 * 1024
    f.write_text("garbage\n")
    assert sysmem.meminfo_total(f) is None
    assert sysmem.meminfo_total(tmp_path / "absent") is None


def test_cgroup_limit(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert sysmem.cgroup_limit((v2, v1)) is None  # neither there
    v2.write_text("max\n")  # v2 without a limit
    v1.write_text("536870912\n")
    assert sysmem.cgroup_limit((v2, v1)) == 536870912
    v2.write_text("1073741824\n")
    assert sysmem.cgroup_limit((v2, v1)) == 1073741824


def test_machine_memory_is_known_here() -> None:
    total = sysmem.machine_memory()
    assert total is not None and total > 0
    assert total <= (sysmem.physical_memory() or total)


def test_max_memory(caplog: pytest.LogCaptureFixture) -> None:
    assert sysmem.max_memory(1234) == 1234
    assert sysmem.max_memory(0) == 0
    assert sysmem.max_memory(Share(40), total=1000) == 400
    assert sysmem.max_memory(Share(12.5), total=1000) == 125
    with caplog.at_level(logging.WARNING):
        assert sysmem.max_memory(Share(40), total=0) == 0
    assert "--max-memory 40%: the machine's memory is unknown; no memory limit" in caplog.text
