"""Group commit: one thread owns every LMDB write; appenders queue records and wait for durability.

Any number of appenders (threads, or tasks on an event loop) hand over prepared records. The writer
takes everything queued (up to a bound), writes it in one transaction with MDB_APPEND, commits with
sync on (one fsync for the lot), then wakes the waiters: a thread through its Event, an event loop
through one `call_soon_threadsafe` per loop per batch, so waking costs do not grow per record.
When more work is queued, the waiters are woken only once the next batch is written, just before
its commit: the event loop then runs their wakeups while that commit syncs (see `_deliver`).
A record is never reported before the commit that holds it has returned.
Control work (truncate, reset, compaction steps) runs on the same thread, in order with appends.

A full map or disk, and write errors: see space.py and `_write_full` (new durable work is
refused, what consumes still goes in, the journal becomes writable again by itself).

Work nobody waits on (`lazy` appends: the broker's dequeues) may be held for up to `lazy_delay`
so that it shares a commit with what follows: a consumer acknowledging one message at a time
would otherwise cost an fsync per few records. Any other job ends the wait at once. Likewise,
garbage is deleted in a transaction of its own only after `idle_compact_delay` without appends
(under load it rides in the appends' commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lmdb
from crc32c import crc32c

from .compaction import CompactionQueue
from .errors import JournalClosed, JournalError, JournalFull
from .records import (
    FIRST_VERSION,
    HEADER,
    HISTORY_VERSION,
    KEY,
    Dequeue,
    Enqueue,
    Entry,
    Prepared,
    RecordType,
)
from .space import (
    COMPACTION_MARGIN,
    PASS_WHEN_FULL,
    Condition,
    Space,
    default_reserve,
    disk_free,
    measure,
    out_of_space,
)
from .state import JournalState

log = logging.getLogger("qstore.journal")
_EPOCH = int(RecordType.EPOCH)
_HISTORY = int(RecordType.HISTORY)  # above _EPOCH: see _commit
# A record's key and the first 16 bytes of its header, which its crc32c covers (records.seal)
_KEY_HEAD = struct.Struct(">QBBHIQ").pack
_HEAD = HEADER.pack

_BUSY, _SLEEPING, _HOLDING = 0, 1, 2  # the writer: working, waiting, holding lazy jobs
Result = Any  # a list of seqs, a control job's return value, or an exception
_Written = tuple[Prepared, int, int]  # a committed record, its epoch and origin seq
Txn = lmdb.Transaction
_IO_ERRORS = (lmdb.Error, OSError)
_FULL_CHUNK = 256  # records per commit at most while full (see _write_parts)
_RESERVE = b"reserve:"
_PAGE_HEADER = 16  # an LMDB overflow page's header: a piece of this less fills one page


class Waiter:
    """Receives one job's outcome, on the writer thread."""

    def resolve(self, result: Result) -> None:
        raise NotImplementedError


class SyncWaiter(Waiter):
    __slots__ = ("_event", "_result")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._result: Result = None

    def resolve(self, result: Result) -> None:
        self._result = result
        self._event.set()

    def wait(self) -> Result:
        self._event.wait()
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result


class LogWaiter(Waiter):
    """For work nobody waits on: a failure is logged."""

    def resolve(self, result: Result) -> None:
        if isinstance(result, BaseException):
            log.error("journal job failed: %s", result)


class LoopWaiter(Waiter):
    """Runs `callback(result)` on `loop`, or resolves it if it is an asyncio Future there;
    the writer wakes each loop once per batch, whatever the number of waiters."""

    __slots__ = ("callback", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Any) -> None:
        self.loop = loop
        self.callback = callback

    def resolve(self, result: Result) -> None:  # used only for single, unbatched outcomes
        _call_on_loop(self.loop, [(self.callback, result)])


def _run_callbacks(calls: list[tuple[Any, Result]]) -> None:
    """On the loop: resolve each waiting future, or call each callback, with its outcome."""
    for target, res in calls:
        if isinstance(target, asyncio.Future):
            if target.done():  # cancelled meanwhile
                continue
            if isinstance(res, BaseException):
                target.set_exception(res)
            else:
                target.set_result(res)
            continue
        try:
            target(res)
        except Exception:  # a waiter's bug must not stop the others being woken
            log.exception("journal completion callback failed")


def _call_on_loop(loop: asyncio.AbstractEventLoop, calls: list[Any]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(_run_callbacks, calls)


@dataclass(slots=True)
class _Append:
    records: list[Prepared]
    waiter: Waiter | None
    # False for a batch of independent appends gathered on an event loop: when the journal is
    # full its dequeues may commit without the rest, each record getting its own outcome.
    atomic: bool = True
    lazy: bool = False  # nobody waits on it: it may wait up to `lazy_delay` for company


@dataclass(slots=True)
class _Control:
    fn: Callable[[Txn], Any] | None  # run in a write transaction; None: no transaction
    waiter: Waiter
    after: Callable[[Any], None] | None = None  # runs after commit, on the writer thread
    lazy: ClassVar[bool] = False  # control work is never held


class GroupCommitWriter:
    """The single writer thread of one journal."""

    def __init__(
        self,
        env: lmdb.Environment,
        db: Any,
        meta: Any,
        tracker: JournalState,
        next_seq: int,
        *,
        max_batch: int = 8192,
        max_batch_bytes: int = 32 << 20,
        compaction_batch: int = 1024,
        auto_compact: bool = True,
        reserve: int | None = None,
        lazy_delay: float = 0.010,
        lazy_limit: int = 1024,
        idle_compact_delay: float = 0.050,
        probe_interval: float = 0.25,
        name: str = "journal",
        data_dir: Path | None = None,
        commit: Callable[[Txn], None] | None = None,
    ) -> None:
        """`reserve`: bytes held back for what consumes once the journal is full (None: a
        share of the map, space.default_reserve). `probe_interval`: how often a full journal
        looks whether it has room again. `commit`: commits an append transaction (default
        LMDB's; faults.py puts a test's failing one here)."""
        self.env = env
        self.db = db
        self.meta = meta
        self.tracker = tracker
        self.compaction = CompactionQueue()
        self.next_seq = next_seq
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.compaction_batch = compaction_batch
        self.auto_compact = auto_compact
        self.reserve = default_reserve(env.info()["map_size"]) if reserve is None else reserve
        self.margin = min(COMPACTION_MARGIN, self.reserve // 2)  # what dequeues leave alone
        self.data_dir = data_dir if data_dir is not None else Path(env.path())
        self._commit_txn = commit or Txn.commit
        self.lazy_delay = lazy_delay
        self.lazy_limit = lazy_limit
        self.idle_compact_delay = idle_compact_delay
        self.full = False  # new durable work is refused (the map or the disk is full)
        self.condition = Condition(name)
        self.probe_interval = probe_interval
        self._next_probe = 0.0
        self._full_headroom = 0  # Space.headroom() when it became full
        self._failing = False  # the last append commit failed with an I/O error
        # The reserve: one-page values (no run of free pages needed to put one back), keys
        # `reserve:` + a 4-byte number; pieces 0..held-1 are in the journal.
        self._piece = env.stat()["psize"] - _PAGE_HEADER
        self._pieces = -(-self.reserve // self._piece)
        self._held = -1  # not known until _ensure_reserve
        self._ticked = False  # see _make_room
        self._stuck_at = -1  # `commits` when a compaction step last failed for want of room
        self.commits = 0
        # Lazy holding: the leading jobs already seen to be lazy, their records, since when.
        self._lazy_jobs = 0
        self._lazy_records = 0
        self._lazy_since = 0.0
        self._held = 0  # records of lazy jobs submitted during the current hold
        self._last_write = 0.0
        self._jobs: deque[_Append | _Control] = deque()
        # Released when the writer has a reason to look again (a binary semaphore: waking it
        # costs the loop one C call, where a Condition's notify costs a few microseconds).
        self._wakeup = threading.Lock()
        self._wakeup.acquire()
        self._closing = False
        self._idle = _BUSY
        # Outcomes of the last commit not yet handed to their waiters (see _deliver).
        self._outcomes: list[tuple[Waiter, Result]] = []
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)

    def start(self) -> None:
        if not self._ensure_reserve():  # full when it was closed: what is left of the reserve
            with self.env.begin(db=self.meta) as txn:
                self._held = next(
                    i for i in range(self._pieces + 1) if txn.get(_reserve_key(i)) is None
                )
            self._set_full("no room for its reserve")
        self._thread.start()

    # -- called from any thread -------------------------------------------------------------

    def submit(self, job: _Append | _Control) -> None:
        # Lock-free unless the writer sleeps: deque.append is atomic, and the writer sets
        # `_idle` before its last look at the queue, so a job appended after that look sees it.
        if self._closing:
            job.waiter.resolve(JournalClosed("the journal is closed"))
            return
        self._jobs.append(job)
        idle = self._idle
        if idle == _SLEEPING:
            self.wake()
        elif idle == _HOLDING:
            # A lazy job joins the hold (the writer's timeout covers it) unless it fills it.
            if job.lazy:
                self._held += len(job.records)  # type: ignore[union-attr]
                if self._held < self.lazy_limit:
                    return
            self.wake()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # not held: a wake-up is pending already
            self._wakeup.release()

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._closing = True
        self.wake()
        if self._thread.is_alive():
            self._thread.join()
        while self._jobs:  # submitted while the thread was finishing
            self._jobs.popleft().waiter.resolve(JournalClosed("the journal is closed"))

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._idle = _SLEEPING  # set before the look at the queue: see submit
            while (wait := self._wait()) != 0.0:
                if wait is not None and self._jobs:
                    self._held = self._lazy_records
                    self._idle = _HOLDING  # only a job somebody waits for need wake us
                self._wakeup.acquire(timeout=-1 if wait is None else wait)
                self._idle = _SLEEPING
            self._idle = _BUSY
            if not self._jobs and self._closing:
                self._deliver()  # nothing is left behind (already done after each write)
                return
            batch = self._take()
            try:
                if batch is None:
                    self._deliver()
                    if self._compaction_due():
                        self._compact_step()
                    if self.full and time.monotonic() >= self._next_probe:
                        self._probe()
                elif isinstance(batch, _Control):
                    self._deliver()  # what was submitted before is handled before it
                    self._control(batch)
                else:
                    self._write(batch)
                    self._last_write = time.monotonic()
            except Exception:  # keep the writer alive: waiters got their error already
                log.exception("journal writer: unexpected error")
            if not self._jobs or self._lazy_hold() > 0.0:
                self._deliver()  # no next commit to overlap with: wake the waiters now

    def _wait(self) -> float | None:
        """How long to sleep before the next step: 0.0 for now, None until woken."""
        if self._closing:
            return 0.0
        if self._jobs:
            return self._lazy_hold()
        if self._compaction_due():
            if self.full:  # room is what new work waits for: no delay
                return 0.0
            return max(0.0, self._last_write + self.idle_compact_delay - time.monotonic())
        if self.full:  # look again for room now and then (a disk may be freed by others)
            return max(0.0, self._next_probe - time.monotonic())
        return None

    def _lazy_hold(self) -> float:
        """How much longer the queued jobs may wait: 0.0 unless every one is lazy, they hold
        fewer than `lazy_limit` records and the first came less than `lazy_delay` ago.
        Only the writer pops jobs, so the leading ones seen before need no second look."""
        jobs = self._jobs
        n = len(jobs)
        if n == 0 or not self.lazy_delay:
            return 0.0
        if self._lazy_jobs == 0:
            self._lazy_since = time.monotonic()
        for i in range(self._lazy_jobs, n):
            job = jobs[i]
            if not job.lazy:
                return 0.0
            self._lazy_records += len(job.records)  # type: ignore[union-attr]
            self._lazy_jobs = i + 1
        if self._lazy_records >= self.lazy_limit:
            return 0.0
        return max(0.0, self._lazy_since + self.lazy_delay - time.monotonic())

    def _compaction_due(self) -> bool:
        return self.auto_compact and self._stuck_at != self.commits and self.compaction.ready()

    def _take(self) -> list[_Append] | _Control | None:
        jobs = self._jobs
        self._lazy_jobs = self._lazy_records = 0
        if not jobs:
            return None
        if isinstance(jobs[0], _Control):
            return jobs.popleft()  # type: ignore[return-value]
        batch: list[_Append] = []
        n = size = 0
        while jobs and isinstance(jobs[0], _Append) and n < self.max_batch:
            job = jobs.popleft()
            batch.append(job)  # type: ignore[arg-type]
            recs = job.records
            n += len(recs)
            size += len(recs[0].payload) if len(recs) == 1 else sum(len(p.payload) for p in recs)
            if size >= self.max_batch_bytes:
                break
        return batch

    def _write(self, batch: list[_Append]) -> None:
        if self.full and not self._probe():
            self._write_full(batch)
            return
        try:
            try:
                written = self._commit(batch, compact=self.auto_compact)
            except JournalFull:
                # Deleting garbage first frees pages that a later transaction may reuse.
                while self._compact_step():
                    pass
                written = self._commit(batch, compact=False)
        except JournalFull as exc:
            if all(p.type in PASS_WHEN_FULL for job in batch for p in job.records):
                # Only what consumes, too much for one transaction: written in chunks. New
                # work is refused only if that took from the reserve.
                self._write_full(batch)
                if not (self.full or self._ensure_reserve()):
                    self._set_full(exc.reason)
                return
            self._set_full(exc.reason)
            self._write_full(batch)
            return
        except JournalError as exc:
            self._deliver()
            self._write_failed(batch, exc)
            return
        if self._failing:
            self._failing = False
            self.condition.writable()
        first = self.next_seq - len(written)
        self._after_commit(first, written)
        self._outcomes = _seqs_per_job(batch, first)  # delivered by the next commit or _run

    def _commit(self, batch: list[_Append], compact: bool = False) -> list[_Written]:
        """Write and fsync one transaction (MapFull/ENOSPC -> JournalFull); return each record
        with the epoch and origin seq it was given, in order.

        The records take consecutive seqs up to the new `next_seq - 1`. Per record, nothing is
        built here but its key, its value and a short-lived tuple: no Entry, whose numbers
        the cyclic garbage collector would have counted (the GIL is shared with the event loop
        that wakes the waiters, so the writer's collections slow both).

        With `compact`, a bounded batch of garbage is deleted in the same transaction, so that
        compaction keeps up under steady load without fsyncs of its own.
        """
        seq = self.next_seq
        epoch = self.tracker.epoch
        origin = self.tracker.max_origin
        written: list[_Written] = []
        garbage = self.compaction.take(self.compaction_batch) if compact else []
        upgraded = False
        try:
            txn = self.env.begin(write=True, db=self.db)
            try:
                put, keep = txn.put, written.append
                for job in batch:
                    for p in job.records:
                        if p.origin is None:
                            origin += 1
                            o = origin
                        else:
                            o = p.origin
                            if o > origin:
                                origin = o
                        v = FIRST_VERSION  # records.record_version, inlined
                        if p.type >= _EPOCH:  # one test on the hot path for both rare types
                            if p.type == _EPOCH:
                                epoch = p.record.number  # type: ignore[union-attr]
                            else:  # a history: the numbering goes on from its position
                                epoch, origin, v = p.epoch or 0, o, HISTORY_VERSION
                                if not upgraded:
                                    upgraded = self._upgrade_format(txn)
                        e = epoch if p.epoch is None else p.epoch
                        # records.seal, inlined: the key and the header in one pack, no tuple
                        kh = _KEY_HEAD(seq, v, p.type, p.flags, e, o)
                        payload = p.payload
                        crc = crc32c(payload, crc32c(kh))
                        put(
                            kh[:8],
                            _HEAD(v, p.type, p.flags, e, o, crc) + payload,
                            append=True,
                        )
                        keep((p, e, o))
                        seq += 1
                delete = txn.delete
                for s in garbage:
                    delete(KEY.pack(s))
            except BaseException:
                txn.abort()
                raise
            self._deliver()  # the last commit's waiters wake while this one syncs
            self._commit_txn(txn)
        except _IO_ERRORS as exc:
            self.compaction.restore(garbage)
            raise self._error(exc) from None
        self.compaction.done(len(garbage))
        self.next_seq = seq
        self.commits += 1
        return written

    def _upgrade_format(self, txn: Txn) -> bool:
        """The journal's `format` becomes the history record's version with its first one, in
        the same transaction: older code then refuses the journal at open, in one line, instead
        of stopping at that record as if it were damaged."""
        fmt = txn.get(b"format", db=self.meta)
        if fmt is None or int(fmt) < HISTORY_VERSION:
            txn.put(b"format", str(HISTORY_VERSION).encode(), db=self.meta)
        return True

    def _error(self, exc: BaseException) -> JournalError:
        """What a failed write transaction means: the map or the disk is full, or an I/O error."""
        if isinstance(exc, lmdb.MapFullError):
            return JournalFull(f"LMDB map of {_mib(self.env.info()['map_size'])} reached")
        if out_of_space(exc, self.data_dir):  # LMDB says EIO where the disk filled mid-write
            return JournalFull(f"disk full, {_mib(disk_free(self.data_dir))} free ({exc})")
        return JournalError(f"journal write failed: {exc}")

    # -- a full journal -----------------------------------------------------------------------
    #
    # Full (a commit met the map's or the disk's end with the reserve held), the journal refuses
    # new durable work (enqueues, declares, binds) and writes what consumes or removes
    # (PASS_WHEN_FULL): in chunks that halve until they fit, compaction deleting what each
    # chunk cancelled, the reserve given up only when nothing else makes room. It becomes
    # writable again once `_probe` finds room for the reserve and as much again.

    def _set_full(self, reason: str) -> None:
        self.full = True
        self._next_probe = time.monotonic() + self.probe_interval
        space = self.space()
        # What the page counts call room when LMDB has none (freed pages it cannot reuse yet,
        # its freelist's own): `_probe` wants more than this, not a figure of its own.
        self._full_headroom = space.headroom()
        self.condition.full(reason, space)

    def _full_error(self) -> JournalFull:
        reason = self.condition.reason or "no room left"
        until = "the disk has room again" if reason.startswith("disk") else "consumers drain it"
        return JournalFull(reason, f"new durable messages are refused until {until}")

    def _write_full(self, batch: list[_Append]) -> None:
        """Refuse new work; write what consumes, record by record where a job allows it."""
        self._deliver()
        refused = self._full_error()
        parts: list[_Append] = []  # what is written, in order: whole atomic jobs, or records
        split: list[tuple[_Append, list[_Append | None]]] = []  # non-atomic job -> its parts
        outcomes: list[tuple[Waiter, Result]] = []
        for job in batch:
            if job.atomic:
                if all(p.type in PASS_WHEN_FULL for p in job.records):
                    parts.append(job)
                else:
                    outcomes.append((job.waiter, refused))  # type: ignore[arg-type]
                continue
            own: list[_Append | None] = []
            for p in job.records:
                part = _Append([p], None) if p.type in PASS_WHEN_FULL else None
                if part is not None:
                    parts.append(part)
                own.append(part)
            split.append((job, own))
        got = self._write_parts(parts) if parts else {}
        for job in batch:
            if job.atomic and id(job) in got:
                outcomes.append((job.waiter, got[id(job)]))  # type: ignore[arg-type]
        for job, own in split:  # per record (a gathered job): its seq or its error
            res = [refused if o is None else _one(got[id(o)]) for o in own]
            outcomes.append((job.waiter, res))  # type: ignore[arg-type]
        self._resolve(outcomes)

    def _write_parts(self, parts: list[_Append]) -> dict[int, Result]:
        """Commit `parts` in order, in chunks that fit; return each part's seqs or error.

        Each chunk leaves `margin` bytes to compaction: LMDB reuses a page freed by the last
        transaction only after the next one, so a map used to its last page takes no further
        transaction at all, not even the delete that would make room.
        """
        got: dict[int, Result] = {}
        i, chunk = 0, min(len(parts), _FULL_CHUNK)
        while i < len(parts):
            if self.margin and self.space().headroom() < self.margin:
                if self._make_room():
                    continue
                return self._unwritten(parts[i:], got, self._full_error())
            take = parts[i : i + chunk]
            try:
                written = self._commit(take)
            except JournalFull as exc:
                if chunk > 1:
                    chunk = (chunk + 1) // 2
                    continue
                if self._make_room():
                    continue
                return self._unwritten(parts[i:], got, exc)
            except JournalError as exc:
                self._failing = True
                self.condition.failed(str(exc))
                return self._unwritten(parts[i:], got, exc)
            self._ticked = False
            first = self.next_seq - len(written)
            self._after_commit(first, written)
            for part, (_, seqs) in zip(take, _seqs_per_job(take, first), strict=True):
                got[id(part)] = seqs
            i += len(take)
            chunk = min(_FULL_CHUNK, chunk * 2)
            if self.auto_compact:
                self._compact_step()  # deletes what that chunk cancelled: room for the next
        return got

    def _unwritten(
        self, parts: list[_Append], got: dict[int, Result], exc: JournalError
    ) -> dict[int, Result]:
        self.condition.lost(sum(len(p.records) for p in parts), str(exc))
        exc.reported = True
        for part in parts:
            got[id(part)] = exc
        return got

    def _make_room(self) -> bool:
        """Commit something that lets the next try fit: a compaction step, the reserve's
        release, or (once per try) a small write so that pages freed by the last transaction
        become reusable (LMDB reuses them two transactions later). False: nothing helped."""
        if self._compact_step():
            return True
        if self._held > 0:
            return self._release_reserve()
        return self._tick()

    def _tick(self) -> bool:
        """Once until the next commit: a small write, after which the pages that the last
        transaction freed are reusable (LMDB keeps them for one more transaction)."""
        if self._ticked:
            return False
        self._ticked = True
        return self._meta_txn(lambda txn: txn.put(b"tick", _now()))

    def _release_reserve(self) -> bool:
        """Give up part of the reserve: a few pieces first, then as many again each time.
        Freeing a piece costs a transaction fresh pages; the first needs only a few."""
        held = self._held
        n = min(held, max(8, self._pieces - held))

        def drop(txn: Txn) -> None:
            for i in range(held - n, held):
                txn.delete(_reserve_key(i))

        if not self._meta_txn(drop):
            return False
        self._held = held - n
        self._stuck_at = -1  # compaction may fit again
        if held == self._pieces:
            log.warning(
                "journal %s: using its %s reserve for dequeues and compaction",
                self.condition.name,
                _mib(self.reserve),
            )
        return True

    def _meta_txn(self, fn: Callable[[Txn], Any]) -> bool:
        try:
            with self.env.begin(write=True, db=self.meta) as txn:
                fn(txn)
        except _IO_ERRORS:
            return False
        return True

    def _probe(self) -> bool:
        """Full: is there room again for the reserve and as much again, beyond what there
        seemed to be when it filled? Then take new work (return True). Cheap (LMDB's page
        counts and a statvfs): a full journal asks before each batch, and every
        `probe_interval` when idle."""
        self._next_probe = time.monotonic() + self.probe_interval
        space = self.space()
        need = self._full_headroom + self.reserve + (self._pieces - self._held) * self._piece
        if space.headroom() < need or not self._ensure_reserve():
            return False
        self.full = self._failing = False
        self._stuck_at = -1
        self.condition.writable(self.space())
        return True

    @property
    def reserve_held(self) -> int:
        """Bytes of the reserve in the journal now (less while full)."""
        return min(self.reserve, max(0, self._held) * self._piece)

    def space(self) -> Space:
        return measure(self.env, [self.db, self.meta], self.data_dir)

    def _write_failed(self, batch: list[_Append], exc: JournalError) -> None:
        """An I/O error (not a full map or disk): every job of the batch fails; the next batch
        tries again. What consumed is lost from the journal, said loudly (condition.lost)."""
        self._failing = True
        self.condition.failed(str(exc))
        self.condition.lost(
            sum(1 for job in batch for p in job.records if p.type in PASS_WHEN_FULL), str(exc)
        )
        exc.reported = True
        self._resolve([(job.waiter, exc) for job in batch])  # type: ignore[misc]

    def _after_commit(self, first: int, written: list[_Written]) -> None:
        """The tracker learns the committed records (seqs from `first`), compaction their units."""
        tracker, add = self.tracker, self.compaction.add
        apply, enqueue, dequeued = tracker.apply, tracker.enqueue, tracker.dequeued
        seq = first
        for p, e, o in written:
            r = p.record
            cls = r.__class__
            if cls is Enqueue:  # the hot pair, without the dispatch on record type
                unit = enqueue(
                    seq, e, o, r.queue, r.msgid, r.body, r.priority, r.expiry, r.delivery_count
                )
            elif cls is Dequeue:
                unit = dequeued(seq, e, o, r.queue, r.msgid)  # type: ignore[attr-defined]
            else:
                unit = apply(Entry(seq, e, o, p.flags, r))
            if unit:
                add(unit, seq)
            seq += 1
        if seq > first:  # compaction keeps the newest record (see compaction.py)
            self.compaction.newest = seq - 1

    def _control(self, job: _Control) -> None:
        try:
            result = None
            if job.fn is not None:
                with self.env.begin(write=True, db=self.db) as txn:
                    result = job.fn(txn)
            if job.after:
                job.after(result)
        except lmdb.MapFullError:
            result = JournalFull("LMDB map size reached")
        except Exception as exc:
            result = exc
        job.waiter.resolve(result)

    def _compact_step(self) -> int:
        """Delete one batch of garbage; return how many records went.

        Even a delete copies pages first: near a full map a large batch does not fit where a
        small one does, so a batch that fails for room is retried smaller, down to one record.
        """
        n = self.compaction_batch
        while True:
            seqs = self.compaction.take(n)
            if not seqs:
                return 0
            try:
                with self.env.begin(write=True, db=self.db) as txn:
                    for s in seqs:
                        txn.delete(KEY.pack(s))
            except _IO_ERRORS as exc:
                self.compaction.restore(seqs)
                if not isinstance(self._error(exc), JournalFull):
                    log.error("journal %s: compaction failed: %s", self.condition.name, exc)
                elif n > 1:
                    n = max(1, n // 8)
                    continue
                elif self._tick():
                    continue
                self._stuck_at = self.commits  # until the next commit changes something
                return 0
            self._ticked = False
            self.compaction.done(len(seqs))
            return len(seqs)

    def _ensure_reserve(self) -> bool:
        """Hold back `reserve` bytes of the journal that new work cannot use (see _write_full).

        Return whether the whole reserve is held.
        """
        if self._held == self._pieces:
            return True
        filler = bytes(self._piece)
        try:
            with self.env.begin(write=True, db=self.meta, buffers=True) as txn:
                txn.delete(b"reserve")  # the one block of older journals
                for i in range(self._pieces):
                    key = _reserve_key(i)
                    if txn.get(key) is None:
                        txn.put(key, filler)
                with txn.cursor() as cur:  # pieces beyond a smaller reserve than before
                    cur.set_range(_reserve_key(self._pieces))
                    while cur.key()[: len(_RESERVE)] == _RESERVE and cur.delete():
                        pass
        except _IO_ERRORS:
            return False
        self._held = self._pieces
        return True

    def _deliver(self) -> None:
        """Hand the last commit's outcomes to their waiters.

        Pipelining: a commit's outcomes wait while the writer puts the next batch, and go just
        before that batch's commit, which releases the GIL for the fsync. Woken earlier, the
        event loop would take the GIL at the writer's first put (py-lmdb releases it in every
        put) and keep it while it runs its wakeups, delaying the next fsync by as much; this
        way the loop's work overlaps the fsync. `_run` delivers at once when nothing follows.
        """
        if self._outcomes:
            outcomes, self._outcomes = self._outcomes, []
            try:
                self._resolve(outcomes)
            except Exception:  # not the next commit's problem
                log.exception("journal writer: waking waiters failed")

    def _resolve(self, results: list[tuple[Waiter, Result]]) -> None:
        per_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        last_loop: Any = None
        calls: list[Any] = []
        for waiter, res in results:
            if waiter.__class__ is LoopWaiter:
                loop = waiter.loop  # type: ignore[attr-defined]
                if loop is not last_loop:
                    calls = per_loop.setdefault(loop, [])
                    last_loop = loop
                calls.append((waiter.callback, res))  # type: ignore[attr-defined]
            else:
                waiter.resolve(res)
        for loop, calls in per_loop.items():
            _call_on_loop(loop, calls)


def _seqs_per_job(batch: list[_Append], first: int) -> list[tuple[Waiter, Result]]:
    """Each job's seqs: a commit gives its records consecutive seqs from `first`, in order."""
    results = []
    for job in batch:
        k = len(job.records)
        results.append((job.waiter, [first] if k == 1 else list(range(first, first + k))))
        first += k
    return results


def _one(result: Result) -> Result:
    """A single record's outcome from its part's: its seq, or the error."""
    return result if isinstance(result, BaseException) else result[0]


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def _reserve_key(i: int) -> bytes:
    return _RESERVE + i.to_bytes(4, "big")


def _now() -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
