"""Group commit: one thread owns every LMDB write; appenders queue records and wait for durability.

Any number of appenders (threads, or tasks on an event loop) hand over prepared records. The writer
takes everything queued (up to a bound), writes it in one transaction with MDB_APPEND, commits with
sync on (one fsync for the lot), then wakes the waiters: a thread through its Event, an event loop
through one `call_soon_threadsafe` per loop per batch, so waking costs do not grow per record.
When more work is queued, the waiters are woken only once the next batch is written, just before
its commit: the event loop then runs their wakeups while that commit syncs (see `_deliver`).
A record is never reported before the commit that holds it has returned.
Control work (truncate, reset, compaction steps) runs on the same thread, in order with appends.

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
from typing import Any, ClassVar

import lmdb
from crc32c import crc32c

from .compaction import CompactionQueue
from .errors import JournalClosed, JournalError, JournalFull
from .records import FORMAT_VERSION, HEADER, KEY, Dequeue, Enqueue, Entry, Prepared, RecordType
from .state import JournalState

log = logging.getLogger("qstore.journal")
_EPOCH = int(RecordType.EPOCH)
_DEQUEUE = int(RecordType.DEQUEUE)
# A record's key and the first 16 bytes of its header, which its crc32c covers (records.seal)
_KEY_HEAD = struct.Struct(">QBBHIQ").pack
_HEAD = HEADER.pack

_BUSY, _SLEEPING, _HOLDING = 0, 1, 2  # the writer: working, waiting, holding lazy jobs
Result = Any  # a list of seqs, a control job's return value, or an exception
_Written = tuple[Prepared, int, int]  # a committed record, its epoch and origin seq
Txn = lmdb.Transaction


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
        reserve: int = 64 << 10,
        lazy_delay: float = 0.010,
        lazy_limit: int = 1024,
        idle_compact_delay: float = 0.050,
        name: str = "journal",
    ) -> None:
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
        self.reserve = reserve
        self.lazy_delay = lazy_delay
        self.lazy_limit = lazy_limit
        self.idle_compact_delay = idle_compact_delay
        self.full = False
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
        self._ensure_reserve()
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
                    self._compact_step()
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
        return self.auto_compact and self.compaction.ready()

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
        if self.full and not self._ensure_reserve():
            # The reserve went to dequeues: until deleting garbage gives it back, new work would
            # spend the room that dequeues need, so only they pass.
            while self._compact_step():
                pass
            if not self._ensure_reserve():
                self._write_when_full(batch, JournalFull("journal is full (LMDB map size reached)"))
                return
        try:
            try:
                written = self._commit(batch, compact=self.auto_compact)
            except JournalFull:
                # Deleting garbage first frees pages that the next transaction may reuse.
                while self._compact_step():
                    pass
                written = self._commit(batch, compact=False)
        except JournalFull as exc:
            self._write_when_full(batch, exc)
            return
        except lmdb.Error as exc:
            self._deliver()
            err = JournalError(f"journal write failed: {exc}")
            self._resolve([(job.waiter, err) for job in batch])
            return
        self.full = False
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
                        if p.type == _EPOCH:
                            epoch = p.record.number  # type: ignore[union-attr]
                        e = epoch if p.epoch is None else p.epoch
                        # records.seal, inlined: the key and the header in one pack, no tuple
                        kh = _KEY_HEAD(seq, FORMAT_VERSION, p.type, p.flags, e, o)
                        payload = p.payload
                        crc = crc32c(payload, crc32c(kh))
                        put(
                            kh[:8],
                            _HEAD(FORMAT_VERSION, p.type, p.flags, e, o, crc) + payload,
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
            txn.commit()
        except lmdb.MapFullError:
            self.compaction.restore(garbage)
            raise JournalFull("journal is full (LMDB map size reached)") from None
        except lmdb.Error as exc:
            self.compaction.restore(garbage)
            if "No space" in str(exc) or "ENOSPC" in str(exc):
                raise JournalFull(f"journal is full (disk): {exc}") from None
            raise
        self.compaction.done(len(garbage))
        self.next_seq = seq
        self.commits += 1
        return written

    def _write_when_full(self, batch: list[_Append], exc: JournalFull) -> None:
        """Refuse new work but let dequeues through, using the reserve if need be."""
        self._deliver()
        self.full = True
        dequeues: list[_Append] = []  # what may still be written
        refused: list[tuple[Waiter, Result]] = []
        mixed: list[tuple[_Append, _Append]] = []  # (non-atomic job, its dequeues)
        for job in batch:
            if _only_dequeues(job):
                dequeues.append(job)
            elif not job.atomic and any(p.type == _DEQUEUE for p in job.records):
                part = _Append([p for p in job.records if p.type == _DEQUEUE], None)
                mixed.append((job, part))
                dequeues.append(part)
            else:
                refused.append((job.waiter, exc))  # type: ignore[arg-type]
        self._resolve(refused)
        if not dequeues:
            for job, _ in mixed:
                self._resolve([(job.waiter, exc)])  # type: ignore[list-item]
            return
        log.warning("journal full: releasing the reserve so that dequeues can be journaled")
        try:
            with self.env.begin(write=True, db=self.meta) as txn:
                txn.delete(b"reserve")
            written = self._commit(dequeues)
        except (JournalFull, lmdb.Error) as again:
            err = JournalFull(str(again))
            self._resolve([(job.waiter, err) for job in dequeues if job.waiter])
            self._resolve([(job.waiter, err) for job, _ in mixed])  # type: ignore[misc]
            return
        first = self.next_seq - len(written)
        self._after_commit(first, written)
        results = _seqs_per_job(dequeues, first)
        self._resolve([r for r in results if r[0] is not None])
        seq_of = {id(part): seqs for part, (_, seqs) in zip(dequeues, results, strict=True)}
        for job, part in mixed:  # per record: its seq, or the refusal
            got = iter(seq_of[id(part)])
            out = [next(got) if p.type == _DEQUEUE else exc for p in job.records]
            self._resolve([(job.waiter, out)])  # type: ignore[list-item]

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
            result = JournalFull("journal is full (LMDB map size reached)")
        except Exception as exc:
            result = exc
        job.waiter.resolve(result)

    def _compact_step(self) -> int:
        seqs = self.compaction.take(self.compaction_batch)
        if not seqs:
            return 0
        try:
            with self.env.begin(write=True, db=self.db) as txn:
                for s in seqs:
                    txn.delete(KEY.pack(s))
        except lmdb.Error:  # even a delete copies pages: a full map can refuse it
            self.compaction.restore(seqs)
            return 0
        self.compaction.done(len(seqs))
        self._ensure_reserve()
        return len(seqs)

    def _ensure_reserve(self) -> bool:
        """Hold back some map space for dequeues once the journal is full (see _write_when_full).

        Return whether the reserve is held.
        """
        if not self.reserve:
            return True
        try:
            with self.env.begin(write=True, db=self.meta) as txn:
                if txn.get(b"reserve") is None:
                    txn.put(b"reserve", bytes(self.reserve))
        except lmdb.MapFullError:
            return False
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


def _only_dequeues(job: _Append) -> bool:
    return all(p.type == RecordType.DEQUEUE for p in job.records)
