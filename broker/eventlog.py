"""The broker's ordered event stream: each model event of a durable or replicated entity gets one
position (epoch, seq), then goes to the journal (if durable) and to the backups (if replicated).

What is durable: a durable queue or exchange (declare, delete), a binding whose queue is durable
and whose exchange is durable or built in, and a durable message on a durable queue (enqueue,
dequeue, delivery-count change). What replicates is decided by `broker/ha/levels.py`.

Positions: a standalone broker or a primary numbers events itself, continuing from the highest seq
its journal holds. A backup applies the primary's stream: the replicator sets `replica` to the
position of the item being applied, so the journal records carry the primary's numbering; local
events on a backup (a non-replicated queue an admin made) are journaled with seq 0, outside the
stream.

The AMQP layer brackets each publish with `begin()`/`end()`: what the publish journals and what the
ack guard holds make up its `Pending`, and the sender's delivery is settled once all are done.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from broker.ha import levels
from broker.ha.stream import AUTO_DELETE, DURABLE, EXCLUSIVE, Item, event
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
    QueueDeclared,
    QueueDeleted,
    Unbound,
)
from qstore.journal import (
    Bind,
    Delivery,
    Dequeue,
    Enqueue,
    Epoch,
    ExchangeDeclare,
    ExchangeDelete,
    Journal,
    QueueDeclare,
    QueueDelete,
    Record,
    Unbind,
)
from qstore.journal.state import is_builtin_exchange

log = logging.getLogger("qstore.events")

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
        # (number, node id, first seq) of every epoch this broker's history holds
        self.epochs: list[tuple[int, str, int]] = [
            (ep.number, str(ep.node), ep.origin) for ep in journal.state.epochs
        ]
        self.replica: tuple[int, int] | None = None  # set by a backup's replicator
        self.numbering = True  # False on a backup: its own events are outside the stream
        self.adopting = False  # restoring from the journal: track entities, write nothing
        self.sink: ReplicationSink | None = None  # set on a primary
        self.queues: dict[str, _Entity] = {}
        self.exchanges: dict[str, _Entity] = {}
        self.bindings: dict[tuple[str, str, str], tuple[bool, bool]] = {}  # (durable, replicated)
        self._pending: Pending | None = None
        model.add_listener(self.on_event)

    # -- publishing ---------------------------------------------------------------------------

    def begin(self) -> Pending:
        self._pending = Pending()
        return self._pending

    def end(self) -> None:
        self._pending = None

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

    # -- events -------------------------------------------------------------------------------

    def _position(self) -> tuple[int, int, bool]:
        """(epoch, seq, replica) for the event being handled."""
        if self.replica is not None:
            epoch, seq = self.replica
            if seq > self.seq:
                self.seq = seq
            self.epoch = epoch
            return epoch, seq, True
        if not self.numbering:
            return self.epoch, 0, False
        self.seq += 1
        return self.epoch, self.seq, False

    def _emit(
        self,
        record: Record,
        durable: bool,
        replicated: bool,
        flags: int = 0,
        key: tuple[str, int] | None = None,
        pending: Pending | None = None,
    ) -> tuple[int, int] | None:
        if not (durable or replicated) or self.adopting:
            return None
        epoch, seq, replica = self._position()
        if durable:
            target = pending.add() if pending is not None else _log_failure
            self.journal.submit_one(record, target, epoch=epoch, origin=seq, replica=replica)
        if replicated and self.sink is not None:
            self.sink.publish(event(record, epoch, seq, flags), key)
        return epoch, seq

    def start_epoch(self, number: int, node: uuid.UUID) -> tuple[int, int]:
        """A promotion: the epoch record is the first event of the new epoch, journaled and
        replicated like any other, so every broker's history names who led from which seq."""
        self.epoch = number
        self.seq += 1
        self.epochs.append((number, str(node), self.seq))
        rec = Epoch(number, node)
        self.journal.submit_one(rec, _log_failure, epoch=number, origin=self.seq)
        if self.sink is not None:
            self.sink.publish(event(rec, number, self.seq), None)
        return number, self.seq

    def apply_epoch(self, rec: Epoch, epoch: int, seq: int, done: Callable[[Any], None]) -> None:
        """A backup applies the primary's epoch record."""
        self.epoch = epoch
        self.seq = max(self.seq, seq)
        self.epochs.append((rec.number, str(rec.node), seq))
        self.journal.submit_one(rec, done, epoch=epoch, origin=seq, replica=True)

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
        match ev:
            case Enqueued(queue=q, id=id, message=m):
                e = self.queues.get(q)
                if e is None:
                    return
                durable = m.durable and e.durable
                replicated = e.level == levels.ALL
                expiry = int(m.expiry * 1000) if m.expiry else 0
                rec = Enqueue(q, id, m.body, m.priority, expiry, m.delivery_count)
                pending = self._pending
                pos = self._emit(
                    rec, durable, replicated, DURABLE if m.durable else 0, (q, id), pending
                )
                if replicated and pos and pending is not None and self.sink is not None:
                    release = pending.add()
                    if not self.sink.hold(pos[1], (q, id), release):
                        release(None)
            case Dequeued(queue=q, id=id, durable=durable, reason=reason):
                e = self.queues.get(q)
                if e is None:
                    return
                replicated = e.level == levels.ALL
                if replicated and self.sink is not None and reason == DequeueReason.CONSUMED:
                    self.sink.consumed((q, id))
                self._emit(Dequeue(q, id), durable and e.durable, replicated, key=(q, id))
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
    if isinstance(result, BaseException):
        log.error("journal write failed: %s", result)
