"""The broker's ordered event stream: each model event of a durable or replicated entity gets one
position (epoch, seq), then goes to the journal (if durable) and to the backups (if replicated).

What is durable: a durable queue or exchange (declare, delete), a binding whose queue is durable
and whose exchange is durable or built in, and a durable message on a durable queue (enqueue,
dequeue, delivery-count change). What replicates is decided by `broker/replication/levels.py`.

Positions: a standalone broker or a primary numbers events itself, continuing from the highest seq
its journal holds. A backup applies the primary's stream: the replicator sets `replica` to the
position of the item being applied, so the journal records carry the primary's numbering; local
events on a backup (a non-replicated queue an admin made) are journaled with seq 0, outside the
stream.

Publishing, calls in and events out: the model gives a publish's `Enqueued` events back in its
result (they never reach `on_event`), and the AMQP layer hands that result to `record_publish`,
which journals and replicates them and returns their `Pending`: the journal writes and the ack
guard's holds of every queue the message went to. The sender's delivery is settled once all are
done. A backup's replicator records the enqueues it applies the same way, into its batch's
`Pending` (`record_enqueued`). Every other event comes through `on_event`, the model's listener.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from broker.history import EpochHistory, EpochId
from broker.model import (
    Bound,
    Broker,
    DeliveryCountChanged,
    Dequeued,
    DequeueReason,
    Enqueued,
    Event,
    ExchangeDeclared,
    ExchangeDeleted,
    PublishResult,
    QueueDeclared,
    QueueDeleted,
    Unbound,
)
from broker.replication import levels
from broker.replication.stream import AUTO_DELETE, DURABLE, EXCLUSIVE, Item, event
from qstore.exchanges import is_builtin_exchange
from qstore.journal import (
    Bind,
    Delivery,
    Dequeue,
    Enqueue,
    Epoch,
    ExchangeDeclare,
    ExchangeDelete,
    History,
    Journal,
    JournalError,
    QueueDeclare,
    QueueDelete,
    Record,
    RecordType,
    Unbind,
)

log = logging.getLogger("qstore.events")

_ALL = levels.ALL
_ENQUEUE, _DEQUEUE = RecordType.ENQUEUE, RecordType.DEQUEUE
_CONSUMED = DequeueReason.CONSUMED
# Records nobody waits for: lost in a crash, a message is delivered again (counted as a
# duplicate), so their fsync may wait for company (qstore/journal/writer.py, lazy appends).
_LAZY = frozenset({RecordType.DEQUEUE, RecordType.DELIVERY})

AUTO_DELETE_KEY = "qstore.auto-delete"  # journaled with a queue's arguments, stripped on restore
Done = Callable[[BaseException | None], None]


class Pending:
    """What one publish waits for; `when_done` fires once every part is done."""

    __slots__ = ("_callback", "_count", "_error", "_sealed")

    def __init__(self) -> None:
        self._count = 0
        self._error: BaseException | None = None
        self._callback: Done | None = None
        self._sealed = False

    def add(self) -> Callable[[Any], None]:
        self._count += 1
        return self._done

    def _done(self, result: Any) -> None:
        if isinstance(result, BaseException) and self._error is None:
            self._error = result
        self._count -= 1
        self._fire()

    def when_done(self, callback: Done) -> None:
        """Call `callback(error or None)` once every part is done (now, if none)."""
        self._callback = callback
        self._sealed = True
        self._fire()

    def _fire(self) -> None:
        if self._sealed and self._count == 0 and self._callback is not None:
            cb, self._callback = self._callback, None
            cb(self._error)


class ReplicationSink(Protocol):
    """The primary's side of replication (broker/ha/primary.py)."""

    def publish(self, item: Item, key: tuple[str, int] | None) -> None: ...

    def hold(self, seq: int, key: tuple[str, int], release: Callable[[Any], None]) -> bool: ...

    def consumed(self, key: tuple[str, int]) -> None: ...


class _Entity:
    __slots__ = ("durable", "level", "uuid")

    def __init__(self, uuid: Any, durable: bool, level: str) -> None:
        self.uuid = uuid
        self.durable = durable
        self.level = level


class EventLog:
    def __init__(self, model: Broker, journal: Journal, default_level: str = levels.NONE) -> None:
        self.model = model
        self.journal = journal
        self.default_level = default_level
        self.epoch = journal.epoch
        self.seq = journal.state.max_origin
        # the epochs of this broker's stream: owned here, journaled with each change (history.py)
        self.history = EpochHistory.from_journal(journal.state)
        self.replica: tuple[int, int] | None = None  # set by a backup's replicator
        # ... with the stream item being applied: its record and payload are journaled as the
        # primary packed them when the event they cause is that record (no second packing)
        self.replica_item: Item | None = None
        self.numbering = True  # False on a backup: its own events are outside the stream
        self.adopting = False  # restoring from the journal: track entities, write nothing
        self.sink: ReplicationSink | None = None  # set on a primary
        self.queues: dict[str, _Entity] = {}
        self.exchanges: dict[str, _Entity] = {}
        self.bindings: dict[tuple[str, str, str], tuple[bool, bool]] = {}  # (durable, replicated)
        model.add_listener(self.on_event)

    # -- publishing ---------------------------------------------------------------------------

    def record_publish(self, result: PublishResult) -> Pending | None:
        """Record a publish's enqueues (`result.enqueued`, which the model did not emit); return
        what the sender's outcome waits for: one `Pending` for every queue the message went to
        (journal write, backups' acks), or None if it waits for nothing (not durable, not
        replicated, or not enqueued at all): settle it at once."""
        pending = None
        for ev in result.enqueued:
            pending = self._enqueued(ev, pending, True)
        return pending

    def record_enqueued(self, ev: Enqueued, pending: Pending | None = None) -> None:
        """Record an enqueue that is not a client's publish: a replica's (its journal write
        joins `pending`, the batch's), or a management reply's (None: nobody waits)."""
        self._enqueued(ev, pending, False)

    # -- levels -------------------------------------------------------------------------------

    def queue_level(self, name: str) -> str:
        e = self.queues.get(name)
        return e.level if e else levels.NONE

    def exchange_level(self, name: str) -> str:
        e = self.exchanges.get(name)
        return e.level if e else levels.NONE

    @contextlib.contextmanager
    def adopting_state(self) -> Iterator[None]:
        """Restore: the model is rebuilt from the journal; learn its entities, write nothing."""
        self.adopting = True
        try:
            yield
        finally:
            self.adopting = False

    @contextlib.contextmanager
    def not_stored(self, queue: str) -> Iterator[None]:
        """While a message the journal refused is taken off `queue`: its dequeue is not
        journaled. There is no enqueue for it to cancel, and a full journal would spend on it
        the room it keeps for the dequeues of messages it holds. (Replication is unchanged.)"""
        e = self.queues.get(queue)
        if e is None or not e.durable:
            yield
            return
        e.durable = False
        try:
            yield
        finally:
            e.durable = True

    # -- events -------------------------------------------------------------------------------

    def _emit(
        self,
        record: Record,
        durable: bool,
        replicated: bool,
        flags: int = 0,
        key: tuple[str, int] | None = None,
        pending: Pending | None = None,
        payload: bytes | memoryview | None = None,
    ) -> int | None:
        """Number the event, journal it if durable, publish it to the backups if replicated;
        return its seq (None if neither). The record is packed once for both (`payload`, if
        the caller has it already)."""
        if not (durable or replicated) or self.adopting:
            return None
        # the position: the primary's while a backup applies its stream; else our own next seq,
        # or seq 0 for a backup's local events (outside the stream)
        replica = self.replica
        if replica is not None:
            epoch, seq = replica
            if seq > self.seq:
                self.seq = seq
            self.epoch = epoch
        elif self.numbering:
            seq = self.seq = self.seq + 1
            epoch = self.epoch
        else:
            epoch, seq = self.epoch, 0
        sink = self.sink if replicated else None
        if payload is None and (durable or sink is not None):
            payload = record.pack()
        if durable:
            if pending is not None:
                target, lazy = pending.add(), False
            else:  # nobody waits: a dequeue or delivery count may share a later commit
                target, lazy = _log_failure, record.TYPE in _LAZY
            self.journal.submit_one(
                record,
                target,
                epoch=epoch,
                origin=seq,
                replica=replica is not None,
                payload=payload,
                lazy=lazy,
            )
        if sink is not None:
            sink.publish(Item(record.TYPE, epoch, seq, flags, record, None, payload), key)
        return seq

    def start_epoch(self, number: int, node: uuid.UUID) -> tuple[int, int]:
        """A promotion: the epoch record is the first event of the new epoch, journaled and
        replicated like any other, so every broker's history names who led from which seq."""
        self.epoch = number
        self.seq += 1
        self.history.add(number, str(node), self.seq)
        rec = Epoch(number, node)
        self.journal.submit_one(rec, _log_failure, epoch=number, origin=self.seq)
        if self.sink is not None:
            self.sink.publish(event(rec, number, self.seq), None)
        return number, self.seq

    def apply_epoch(self, rec: Epoch, epoch: int, seq: int, done: Callable[[Any], None]) -> None:
        """A backup applies the primary's epoch record."""
        self.epoch = epoch
        self.seq = max(self.seq, seq)
        self.history.add(rec.number, str(rec.node), seq)
        self.journal.submit_one(rec, done, epoch=epoch, origin=seq, replica=True)

    def snapshot_begins(self, done: Callable[[Any], None]) -> None:
        """A backup's replicated state is about to be replaced: until the snapshot ends, it has
        no position and no history, in memory and in its journal (stopped halfway, it comes
        back at (0, 0) and asks for a snapshot again)."""
        self.epoch = self.seq = 0
        self.history.replace(())
        self.journal.submit_one(History([]), done, epoch=0, origin=0, replica=True)

    def snapshot_ends(
        self, epoch: int, seq: int, epochs: list[EpochId], done: Callable[[Any], None]
    ) -> None:
        """The snapshot is complete: the backup holds the primary's state at (epoch, seq), and
        the primary's history up to there is its own (a restart or a reconnect then gets a
        tail, and a promotion numbers its epoch above all of them)."""
        self.epoch, self.seq = epoch, seq
        self.history.replace(epochs)
        rec = History(self.history.records())
        self.journal.submit_one(rec, done, epoch=epoch, origin=seq, replica=True)

    def snapshot_messages(self, items: list[Item], done: Callable[[Any], None]) -> None:
        """A snapshot's messages, which the replicator restored with the model quiet (a
        snapshot's bulk, at the cost of a few calls per message instead of an event each):
        journal the durable ones (durable, on a durable queue), outside the stream (seq 0) as
        the primary packed them, in one job; `done` once they are durable."""
        queues = self.queues
        entries = []
        add = entries.append
        name: str | None = None  # the queue of the message before (a batch is mostly one's)
        durable = False
        for it in items:
            r: Enqueue = it.record  # type: ignore[assignment]
            if r.queue != name:
                name = r.queue
                e = queues.get(name)
                durable = e is not None and e.durable
            if durable and it.flags & DURABLE:
                add((r, it.epoch, 0, it.payload))
        self.journal.submit_batch(entries, done, replica=True)

    def replica_ahead(self, it: Item, add: Callable[[], Callable[[Any], None]]) -> None:
        """A restarted backup's message event (enqueue, dequeue, delivery count) on a queue it
        knows, journaled before the model holds the journal's messages (it goes there later,
        broker/restore.py): durable as `_enqueued` and `_dequeued` would say, except that a
        dequeue or a delivery count is journaled for any message of a durable queue (whether
        the message was durable is not known yet: for another, it cancels nothing)."""
        r: Enqueue | Dequeue | Delivery = it.record  # type: ignore[assignment]
        self.epoch = it.epoch
        if it.seq > self.seq:
            self.seq = it.seq
        e = self.queues[r.queue]
        if not e.durable or (it.kind == RecordType.ENQUEUE and not it.flags & DURABLE):
            return
        self.journal.submit_one(
            r, add(), epoch=it.epoch, origin=it.seq, replica=True, payload=it.payload
        )

    def truncated(self, after: int) -> None:
        """The journal drops the stream after seq `after` (a diverged history)."""
        self.seq = min(self.seq, after)
        self.history.truncate(after)
        self.epoch = self.history.epochs[-1].number if self.history.epochs else 0

    def explicit_levels(
        self, kind: str, name: str, args: dict[str, Any], exclusive: bool, auto_delete: bool
    ) -> dict[str, Any]:
        """In a cluster, the level a default gives is written into a new queue's or exchange's
        arguments (as the seed's primary does), so every broker agrees on it whatever its own
        --ha-replicate (see `Registry.fill_arguments`)."""
        if levels.KEY in args:
            return args
        if kind == "queue":
            level = levels.queue_level(
                args, self.default_level, exclusive=exclusive, auto_delete=auto_delete
            )
        else:
            level = levels.exchange_level(name, args, self.default_level)
        return {**args, levels.KEY: level}

    def on_event(self, ev: Event) -> None:
        """The model's listener: every event but `Enqueued` (handed back by the model's calls,
        recorded by `record_publish` and `record_enqueued`)."""
        if ev.__class__ is Dequeued:  # the hot one first, without the match's generality
            self._dequeued(ev)  # type: ignore[arg-type]
        else:
            self._other(ev)

    def _enqueued(self, ev: Enqueued, pending: Pending | None, make: bool) -> Pending | None:
        """Journal and replicate one enqueue; its journal write and its hold (until the backups
        acknowledge it) join `pending`, made first if None and `make`; return `pending`."""
        q = ev.queue
        e = self.queues.get(q)
        if e is None:
            return pending
        m = ev.message
        durable = m.durable and e.durable
        replicated = e.level == _ALL
        if not (durable or replicated) or self.adopting:
            return pending
        if pending is None and make:
            pending = Pending()
        id = ev.id
        rec: Record | None = None
        payload = None
        it = self.replica_item
        if it is not None and it.kind == _ENQUEUE and it.payload is not None:
            r = it.record
            if r.msgid == id and r.queue == q:  # type: ignore[union-attr]
                rec, payload = r, it.payload  # as the primary packed it
        if rec is None:
            expiry = int(m.expiry * 1000) if m.expiry else 0
            rec = Enqueue(q, id, m.body, m.priority, expiry, m.delivery_count)
        key = (q, id)
        flags = DURABLE if m.durable else 0
        seq = self._emit(rec, durable, replicated, flags, key, pending, payload)
        if replicated and seq is not None and pending is not None:
            sink = self.sink
            if sink is not None:
                release = pending.add()
                if not sink.hold(seq, key, release):
                    release(None)
        return pending

    def _dequeued(self, ev: Dequeued) -> None:
        q = ev.queue
        e = self.queues.get(q)
        if e is None:
            return
        id = ev.id
        key = (q, id)
        replicated = e.level == _ALL
        if replicated and self.sink is not None and ev.reason == _CONSUMED:
            self.sink.consumed(key)
        durable = ev.durable and e.durable
        it = self.replica_item
        if it is not None and it.kind == _DEQUEUE and it.payload is not None:
            r = it.record
            if r.msgid == id and r.queue == q:  # type: ignore[union-attr]
                self._emit(r, durable, replicated, 0, key, None, it.payload)
                return
        self._emit(Dequeue(q, id), durable, replicated, 0, key)

    def _other(self, ev: Event) -> None:
        match ev:
            case DeliveryCountChanged(queue=q, id=id, delivery_count=n, durable=durable):
                e = self.queues.get(q)
                if e is not None:
                    self._emit(Delivery(q, id, n), durable and e.durable, e.level == levels.ALL)
            case QueueDeclared(
                name=name,
                uuid=u,
                durable=durable,
                auto_delete=ad,
                exclusive_owner=owner,
                arguments=args,
            ):
                level = levels.queue_level(
                    args, self.default_level, exclusive=owner is not None, auto_delete=ad
                )
                self.queues[name] = _Entity(u, durable, level)
                journaled = {**args, AUTO_DELETE_KEY: True} if ad else args
                flags = (
                    (DURABLE if durable else 0)
                    | (AUTO_DELETE if ad else 0)
                    | (EXCLUSIVE if owner is not None else 0)
                )
                self._emit(QueueDeclare(name, u, journaled), durable, level != levels.NONE, flags)
            case QueueDeleted(name=name, uuid=u):
                e = self.queues.pop(name, None)
                if e is not None:
                    self.bindings = {b: v for b, v in self.bindings.items() if b[1] != name}
                    self._emit(QueueDelete(name, u), e.durable, e.level != levels.NONE)
            case ExchangeDeclared(name=name, uuid=u, type=kind, durable=durable, arguments=args):
                level = levels.exchange_level(name, args, self.default_level)
                self.exchanges[name] = _Entity(u, durable, level)
                rec = ExchangeDeclare(name, u, kind, args)
                self._emit(rec, durable, level != levels.NONE, DURABLE if durable else 0)
            case ExchangeDeleted(name=name, uuid=u):
                e = self.exchanges.pop(name, None)
                if e is not None:
                    self.bindings = {b: v for b, v in self.bindings.items() if b[0] != name}
                    self._emit(ExchangeDelete(name, u), e.durable, e.level != levels.NONE)
            case Bound(exchange=x, queue=q, key=k, arguments=args):
                qe, xe = self.queues.get(q), self.exchanges.get(x)
                if qe is None:
                    return
                durable = qe.durable and (is_builtin_exchange(x) or (xe is not None and xe.durable))
                replicated = levels.binding_replicates(self.exchange_level(x), qe.level, args or {})
                self.bindings[(x, q, k)] = (durable, replicated)
                self._emit(Bind(x, q, k, args), durable, replicated)
            case Unbound(exchange=x, queue=q, key=k):
                known = self.bindings.pop((x, q, k), None)
                if known is not None:
                    self._emit(Unbind(x, q, k), *known)


def _log_failure(result: Any) -> None:
    """A record nobody waits for failed. If the journal has said so already, with what it
    means (qstore/journal/space.py), one more line per record would only drown that."""
    if not isinstance(result, BaseException):  # stored: the usual case, once per dequeue
        return
    if isinstance(result, JournalError) and result.reported:
        log.debug("journal write failed: %s", result)
    else:
        log.error("journal write failed: %s", result)
