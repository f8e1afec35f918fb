"""The durability edge: model events of durable things become journal records; restart restores.

What is durable: a durable queue or exchange (its declare and delete), a binding whose queue is
durable and whose exchange is durable or built in, and a durable message on a durable queue (its
enqueue, its dequeue, its delivery-count changes). The AMQP layer brackets each publish with
`begin()`/`end()`: the enqueue records journaled meanwhile make up that publish's `Pending`, and
the sender's delivery is settled only once all of them are durable.

Records are handed to the journal from the event loop with `Journal.submit_one`, so one loop turn's
records travel to the writer together and share an fsync with everything else queued.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from broker.amqp import codec
from broker.model import (
    Bound,
    Broker,
    DeliveryCountChanged,
    Dequeued,
    Enqueued,
    Event,
    ExchangeDeclared,
    ExchangeDeleted,
    Message,
    QueueDeclared,
    QueueDeleted,
    Unbound,
)
from qstore.journal import (
    Bind,
    Delivery,
    Dequeue,
    Enqueue,
    ExchangeDeclare,
    ExchangeDelete,
    Journal,
    QueueDeclare,
    QueueDelete,
    Record,
    Unbind,
)
from qstore.journal.state import is_builtin_exchange

log = logging.getLogger("qstore.persistence")

AUTO_DELETE_KEY = "qstore.auto-delete"  # journaled with a queue's arguments, stripped on restore
Done = Callable[[BaseException | None], None]


class Pending:
    """The journal writes one publish waits for; `when_durable` fires once they are all done."""

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

    def when_durable(self, callback: Done) -> None:
        """Call `callback(error or None)` once every write is durable (now, if none)."""
        self._callback = callback
        self._sealed = True
        self._fire()

    def _fire(self) -> None:
        if self._sealed and self._count == 0 and self._callback is not None:
            cb, self._callback = self._callback, None
            cb(self._error)


class Persistence:
    """Listens to the model and journals what is durable."""

    def __init__(self, journal: Journal, broker: Broker) -> None:
        self.journal = journal
        self.broker = broker
        self._queues: dict[str, uuid.UUID] = {}  # durable queues
        self._exchanges: dict[str, uuid.UUID] = {}  # durable exchanges
        self._bindings: set[tuple[str, str, str]] = set()  # journaled bindings
        self._pending: Pending | None = None
        broker.add_listener(self.on_event)

    # -- publishing ---------------------------------------------------------------------------

    def begin(self) -> Pending:
        self._pending = Pending()
        return self._pending

    def end(self) -> None:
        self._pending = None

    # -- events -------------------------------------------------------------------------------

    def _write(self, record: Record, pending: Pending | None = None) -> None:
        self.journal.submit_one(record, pending.add() if pending else _log_failure)

    def on_event(self, ev: Event) -> None:
        match ev:
            case Enqueued(queue=q, id=id, message=m):
                if m.durable and q in self._queues:
                    self._write(
                        Enqueue(
                            q,
                            id,
                            m.body,
                            m.priority,
                            int(m.expiry * 1000) if m.expiry else 0,
                            m.delivery_count,
                        ),
                        self._pending,
                    )
            case Dequeued(queue=q, id=id, durable=durable):
                if durable and q in self._queues:
                    self._write(Dequeue(q, id))
            case DeliveryCountChanged(queue=q, id=id, delivery_count=n, durable=durable):
                if durable and q in self._queues:
                    self._write(Delivery(q, id, n))
            case QueueDeclared(name=name, uuid=u, durable=True, auto_delete=ad, arguments=args):
                self._queues[name] = u
                self._write(QueueDeclare(name, u, {**args, AUTO_DELETE_KEY: True} if ad else args))
            case QueueDeleted(name=name, uuid=u):
                if self._queues.pop(name, None) is not None:
                    self._bindings = {b for b in self._bindings if b[1] != name}
                    self._write(QueueDelete(name, u))
            case ExchangeDeclared(name=name, uuid=u, type=kind, durable=True, arguments=args):
                self._exchanges[name] = u
                self._write(ExchangeDeclare(name, u, kind, args))
            case ExchangeDeleted(name=name, uuid=u):
                if self._exchanges.pop(name, None) is not None:
                    self._bindings = {b for b in self._bindings if b[0] != name}
                    self._write(ExchangeDelete(name, u))
            case Bound(exchange=x, queue=q, key=k, arguments=args):
                if q in self._queues and (x in self._exchanges or is_builtin_exchange(x)):
                    self._bindings.add((x, q, k))
                    self._write(Bind(x, q, k, args))
            case Unbound(exchange=x, queue=q, key=k):
                if (x, q, k) in self._bindings:
                    self._bindings.discard((x, q, k))
                    self._write(Unbind(x, q, k))

    # -- restart ------------------------------------------------------------------------------

    def restore(self) -> int:
        """Rebuild the model from the journal (before anything is appended); return messages.

        The journal's open-time replay kept no bodies; each message's body is read back by seq.
        Only last-value queues need a restored message decoded (for its key property).
        """
        state = self.journal.state
        b = self.broker
        count = 0
        with b.restoring():
            for x in state.exchanges.values():
                b.declare_exchange(x.name, x.type, durable=True, arguments=x.arguments, uuid=x.uuid)
                self._exchanges[x.name] = x.uuid
            for q in state.queues.values():
                args = dict(q.arguments)
                auto_delete = bool(args.pop(AUTO_DELETE_KEY, False))
                queue, _ = b.declare_queue(
                    q.name, durable=True, auto_delete=auto_delete, arguments=args, uuid=q.uuid
                )
                self._queues[q.name] = q.uuid
                lvq = "qpid.last_value_queue_key" in args
                for m in q.messages.values():
                    entry = self.journal.get(m.seq)
                    if entry is None or not isinstance(entry.record, Enqueue):
                        log.error("journal lost the body of message %s on %r", m.msgid, q.name)
                        continue
                    body = entry.record.body
                    props = codec.extract(body, 0.0)[0].properties if lvq else {}
                    msg = Message(
                        body=body,
                        durable=True,
                        priority=m.priority,
                        expiry=m.expiry / 1000 if m.expiry else None,
                        properties=props,
                        delivery_count=m.delivery_count,
                    )
                    b.restore_message(q.name, m.msgid, msg)
                    count += 1
                del queue
            for bs in state.bindings.values():
                b.bind(bs.exchange, bs.queue, bs.key, bs.arguments)
                self._bindings.add((bs.exchange, bs.queue, bs.key))
        return count


def _log_failure(result: Any) -> None:
    if isinstance(result, BaseException):
        log.error("journal write failed: %s", result)
