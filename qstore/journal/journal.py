"""`Journal`: a broker's append-only LMDB journal, opened for writing.

Opening takes the data directory's lock, creates or checks the metadata (node id, format version),
scans the records once to learn what later compaction may delete, and starts the writer thread.
Everything that writes goes through that thread; reads (replay, entries) come from `JournalReader`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import uuid
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import JournalError, NotAJournal, UnsupportedFormat
from .lock import DataDirLock
from .loopbatch import LoopBatcher
from .modes import PRIVATE_DIR
from .reader import META_DB, RECORDS_DB, JournalReader, open_env
from .records import (
    COMPRESS_THRESHOLD,
    FIRST_VERSION,
    FLAG_REPLICA,
    FORMAT_VERSION,
    KEY,
    Epoch,
    Prepared,
    Record,
    prepare,
    read_header,
)
from .state import JournalState
from .writer import GroupCommitWriter, LogWaiter, LoopWaiter, SyncWaiter, Txn, _Append, _Control

log = logging.getLogger("qstore.journal")

DEFAULT_MAP_SIZE = 16 << 30


class Journal(JournalReader):
    """The journal of one data directory, with its single writer."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        compress_threshold: int = COMPRESS_THRESHOLD,
        compaction_batch: int = 1024,
        auto_compact: bool = True,
        reserve: int | None = None,
        compaction_horizon: int | None = None,
        commit: Callable[[Txn], None] | None = None,
    ) -> None:
        """`compaction_horizon`: as `set_compaction_horizon`, but in force before the writer
        starts (set later, background compaction could already have crossed it).
        `reserve`: bytes held back for dequeues and compaction once the journal is full (None:
        a share of the map, space.default_reserve). `commit`: for tests only (faults.py)."""
        path = Path(data_dir)
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)  # only when we create it
        self._lock = DataDirLock(path)
        self._lock.acquire()
        try:
            env = open_env(path, readonly=False, map_size=map_size)
            env.open_db(RECORDS_DB)
            env.open_db(META_DB)
            super().__init__(env, path)
            self._init_meta()
            tracker, garbage = self._scan()
        except BaseException:
            self._lock.release()
            raise
        self.compress_threshold = compress_threshold
        last = self.seq_range()
        high = self.meta_get("high-water")
        next_seq = max(last[1] if last else 0, KEY.unpack(high)[0] if high else 0) + 1
        self.writer = GroupCommitWriter(
            self.env,
            self.records,
            self.meta,
            tracker,
            next_seq,
            compaction_batch=compaction_batch,
            auto_compact=auto_compact,
            reserve=reserve,
            name=path.name,
            data_dir=path,
            commit=commit,
        )
        # What the open-time scan found cancelled is compaction's first work.
        self._queue_existing_garbage(tracker, garbage)
        self.writer.compaction.horizon = compaction_horizon
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBatcher] = (
            weakref.WeakKeyDictionary()
        )
        self._batcher: LoopBatcher | None = None  # the last loop's, looked up without the dict
        self.writer.start()
        self._closed = False

    def _init_meta(self) -> None:
        with self.env.begin(write=True, db=self.meta) as txn:
            fmt = txn.get(b"format")
            if fmt is None:
                if txn.stat(self.records)["entries"]:
                    raise NotAJournal(f"{self.data_dir}: journal has records but no metadata")
                # the version of what it holds: the writer raises it with the first record of
                # a later version (older code then refuses the journal at open, clearly)
                txn.put(b"format", str(FIRST_VERSION).encode())
                txn.put(b"node-id", uuid.uuid4().bytes)
                txn.put(b"created", datetime.now(UTC).isoformat().encode())
            elif int(fmt) > FORMAT_VERSION:
                raise UnsupportedFormat(
                    f"{self.data_dir}: journal format {int(fmt)} is newer than this qstore reads"
                )

    def _scan(self) -> tuple[JournalState, list[tuple[list[int], int]]]:
        """Replay without bodies; also return each cancelled unit with the seq that cancelled it.

        Compaction needs the canceller to honour its horizon (it is not always in the unit).
        """
        garbage: list[tuple[list[int], int]] = []
        tracker = self.replay(
            keep_bodies=False, garbage=lambda unit, seq: garbage.append((unit, seq))
        )
        return tracker, garbage

    def _queue_existing_garbage(
        self, tracker: JournalState, garbage: list[tuple[list[int], int]]
    ) -> None:
        comp = self.writer.compaction
        comp.newest = tracker.last_seq  # compaction keeps the newest record (see compaction.py)
        for unit, canceller in garbage:
            comp.add(unit, canceller)

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> JournalState:
        """The writer's body-less state; read it only from the writer's point of view."""
        return self.writer.tracker

    @property
    def epoch(self) -> int:
        return self.writer.tracker.epoch

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, origin seq) of the last durable event."""
        return self.writer.tracker.position

    @property
    def last_seq(self) -> int:
        return self.writer.next_seq - 1

    @property
    def full(self) -> bool:
        return self.writer.full

    def status(self) -> dict[str, Any]:
        """The journal's condition and room, for management and qstore-stat: `state` is
        writable, full or failed (`reason` says why), sizes in bytes."""
        w = self.writer
        space = w.space()
        cond = w.condition
        return {
            "state": cond.state,
            "reason": cond.reason,
            "used": space.used,
            "map-size": space.map_size,
            "file-size": space.file,
            "disk-free": space.disk_free,
            "reserve": w.reserve,
            "reserve-held": w.reserve_held,
            "unjournaled": cond.unjournaled,
        }

    @property
    def commits(self) -> int:
        return self.writer.commits

    @property
    def compaction_pending(self) -> int:
        return self.writer.compaction.pending

    def set_compaction_horizon(self, seq: int | None) -> None:
        """Keep records a truncate at or after `seq` may need; None lifts the limit."""
        self.writer.compaction.horizon = seq
        self.writer.wake()

    # -- appending --------------------------------------------------------------------------

    def append(self, record: Record, **kw: Any) -> int:
        """Append one record; return its seq once it is durable (fsync'd)."""
        return self.append_many([record], **kw)[0]

    def append_many(
        self,
        records: Iterable[Record],
        *,
        epoch: int | None = None,
        origin: int | None = None,
        replica: bool = False,
    ) -> list[int]:
        """Append records in order, durably, in one commit; return their seqs.

        `epoch`/`origin` default to the current epoch and the next origin seq; a backup passes
        the primary's. `origin` applies to the first record, the others follow it.
        """
        waiter = SyncWaiter()
        self.writer.submit(_Append(self._prepared(records, epoch, origin, replica), waiter))
        return waiter.wait()

    def _prepared(
        self, records: Iterable[Record], epoch: int | None, origin: int | None, replica: bool
    ) -> list[Any]:
        out = []
        for i, r in enumerate(records):
            o = None if origin is None else origin + i
            out.append(
                prepare(
                    r, epoch=epoch, origin=o, replica=replica, threshold=self.compress_threshold
                )
            )
        return out

    def submit(
        self,
        records: Iterable[Record],
        callback: Any,
        *,
        epoch: int | None = None,
        origin: int | None = None,
        replica: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Queue records without waiting; `callback(seqs or exception)` runs on the event loop.

        The broker's path: one callback per delivery, woken in batches with the commit.
        """
        loop = loop or asyncio.get_running_loop()
        prepared = self._prepared(records, epoch, origin, replica)
        self.writer.submit(_Append(prepared, LoopWaiter(loop, callback)))

    def submit_one(
        self,
        record: Record,
        target: Any,
        *,
        epoch: int | None = None,
        origin: int | None = None,
        replica: bool = False,
        payload: bytes | memoryview | None = None,
        lazy: bool = False,
    ) -> None:
        """Queue one record from the running event loop; `target` is a Future of that loop
        (it gets the seq) or a callable given the seq or the error, called on the loop.
        `payload`: the record already packed (`record.pack()`), if the caller has it.
        `lazy`: nobody waits for it soon, so its commit may wait up to the writer's
        `lazy_delay` to be shared with later records (writer.py).

        Appends made in the same loop turn travel to the writer as one job (see loopbatch.py).
        """
        loop = asyncio.get_running_loop()
        batcher = self._batcher
        if batcher is None or batcher.loop is not loop:  # one loop in a broker: rarely taken
            batcher = self._loop_batcher()
        batcher.add(
            prepare(record, epoch, origin, replica, self.compress_threshold, payload), target, lazy
        )

    def submit_batch(
        self,
        entries: Iterable[tuple[Record, int, int, bytes | memoryview | None]],
        target: Any,
        *,
        replica: bool = False,
    ) -> None:
        """Queue records from the running event loop as one job, in order after what
        `submit_one` queued before: each entry is (record, epoch, origin, its payload if packed
        already); `target` (as for submit_one) gets their seqs once they are durable, or the error.
        One outcome for many records: what a backup applying a snapshot needs."""
        threshold = self.compress_threshold
        flags = FLAG_REPLICA if replica else 0
        # what `prepare` makes of a payload given and not over the threshold, without the call
        prepared = [
            Prepared(r.TYPE, flags, p, r, e, o)
            if p is not None and len(p) <= threshold
            else prepare(r, e, o, replica, threshold, p)
            for r, e, o, p in entries
        ]
        batcher = self._loop_batcher()
        if prepared:
            batcher.add_job(prepared, target)
        else:  # nothing to write: the outcome all the same, on the loop as ever
            LoopWaiter(batcher.loop, target).resolve([])

    def _loop_batcher(self) -> LoopBatcher:
        """The running loop's batcher (made on first use)."""
        loop = asyncio.get_running_loop()
        batcher = self._batcher
        if batcher is None or batcher.loop is not loop:  # one loop in a broker: rarely taken
            batcher = self._batchers.get(loop)
            if batcher is None:
                batcher = self._batchers[loop] = LoopBatcher(self.writer, loop)
            self._batcher = batcher  # holds no more than the batcher already does (its loop)
        return batcher

    async def append_async(
        self,
        record: Record,
        *,
        epoch: int | None = None,
        origin: int | None = None,
        replica: bool = False,
    ) -> int:
        """Append one record from async code; return its seq once durable."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another anyio backend (trio): wait in a worker thread
            return await _in_thread(self.append, record, epoch, origin, replica)
        fut: asyncio.Future[int] = loop.create_future()
        self.submit_one(record, fut, epoch=epoch, origin=origin, replica=replica)
        return await fut

    async def append_many_async(
        self,
        records: Iterable[Record],
        *,
        epoch: int | None = None,
        origin: int | None = None,
        replica: bool = False,
    ) -> list[int]:
        """Append records in order from async code, in one commit; return their seqs."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return await _in_thread(self.append_many, records, epoch, origin, replica)
        fut: asyncio.Future[list[int]] = loop.create_future()
        prepared = self._prepared(records, epoch, origin, replica)
        self.writer.submit(_Append(prepared, LoopWaiter(loop, fut)))
        return await fut

    def start_epoch(self, number: int | None = None, node: uuid.UUID | None = None) -> int:
        """Journal a promotion: a new epoch above every one this journal has seen."""
        n = number if number is not None else self.epoch + 1
        if n <= self.epoch:
            raise JournalError(f"epoch {n} is not above the current epoch {self.epoch}")
        self.append(Epoch(n, node or self.node_id), epoch=n)
        return n

    # -- control work on the writer thread ----------------------------------------------------

    def _control(self, fn: Any, after: Any = None) -> Any:
        waiter = SyncWaiter()
        self.writer.submit(_Control(fn, waiter, after))
        return waiter.wait()

    def truncate_after(self, seq: int) -> int:
        """Atomically delete every record after `seq`; return how many went."""

        def cut(txn: Txn) -> int:
            # Keys keep increasing past what was cut, across restarts too: a seq is never
            # reused for a different record, which keeps forensics across a truncate honest.
            txn.put(b"high-water", KEY.pack(self.writer.next_seq - 1), db=self.meta)
            n = 0
            with txn.cursor() as cur:
                if cur.set_range(KEY.pack(seq + 1)):
                    while cur.delete():
                        n += 1
            return n

        n = self._control(cut, after=lambda _: self._rebuild())
        log.info("journal %s: truncated %d records after seq %d", self.data_dir, n, seq)
        return n

    def drop_stream_after(self, origin: int, *, wait: bool = True) -> int | None:
        """Delete every record of the replicated stream (origin > 0) above `origin`, keeping
        this broker's own records (origin 0): a backup whose history diverged from the new
        primary's after `origin` keeps the common prefix. Atomic. With `wait=False` (from the
        event loop) the job is queued in order with appends and the count is only logged."""

        def cut(txn: Txn) -> int:
            txn.put(b"high-water", KEY.pack(self.writer.next_seq - 1), db=self.meta)
            doomed = []
            with txn.cursor() as cur:
                for key, value in cur:
                    if read_header(value)[4] > origin:
                        doomed.append(key)
            for key in doomed:
                txn.delete(key)
            log.info(
                "journal %s: dropped %d stream records after origin seq %d",
                self.data_dir,
                len(doomed),
                origin,
            )
            return len(doomed)

        if wait:
            return self._control(cut, after=lambda _: self._rebuild())
        self.writer.submit(_Control(cut, LogWaiter(), lambda _: self._rebuild()))
        return None

    def reset(self) -> None:
        """Atomically delete every record (the node id stays): a backup's full resync."""

        def drop(txn: Txn) -> None:
            txn.put(b"high-water", KEY.pack(self.writer.next_seq - 1), db=self.meta)
            txn.drop(self.records, delete=False)

        self._control(drop, after=lambda _: self._rebuild())
        log.info("journal %s: reset to empty", self.data_dir)

    def _rebuild(self) -> None:
        """On the writer thread, after a truncate: the tracker follows what is left."""
        w = self.writer
        w.compaction.clear()
        w.tracker, garbage = self._scan()
        self._queue_existing_garbage(w.tracker, garbage)

    def compact(self) -> int:
        """Delete every pending cancelled record now, in bounded transactions; return the count.

        Each step is its own job, so appends queued meanwhile are not held up behind it.
        """
        comp = self.writer.compaction
        before = comp.removed
        while comp.ready():
            self._control(None, after=lambda _: self.writer._compact_step())
        self._control(None)  # a background step may have taken the last units: wait for it
        return comp.removed - before

    def barrier(self) -> None:
        """Return once everything submitted before has been handled."""
        self._control(lambda _txn: None)

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self.writer.close()
        self.env.close()
        self._lock.release()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _in_thread(
    fn: Any, records: Any, epoch: int | None, origin: int | None, replica: bool
) -> Any:
    """Another anyio backend (trio): wait for `fn` in a worker thread.

    A helper rather than a lambda in the caller: a closure there would make every call of the
    async appenders allocate cells for its arguments, on the broker's hottest path.
    """
    import anyio.to_thread

    return await anyio.to_thread.run_sync(
        functools.partial(fn, records, epoch=epoch, origin=origin, replica=replica)
    )
