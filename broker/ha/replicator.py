"""The backup's side of replication: apply the primary's stream to the model, in order.

Each event item is applied with the event log's `replica` position set, so what is durable is
journaled under the primary's (epoch, seq). Entities are matched by uuid: a queue re-created under
the same name while this backup was away is replaced. A snapshot first removes every replicated
entity this backup holds (non-replicated ones stay), then declares what the primary has.
Messages go in with `restore_message` (the primary already applied limits, ring, last-value and
priority; their removals arrive as dequeues), so the backup's queues hold exactly the primary's.
"""

from __future__ import annotations

import gc
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker.amqp import codec
from broker.eventlog import Pending
from broker.history import from_wire
from broker.model import Broker, DequeueReason, Message, ModelError, Queue
from broker.replication import levels, stream
from broker.replication.stream import AUTO_DELETE, DURABLE, Item
from qstore.journal import (
    Bind,
    Delivery,
    Dequeue,
    Enqueue,
    Epoch,
    ExchangeDeclare,
    ExchangeDelete,
    QueueDeclare,
    QueueDelete,
    RecordType,
    Unbind,
)

if TYPE_CHECKING:
    from broker.eventlog import EventLog

    from .primary import RecentLog

log = logging.getLogger("qstore.ha")

_CONSUMED = DequeueReason.CONSUMED
_LVQ = "qpid.last_value_queue_key"
_ENQUEUE = stream.RT_ENQUEUE
_EPOCH = int(RecordType.EPOCH)
_MESSAGE_EVENTS = frozenset({stream.RT_ENQUEUE, stream.RT_DEQUEUE, stream.RT_DELIVERY})
_AHEAD_CONTROLS = frozenset({stream.TAIL, stream.READY, stream.CATCH_UP, stream.MEMBERSHIP})
Done = Callable[[BaseException | None], None]


class Replicator:
    def __init__(self, model: Broker, events: EventLog, recent: RecentLog) -> None:
        self.model = model
        self.events = events
        self.recent = recent
        self.on_control: Callable[[Item], None] = lambda item: None
        self.in_snapshot = False
        # how the primaries caught this backup up since it started (its HA status shows it)
        self.catch_ups = {"snapshot": 0, "tail": 0}
        # A restarted backup restores its messages in the background (broker/restore.py) while
        # it catches up: batches of message events on known queues are journaled at once (and
        # acknowledged: a backup that holds them durably can be ready) and go into the model
        # once it is restored. The first batch with anything else waits, and all after it.
        self.deferring = False
        self._deferred: deque[tuple[list[Item], Done | None]] = deque()  # done None: journaled
        self._held = False  # a batch waits unjournaled: so do those after it

    def apply(self, items: list[Item], done: Done) -> None:
        """Apply a batch; `done(error)` once everything durable in it is journaled."""
        if self.deferring:
            self._defer(items, done)
            return
        ev = self.events
        pending = Pending()  # what the batch waits for: its enqueues, epochs, snapshot writes
        add = pending.add
        recent = self.recent.append
        restored: list[Item] = []  # a snapshot's messages, restored and journaled in bulk
        for it in items:
            if self.in_snapshot and it.kind == _ENQUEUE:
                restored.append(it)
                continue
            if restored:
                self._snapshot_messages(restored, add)
                restored = []
            if it.record is None:
                self._control(it, add)
                continue
            # A snapshot's items stand for state, not events: journaled outside the stream
            # (seq 0), so the journal's positions stay the primary's events, one for one.
            ev.replica = (it.epoch, 0 if self.in_snapshot else it.seq)
            ev.replica_item = it  # its payload is journaled as the primary packed it
            try:
                self._event(it, pending)
            except ModelError as exc:  # the primary's order makes this a bug: say so
                log.error("replica apply of %s at seq %d failed: %s", it.record, it.seq, exc)
            finally:
                ev.replica = None
                ev.replica_item = None
            it.payload = None  # the journal has its own reference; the recent log keeps
            if not self.in_snapshot:  # no second copy of each body (a tail from it packs
                recent(it)  # again); a snapshot's items are at its seq: no tail has them
        if restored:
            self._snapshot_messages(restored, add)
        pending.when_done(done)

    def _defer(self, items: list[Item], done: Done) -> None:
        if self._held or not all(_ahead(self.events, it) for it in items):
            self._held = True
            self._deferred.append((items, done))
            return
        ev = self.events
        pending = Pending()
        for it in items:
            r = it.record
            if r is None:
                self._control(it, pending.add)
                continue
            if isinstance(r, Epoch):  # the history's, not the model's: applied now
                ev.apply_epoch(r, it.epoch, it.seq, pending.add())
            else:
                ev.replica_ahead(it, pending.add)
            it.payload = None
            self.recent.append(it)
        pending.when_done(done)
        self._deferred.append((items, None))

    def link_lost(self) -> None:
        """The primary is gone: batches that wait unjournaled were never acknowledged, and the
        next primary (maybe another) sends what it holds again. Those journaled stay."""
        while self._deferred and self._deferred[-1][1] is not None:
            self._deferred.pop()
        self._held = False

    def restored(self) -> None:
        """The model holds the journal's messages: what waited goes into it, in order (the
        journaled batches without writing again, the others as if they arrived now)."""
        self.deferring = False
        self._held = False
        model = self.model
        journaled = Pending()  # nothing joins it: no event inside restoring()
        while self._deferred:
            items, done = self._deferred.popleft()
            if done is not None:
                self.apply(items, done)
                continue
            with model.restoring():  # journaled: the model only, no event
                for it in items:
                    if it.kind in _MESSAGE_EVENTS:  # (an epoch was applied when it came)
                        try:
                            self._event(it, journaled)
                        except ModelError as exc:
                            log.error("replica apply of %s failed: %s", it.record, exc)

    def _snapshot_messages(
        self, items: list[Item], add: Callable[[], Callable[[Any], None]]
    ) -> None:
        """A snapshot's messages: into the model without an event each (the snapshot is most of
        them: a few calls per message count), then journaled by the event log in one job.

        They live as long as the broker (until consumed): frozen out of the cyclic collector's
        passes, as what a start-up restores is (broker/service.py), else each pass rescans every
        message of the snapshot so far (in-process snapshot of 300k messages of 2 KiB: the loop's
        CPU 2.71 -> 2.40 s, its collections 0.38 -> 0 s)."""
        model = self.model
        queues, restore = model.queues, model.restore_message
        put: list[Item] = []
        name: str | None = None  # the queue of the message before (a batch is mostly one's)
        q: Queue | None = None
        plain = False  # the queue needs nothing of a message but its fields (no LVQ, no window)
        with model.restoring():
            for it in items:
                r: Enqueue = it.record  # type: ignore[assignment]
                if r.queue != name:
                    name = r.queue
                    q = queues.get(name)
                    plain = q is not None and q.dedup is None and _LVQ not in q.arguments
                if q is None or q.get(r.msgid) is not None:
                    continue
                if plain:  # _message's, positional (a frozen dataclass's keywords cost)
                    expiry = r.expiry / 1000 if r.expiry else None
                    m = Message(r.body, bool(it.flags & DURABLE), r.priority, expiry, None, {},
                                r.delivery_count)  # fmt: skip
                else:
                    m = _message(it, r, q)
                try:
                    restore(name, r.msgid, m)
                except ModelError as exc:  # as in apply: a bug, said
                    log.error("snapshot apply of %s failed: %s", r, exc)
                    continue
                put.append(it)
        self.events.snapshot_messages(put, add())
        for it in put:
            it.payload = None
        gc.freeze()

    def _control(self, it: Item, add: Callable[[], Callable[[Any], None]]) -> None:
        if it.kind == stream.TRUNCATE and it.data is not None:
            after = int(it.data.get("after", 0))
            log.warning(
                "history diverged from the primary's after seq %d: dropping the rest", after
            )
            self.events.journal.drop_stream_after(after, wait=False)
            self.events.truncated(after)
        elif it.kind == stream.TAIL:
            self.catch_ups["tail"] += 1
            self.in_snapshot = False  # a snapshot cut short by a lost link is over
        elif it.kind == stream.SNAPSHOT_BEGIN:
            self.catch_ups["snapshot"] += 1
            self.in_snapshot = True
            self.events.snapshot_begins(add())
            self._clear_replicated(it)
        elif it.kind == stream.SNAPSHOT_END:
            self.in_snapshot = False
            # the primary's epochs up to the snapshot (none from an older primary: the next
            # connection then gets a snapshot again, as it did before histories were sent)
            epochs = from_wire((it.data or {}).get("epochs")) or []
            self.events.snapshot_ends(it.epoch, it.seq, epochs, add())
        self.on_control(it)

    def _clear_replicated(self, it: Item) -> None:
        ev, model = self.events, self.model
        ev.replica = (it.epoch, 0)
        try:
            for name in [n for n in model.queues if ev.queue_level(n) != levels.NONE]:
                model.delete_queue(name)
            for name in [n for n in model.exchanges if ev.exchange_level(n) != levels.NONE]:
                model.delete_exchange(name)
        finally:
            ev.replica = None
        self.recent.items.clear()
        self.recent.start = it.seq

    def _event(self, it: Item, pending: Pending) -> None:
        """Apply one item to the model; what the batch must wait for joins `pending`."""
        model = self.model
        r = it.record
        if isinstance(r, Enqueue):  # the hot pair first, outside the match statement
            q = model.queues.get(r.queue)
            if q is None or q.get(r.msgid) is not None:
                return
            enqueued = model.restore_message(r.queue, r.msgid, _message(it, r, q))
            if enqueued is not None:  # (None: restoring, nothing to record)
                self.events.record_enqueued(enqueued, pending)
            return
        if isinstance(r, Dequeue):
            if r.queue in model.queues:
                model.remove_message(r.queue, r.msgid, _CONSUMED)
            return
        match r:
            case Delivery():
                if r.queue in model.queues:
                    model.set_delivery_count(r.queue, r.msgid, r.delivery_count)
            case QueueDeclare():
                old = model.queues.get(r.name)
                if old is not None:
                    if old.uuid == r.uuid:
                        return
                    log.info("queue %r was re-created on the primary: replacing it", r.name)
                    model.delete_queue(r.name)
                args = {k: v for k, v in r.arguments.items() if k != "qstore.auto-delete"}
                model.declare_queue(
                    r.name,
                    durable=bool(it.flags & DURABLE),
                    auto_delete=bool(it.flags & AUTO_DELETE),
                    arguments=args,
                    uuid=r.uuid,
                )
            case QueueDelete():
                q = model.queues.get(r.name)
                if q is not None and q.uuid == r.uuid:
                    model.delete_queue(r.name)
            case ExchangeDeclare():
                x = model.exchanges.get(r.name)
                if x is not None:
                    if x.uuid == r.uuid:
                        return
                    model.delete_exchange(r.name)
                model.declare_exchange(
                    r.name,
                    r.type,
                    durable=bool(it.flags & DURABLE),
                    arguments=r.arguments,
                    uuid=r.uuid,
                )
            case ExchangeDelete():
                x = model.exchanges.get(r.name)
                if x is not None and x.uuid == r.uuid:
                    model.delete_exchange(r.name)
            case Bind():
                if r.queue in model.queues and r.exchange in model.exchanges:
                    model.bind(r.exchange, r.queue, r.key, r.arguments or None)
            case Unbind():
                model.unbind(r.exchange, r.queue, r.key)
            case Epoch():
                self.events.apply_epoch(r, it.epoch, it.seq, pending.add())


def _message(it: Item, r: Enqueue, q: Queue) -> Message:
    """The message an enqueue item carries (a last-value queue's needs its properties; a queue
    with a dedup window, its id: the backup's window then has every id the primary's has)."""
    lvq = _LVQ in q.arguments
    return Message(
        body=r.body,
        durable=bool(it.flags & DURABLE),
        priority=r.priority,
        expiry=r.expiry / 1000 if r.expiry else None,
        properties=codec.extract(r.body, 0.0)[0].properties if lvq else {},
        delivery_count=r.delivery_count,
        message_id=codec.message_id(r.body) if q.dedup is not None else None,
    )


def _ahead(events: EventLog, it: Item) -> bool:
    """Whether this item may be journaled before the model holds the journal's messages: a
    message event on a queue the event log knows, an epoch (a new primary: no model state),
    or a control that changes no state."""
    if it.record is None:
        return it.kind in _AHEAD_CONTROLS
    if it.kind == _EPOCH:
        return True
    return it.kind in _MESSAGE_EVENTS and it.record.queue in events.queues  # type: ignore[union-attr]
