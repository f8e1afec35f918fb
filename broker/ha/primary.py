"""The primary's side of replication: the recent log, one outgoing stream per backup, the guard.

Every replicated event goes to the recent log (which serves tails to backups that reconnect) and to
each backup's pending items. Pending items are sent once per event-loop turn, as one batch per
message, while the backup's link has credit and fewer than MAX_IN_FLIGHT of its batches await
settlement. An enqueue still pending when its message is consumed is never sent, nor is its
dequeue: a message consumed before it reached a backup never reaches it.
A backup settles a batch once applied and journaled; that is its acknowledgement of the batch's
last seq, which releases the guard's holds and moves its catch-up on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from proton import Delivery, Link

from broker.ha.catchup import BackupPosition, plan, snapshot_items
from broker.replication import stream
from broker.replication.stream import Item

from .guard import QueueGuard

if TYPE_CHECKING:
    from broker.amqp.connection import AmqpConnection
    from broker.eventlog import EventLog

    from .driver import HaDriver

log = logging.getLogger("qstore.ha")

RECENT_ITEMS = 200_000  # events kept for tails (bounded memory; older positions get a snapshot)
BATCH_ITEMS = 1000
BATCH_BYTES = 256 << 10
# Batches a backup may have unsettled. What is published meanwhile waits and goes as one larger
# batch when one settles: the backup's journal commits one batch at a time anyway, so this costs
# no latency under load and saves the per-batch work of all three brokers (ha_bench: cluster CPU
# 240-280 -> 190-230 ms per 1000 messages, 10-12.7k -> 13.2-14k msg/s; 1 was slower, 3 alike).
MAX_IN_FLIGHT = 2
# What a backup is sent to catch up (the snapshot or the tail queued when it attached) goes in
# larger batches, more of them in flight: with 2 of 256 KiB each waiting for the backup's apply,
# fsync and settlement, a snapshot crawled at 40 MB/s (1 GiB in 26 s); with more in flight the
# backup always has the next batch, and its journal commits several in one transaction.
CATCH_UP_IN_FLIGHT = 8
CATCH_UP_BATCH_ITEMS = 4096
CATCH_UP_BATCH_BYTES = 1 << 20
FRESH_ITEMS = 20_000  # items published but not yet sent to every backup that keep their payload
# Dequeues and delivery counts hold nobody up (no sender waits for them), so alone they wait up to
# LAZY_DELAY, or LAZY_ITEMS of them, to travel together: a consumer settling one message at a
# time otherwise costs every broker a batch per few messages. Any other event sends them at once.
# Lost with the primary, a consumed message is delivered again by the next one (a duplicate).
LAZY_DELAY = 0.010
LAZY_ITEMS = 512
Key = tuple[str, int]
_ENQUEUE, _DEQUEUE = stream.RT_ENQUEUE, stream.RT_DEQUEUE
_LAZY_KINDS = frozenset({stream.RT_DEQUEUE, stream.RT_DELIVERY})


def _seq(it: Item) -> int:
    return it.seq


def _size(it: Item) -> int:
    """What an item counts against BATCH_BYTES (the same whether it still has its payload)."""
    return len(it.record.body) + 64 if it.kind == _ENQUEUE else 64  # type: ignore[union-attr]


class RecentLog:
    """The last replicated events, for tails; `start` is the seq just before the oldest kept."""

    def __init__(self, start: int, size: int = RECENT_ITEMS) -> None:
        self.items: deque[Item] = deque()
        self.size = size
        self.start = start

    def append(self, item: Item) -> None:
        self.items.append(item)
        if len(self.items) > self.size:
            self.start = self.items.popleft().seq

    def after(self, seq: int) -> list[Item]:
        return [it for it in self.items if it.seq > seq]


class BackupStream:
    """One connected backup: its link, its pending items, its batches in flight."""

    def __init__(
        self, primary: Primary, conn: AmqpConnection, link: Link, name: str, address: str
    ) -> None:
        self.primary = primary
        self.conn = conn
        self.link = link
        self.name = name
        self.address = address
        # the catch-up queued at attach (sent first, in catch-up batches; items made as they
        # are sent), then what is published: `backlog` is its next item, None once all sent
        self.backlog: Item | None = None
        self._backlog: Iterator[Item] = iter(())
        self.pending: list[Item | None] = []
        # unsent enqueue -> its index counted from the stream's start (`_base` is the index of
        # pending[0]): entries below `_base` were sent and are only dropped lazily
        self._enqueues: dict[Key, int] = {}
        self._base = 0
        self._bytes = 0  # what `_size` counts of the pending items (dropped pairs excluded)
        self._holes = 0  # dropped pairs' places (None) in pending
        self._tags = 0
        self.in_flight = 0  # batches sent and not yet settled by the backup
        self.added = 0  # highest seq given to this stream, dropped pairs included
        self.sent = 0  # highest seq acknowledged by a batch already sent
        self.closed = False

    def add(self, item: Item, key: Key | None = None, size: int | None = None) -> None:
        """Queue an item; `key` (queue, message id) for enqueues and dequeues; `size` is
        `_size(item)` if the caller has it."""
        seq = item.seq
        if seq > self.added:
            self.added = seq
        if key is not None:
            kind = item.kind
            if kind == _ENQUEUE:
                self._enqueues[key] = self._base + len(self.pending)
            elif kind == _DEQUEUE:
                at = self._enqueues.pop(key, None)
                if at is not None and at >= self._base:
                    # never sent: drop the pair, the backup needs neither
                    at -= self._base
                    self._bytes -= _size(self.pending[at])  # type: ignore[arg-type]
                    self.pending[at] = None
                    self._holes += 1
                    return
        self.pending.append(item)
        self._bytes += _size(item) if size is None else size

    def catch_up(self, items: Iterator[Item], last: int) -> None:
        """What the backup needs before anything published from now on (sent first); `last`:
        the highest seq among them."""
        self._backlog = items
        self.backlog = next(items, None)
        self.added = max(self.added, last)

    def _backlog_batch(self) -> list[Item]:
        """The next catch-up batch, read from the backlog as it goes."""
        batch: list[Item] = []
        it, rest, size = self.backlog, self._backlog, 0
        while it is not None and len(batch) < CATCH_UP_BATCH_ITEMS and size < CATCH_UP_BATCH_BYTES:
            batch.append(it)
            size += _size(it)
            it = next(rest, None)
        self.backlog = it
        return batch

    def flush(self) -> None:
        link = self.link
        sent = False
        while self.backlog is not None and self.in_flight < CATCH_UP_IN_FLIGHT and link.credit > 0:
            if self.closed:
                return
            batch = self._backlog_batch()
            last = batch[-1].seq
            if self.backlog is None and not self.pending:
                last = max(last, self.added)  # as below: the batch stands for all given
            self._send(batch, last)
            sent = True
        while (
            self.backlog is None
            and self.pending
            and self.in_flight < MAX_IN_FLIGHT
            and link.credit > 0
            and not self.closed
        ):
            pending = self.pending
            if len(pending) <= BATCH_ITEMS and self._bytes < BATCH_BYTES:
                # all of it fits one batch (the common case: what one loop turn published)
                taken = len(pending)
                batch = [it for it in pending if it is not None] if self._holes else pending
                self.pending = []
                self._bytes = self._holes = 0
            else:
                batch = []
                size = taken = 0
                for it in pending:
                    taken += 1
                    if it is None:
                        self._holes -= 1
                        continue
                    batch.append(it)
                    size += _size(it)
                    if len(batch) >= BATCH_ITEMS or size >= BATCH_BYTES:
                        break
                del pending[:taken]
                self._bytes = self._bytes - size if pending else 0
            self._base += taken
            if not self.pending:
                self._enqueues.clear()  # every entry is below `_base` now
            elif len(self._enqueues) > 2 * len(self.pending) + 1024:  # a backlog: shed sent ones
                base = self._base
                self._enqueues = {k: at for k, at in self._enqueues.items() if at >= base}
            last = batch[-1].seq if batch else 0  # type: ignore[union-attr]
            if not self.pending:
                # Everything given is sent or was a dropped pair: the batch stands for all of it,
                # else a backup whose last items were such a pair would never reach its target.
                last = max(last, self.added)
            if not batch and last <= self.sent:
                continue
            self._send(batch, last)  # type: ignore[arg-type]
            sent = True
        if sent:
            self.conn.driver.wake()

    def _send(self, batch: list[Item], last: int) -> None:
        """One batch as one message; its settlement acknowledges `last`."""
        self.sent = max(self.sent, last)
        self._tags += 1
        link = self.link
        dlv = link.delivery(str(self._tags))
        dlv.qs_last = last
        link.send(self.primary.encode(batch))
        link.advance()
        self.in_flight += 1

    def on_flow(self) -> None:
        self.primary._schedule()

    def on_delivery(self, dlv: Delivery) -> None:
        last = getattr(dlv, "qs_last", None)
        if last is None or not (dlv.settled or dlv.remote_state):
            return
        ok = dlv.remote_state in (Delivery.ACCEPTED, None)
        dlv.settle()
        self.in_flight -= 1
        if self.pending or self.backlog is not None:
            self.primary._schedule()  # what waited for room in flight
        if ok:
            self.primary.acked(self, last)
        else:
            log.error("backup %s refused a replication batch: closing its link", self.name)
            self.link.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.primary.detached(self)


class Primary:
    """The replication sink of a primary (see broker/eventlog.py: ReplicationSink)."""

    def __init__(self, ha: HaDriver, events: EventLog, recent: RecentLog) -> None:
        self.ha = ha
        self.events = events
        self.recent = recent
        self.guard = QueueGuard()
        self.hold = self.guard.hold  # the event log's call, without a frame of ours
        self.streams: dict[str, BackupStream] = {}
        self._flush_scheduled = False
        self._lazy_items = 0  # lazy items published since the last flush
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._fresh: list[Item] = []  # published, with payloads, in seq order (_drop_payloads)
        self._encoded: tuple[list[Item], bytes] | None = None  # this flush's last batch

    # -- the event log's calls ----------------------------------------------------------------

    def publish(self, item: Item, key: Key | None) -> None:
        recent = self.recent  # RecentLog.append, inline on this per-event path
        recent.items.append(item)
        if len(recent.items) > recent.size:
            recent.start = recent.items.popleft().seq
        self._fresh.append(item)
        if self.streams:
            size = _size(item)
            for s in self.streams.values():
                s.add(item, key, size)
        if self._flush_scheduled:
            return
        if item.kind in _LAZY_KINDS:
            self._lazy_items += 1
            if self._lazy_items < LAZY_ITEMS:
                if self._lazy_timer is None:
                    loop = asyncio.get_running_loop()
                    self._lazy_timer = loop.call_later(LAZY_DELAY, self._lazy_due)
                return
        self._schedule()

    def _lazy_due(self) -> None:
        self._lazy_timer = None
        self._schedule()

    def consumed(self, key: Key) -> None:
        for release in self.guard.consumed(key):
            release(None)

    # -- backups ------------------------------------------------------------------------------

    def holder(self, name: str) -> AmqpConnection | None:
        """The live connection whose replication stream goes by `name`, if any: a second one
        may not take the name over while it lives (the seed's backups are one link each)."""
        s = self.streams.get(name)
        return s.conn if s is not None and not s.conn.gone else None

    def attach(self, conn: AmqpConnection, link: Link, info: dict[str, Any]) -> BackupStream:
        """A backup attached its replication link: plan its catch-up and start its stream."""
        name = str(info.get("name") or f"conn-{conn.id}")
        address = str(info.get("address") or conn.driver.peer)
        pos = BackupPosition.from_wire(info.get("position"), info.get("epochs"))
        old = self.streams.get(name)
        if old is not None:
            old.close()
        s = BackupStream(self, conn, link, name, address)
        ev = self.events
        history = ev.history.epochs
        p = plan(pos, history, ev.seq, self.recent.start)
        log.info(
            "backup %s at %s attached at position (%d, %d): %s (%s)",
            name,
            address,
            pos.epoch,
            pos.seq,
            "snapshot" if p.snapshot else "tail",
            p.why,
        )
        items: list[Item] = []
        if p.truncate_after is not None:
            items.append(stream.control(stream.TRUNCATE, ev.epoch, ev.seq, after=p.truncate_after))
        if p.snapshot:
            snapshot = snapshot_items(
                ev.model,
                ev.queue_level,
                ev.exchange_level,
                ev.epoch,
                ev.seq,
                ev.bindings,
                ev.history.wire(),
            )
            last = ev.seq  # every item of a snapshot is at its position
            s.catch_up(itertools.chain(items, snapshot), last)
        else:
            items.append(
                stream.control(stream.TAIL, ev.epoch, p.tail_from, **{"from": p.tail_from})
            )
            items += self.recent.after(p.tail_from)
            last = items[-1].seq
            s.catch_up(iter(items), last)
        self.streams[name] = s
        self.guard.expect(name)
        # Ready once it acknowledges the last item queued for it now. Not `ev.seq`: durable events
        # of non-replicated entities are numbered too but never sent, so a backup would never
        # acknowledge that seq (and would stay catch-up, holding a recovering primary up).
        self.ha.backup_connected(name, target=last)
        self._schedule()
        return s

    def send_control(self, name: str, kind: int, **data: Any) -> None:
        s = self.streams.get(name)
        if s is not None:
            s.add(stream.control(kind, self.events.epoch, self.events.seq, **data))
            self._schedule()

    def broadcast(self, kind: int, **data: Any) -> None:
        for name in list(self.streams):
            self.send_control(name, kind, **data)

    def acked(self, s: BackupStream, seq: int) -> None:
        if self.streams.get(s.name) is not s:
            return
        _run(self.guard.acknowledged(s.name, seq))
        self.ha.backup_acked(s.name, seq)

    def detached(self, s: BackupStream) -> None:
        if self.streams.get(s.name) is s:
            del self.streams[s.name]
            log.info("backup %s detached", s.name)
            self.ha.backup_lost(s.name, "replication link closed")

    def stop_expecting(self, names: tuple[str, ...]) -> None:
        _run(self.guard.drop(names))

    def close_all(self) -> None:
        for s in list(self.streams.values()):
            s.close()
        _run(self.guard.release_all())

    # -- sending ------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._lazy_items = 0
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        try:
            for s in list(self.streams.values()):
                s.flush()
        finally:
            self._encoded = None
            self._drop_payloads()

    def _drop_payloads(self) -> None:
        """Items every stream has sent lose their payload: the recent log keeps the records
        without a second copy of each body (a tail from it packs again). Those still pending
        somewhere keep it, up to FRESH_ITEMS (a backup far behind packs the older ones again)."""
        fresh = self._fresh
        keep_from = None  # seq of the oldest item a stream has yet to send
        for s in self.streams.values():
            if s.backlog is not None:  # older than anything pending (published later)
                seq = s.backlog.seq
                if keep_from is None or seq < keep_from:
                    keep_from = seq
                continue
            for it in s.pending:
                if it is not None:
                    if keep_from is None or it.seq < keep_from:
                        keep_from = it.seq
                    break
        end = len(fresh) if keep_from is None else bisect_left(fresh, keep_from, key=_seq)
        end = max(end, len(fresh) - FRESH_ITEMS)
        for i in range(end):
            fresh[i].payload = None
        del fresh[:end]

    def encode(self, batch: list[Item]) -> bytes:
        """A batch's bytes; the streams of one flush mostly send the same items: encode once."""
        last = self._encoded
        if last is not None and last[0] == batch:
            return last[1]
        data = stream.encode(batch)
        self._encoded = (batch, data)
        return data


def _run(releases: list[Callable[[Any], None]]) -> None:
    for release in releases:
        release(None)
