"""How much room the journal has, whether it takes new durable work, and which records pass when
it does not.

What LMDB does with space (measured with `mdb_stat -ef`, see docs/journal-format.md): a deleted
record's pages go to LMDB's freelist and later write transactions reuse them, MDB_APPEND included;
the file never shrinks. A page freed by transaction N is reusable from N+2 on, and only once no
reader's snapshot is older. Every write copies the pages it changes first, so at a full map a
transaction that deletes a few records commits while one that deletes thousands does not.

So the writer (writer.py, `_write_full`) keeps a reserve in the journal that new work can never
use: when a commit meets the map's (or the disk's) end, new durable work is refused, and records
that consume or remove (dequeues, deletes, delivery counts) are written in chunks small enough to
fit, with compaction deleting what they cancelled between chunks; the reserve is given up only
for them. The journal becomes writable again once there is room for the reserve and as much
again. This module holds the parts that decide nothing by themselves: the measures, the record
types that pass, and the condition with its log lines.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from .records import RecordType

log = logging.getLogger("qstore.journal")

WRITABLE, FULL, FAILED = "writable", "full", "failed"

# Records written while the journal is full: each consumes or removes what is already journaled
# (and makes garbage that compaction deletes), or is a promotion. Refusing one would leave the
# journal behind the broker: an acknowledged message would come back after a restart.
PASS_WHEN_FULL = frozenset(
    int(t)
    for t in (
        RecordType.DEQUEUE,
        RecordType.DELIVERY,
        RecordType.QUEUE_DELETE,
        RecordType.EXCHANGE_DELETE,
        RecordType.UNBIND,
        RecordType.EPOCH,
    )
)

MIN_RESERVE = 128 << 10
MAX_RESERVE = 2 << 20
# Room that records passing a full journal leave to compaction: a delete needs a few fresh pages
# (its leaf, their parents, the freelist's) and gets them back only two transactions later.
COMPACTION_MARGIN = 64 << 10
# An EIO from a commit while the filesystem has less than this free is a full disk: LMDB reports
# a short write (the disk filled during the write) as EIO, not ENOSPC.
DISK_FULL_SLACK = 1 << 20


def default_reserve(map_size: int) -> int:
    """A thirty-second of the map, at least 128 KiB and at most 2 MiB (about 25000 dequeue
    records, written while compaction frees what they cancel)."""
    return max(MIN_RESERVE, min(MAX_RESERVE, map_size // 32))


@dataclass(slots=True)
class Space:
    """The journal's room, in bytes. `used`: pages of live data (the reserve included),
    `file`: the pages the file has grown to, `disk_free`: what the filesystem has left."""

    map_size: int
    used: int
    file: int
    disk_free: int

    def headroom(self) -> int:
        """What new records may still take: within the map, and within the file plus the disk."""
        return max(0, min(self.map_size - self.used, self.file - self.used + self.disk_free))


def measure(env: lmdb.Environment, dbs: list[Any], data_dir: Path) -> Space:
    """Read the journal's room: page counts from LMDB's tree statistics, the disk's from statvfs.

    The freelist's own pages are not counted as used; nor is the reuse lag of freed pages, so
    this slightly overstates the room: it decides only when to try again, LMDB has the last word.
    """
    info = env.info()
    with env.begin() as txn:
        stats = [env.stat(), *(txn.stat(db) for db in dbs)]
    psize = stats[0]["psize"]
    pages = 2 + sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)
    file = (info["last_pgno"] + 1) * psize
    return Space(info["map_size"], pages * psize, file, disk_free(data_dir))


def disk_free(data_dir: Path) -> int:
    """Bytes the filesystem lets us write (0 if it cannot be asked)."""
    try:
        vfs = os.statvfs(data_dir)
    except OSError:
        return 0
    return vfs.f_bavail * vfs.f_frsize


def out_of_space(exc: BaseException, data_dir: Path) -> bool:
    """Whether a failed commit ran out of disk: ENOSPC, or EIO with the filesystem (nearly) full."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOSPC or "No space left" in text:
        return True
    if code == errno.EIO or "Input/output error" in text:
        return disk_free(data_dir) < DISK_FULL_SLACK
    return False


class Condition:
    """Whether the journal takes new durable work: writable, full (map or disk), or failed
    (an I/O error). Each change is logged once, in one line; `since` is on `clock`."""

    def __init__(self, name: str, clock: Any = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self.state = WRITABLE
        self.reason = ""
        self.since: float | None = None
        self.unjournaled = 0  # records that consume (dequeues...) refused since open
        self._lost_now = 0  # ... in the current spell, reported when it ends

    def full(self, reason: str, space: Space | None) -> None:
        if self.state == FULL:
            return
        self._enter(FULL, reason)
        room = f"; {_room(space)}" if space else ""
        log.warning(
            "journal %s is full (%s): new durable messages are refused until there is room%s",
            self.name,
            reason,
            room,
        )

    def failed(self, reason: str) -> None:
        if self.state == FAILED and self.reason == reason:
            return
        self._enter(FAILED, reason)
        log.error(
            "journal %s: write failed (%s): durable work is refused until a write succeeds",
            self.name,
            reason,
        )

    def writable(self, space: Space | None = None) -> None:
        if self.state == WRITABLE:
            return
        was, spell = self.state, self.clock() - (self.since or self.clock())
        self.state, self.reason, self.since = WRITABLE, "", None
        room = f"; {_room(space)}" if space else ""
        log.info("journal %s is writable again after %.1fs %s%s", self.name, spell, was, room)
        if self._lost_now:
            log.error(
                "journal %s: %d dequeue/delete records were not journaled while it was %s: "
                "those messages will be delivered again after a restart",
                self.name,
                self._lost_now,
                was,
            )
            self._lost_now = 0

    def lost(self, n: int, reason: str) -> None:
        """`n` records that consume or remove could not be journaled: loudly, the first time
        in a spell (and the total when it ends), as their messages come back after a restart."""
        if not n:
            return
        if not self._lost_now:
            log.error(
                "journal %s: %d dequeue/delete records could not be journaled (%s): those "
                "messages will be delivered again after a restart",
                self.name,
                n,
                reason,
            )
        self.unjournaled += n
        self._lost_now += n

    def _enter(self, state: str, reason: str) -> None:
        if self.since is None:
            self.since = self.clock()
        self.state, self.reason = state, reason


def _room(space: Space) -> str:
    used, size, disk = _mib(space.used), _mib(space.map_size), _mib(space.disk_free)
    return f"{used} used of a {size} map, {disk} disk free"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
