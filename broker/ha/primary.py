"""The primary's side of replication: the recent log, one outgoing stream per backup, the guard.

Every replicated event goes to the recent log (which serves tails to backups that reconnect) and to
each backup's subscription (broker/ha/subscription.py: it decides what each batch holds). Batches
are sent once per event-loop turn, one per message, while the backup's link has credit and the
subscription gives one (it bounds the batches awaiting settlement).
A backup settles a batch once applied and journaled; that is its acknowledgement of the batch's
last seq, which releases the guard's holds and moves its catch-up on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proton import Delivery, Link

from broker.ha.catchup import BackupPosition, plan, snapshot_items
from broker.replication import stream
from broker.replication.stream import Item

from .guard import QueueGuard
from .subscription import Key, ReplicatingSubscription
from .subscription import item_size as _size

if TYPE_CHECKING:
    from broker.amqp.connection import AmqpConnection
    from broker.eventlog import EventLog

    from .member import HaMember

log = logging.getLogger("qstore.ha")

RECENT_ITEMS = 200_000  # events kept for tails (bounded memory; older positions get a snapshot)
FRESH_ITEMS = 20_000  # items published but not yet sent to every backup that keep their payload
# Dequeues and delivery counts hold nobody up (no sender waits for them), so alone they wait up to
# LAZY_DELAY, or LAZY_ITEMS of them, to travel together: a consumer settling one message at a
# time otherwise costs every broker a batch per few messages. Any other event sends them at once.
# Lost with the primary, a consumed message is delivered again by the next one (a duplicate).
LAZY_DELAY = 0.010
LAZY_ITEMS = 512
_LAZY_KINDS = frozenset({stream.RT_DEQUEUE, stream.RT_DELIVERY})


def _seq(it: Item) -> int:
    return it.seq


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
    """One connected backup: its link and its batches in flight; what each batch holds is its
    subscription's choice."""

    def __init__(
        self, primary: Primary, conn: AmqpConnection, link: Link, name: str, address: str
    ) -> None:
        self.primary = primary
        self.conn = conn
        self.link = link
        self.name = name
        self.address = address
        self.sub = sub = ReplicatingSubscription()
        # the subscription's own methods, without a frame of ours (`add`: per event, per backup)
        self.add = sub.add
        self.catch_up = sub.catch_up
        self._tags = 0
        self.in_flight = 0  # batches sent and not yet settled by the backup
        self.closed = False

    def flush(self) -> None:
        if self.closed:
            return
        link, next_batch = self.link, self.sub.next_batch
        sent = False
        while (got := next_batch(self.in_flight, link.credit)) is not None:
            self._send(*got)
            sent = True
        if sent:
            self.conn.pump.wake()

    def _send(self, batch: list[Item], last: int) -> None:
        """One batch as one message; its settlement acknowledges `last`."""
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
        if self.sub.has_unsent():
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
    """The replication sink of a primary (see broker/eventlog.py: ReplicationSink).

    `streams` owns the backups' links and nothing more: who the backups are, their addresses and
    whether each is ready are the role's (broker/ha/role.py); the positions they acknowledged are
    the guard's, which waits for the backups the role names (`expect` / `stop_expecting`)."""

    def __init__(self, ha: HaMember, events: EventLog, recent: RecentLog) -> None:
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
        self._squeeze = stream.Squeeze()  # whether the batches are worth compressing

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
        address = str(info.get("address") or conn.pump.peer)
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
        # Ready once it acknowledges the last item queued for it now. Not `ev.seq`: durable events
        # of non-replicated entities are numbered too but never sent, so a backup would never
        # acknowledge that seq (and would stay catch-up, holding a recovering primary up).
        # The role answers with Expect(name): what is published from now on waits for it.
        self.ha.backup_connected(name, address, target=last)
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

    def expect(self, name: str) -> None:
        self.guard.expect(name)

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
            seq = s.sub.oldest_unsent()
            if seq is not None and (keep_from is None or seq < keep_from):
                keep_from = seq
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
        data = stream.encode(batch, self._squeeze)
        self._encoded = (batch, data)
        return data


def _run(releases: list[Callable[[Any], None]]) -> None:
    for release in releases:
        release(None)
