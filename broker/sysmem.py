"""How much memory this machine gives the broker, for `--max-memory N%` (RabbitMQ's relative
memory watermark).

The machine's memory is the physical memory (`os.sysconf`, else /proc/meminfo), lowered to a
cgroup's memory limit when the broker runs under one (a container): a share of the host's memory
would let the broker be killed by its container's limit before its own alarm went off.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from broker.config import Share

log = logging.getLogger("qstore.broker")

CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
MEMINFO = Path("/proc/meminfo")


def physical_memory() -> int | None:
    """Bytes of physical memory, or None if the system does not say."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page_size > 0:
            return pages * page_size
    except (ValueError, OSError, AttributeError):
        pass
    return meminfo_total(MEMINFO)


def meminfo_total(path: Path) -> int | None:
    """MemTotal of a /proc/meminfo text, in bytes."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                parts = line.split()
                unit = parts[2].lower() if len(parts) > 2 else "b"
                return int(parts[1]) * (1024 if unit == "kb" else 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_limit(paths: tuple[Path, ...] = CGROUP_LIMITS) -> int | None:
    """The memory limit of our cgroup, or None (none, or not readable). cgroup v1 says
    "no limit" with a huge number, which the caller's min() with physical memory absorbs."""
    for path in paths:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def machine_memory() -> int | None:
    """The memory the broker may use: physical memory, capped by a cgroup limit."""
    known = [m for m in (physical_memory(), cgroup_limit()) if m]
    return min(known) if known else None


def max_memory(setting: int | Share, total: int | None = None) -> int:
    """`--max-memory` in bytes (0: no limit). A share of an unknown total is no limit, said in
    the log (the broker still starts: a watermark is a safeguard, not a requirement)."""
    if not isinstance(setting, Share):
        return setting
    if total is None:
        total = machine_memory()
    if not total:
        log.warning("--max-memory %s: the machine's memory is unknown; no memory limit", setting)
        return 0
    return int(total * setting.percent / 100)
