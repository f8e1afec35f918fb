"""The two kinds of link a client attaches, as the broker sees them.

`IncomingLink` (the client sends): messages are routed into the model; each delivery is settled
`accepted` once what it put on durable queues is in the journal, `rejected` (with the model's
condition) when a queue refuses it. `OutgoingLink` (the client receives): a model consumer whose
deliveries the outbox sends; the client's outcomes (accepted, released, modified, rejected) are
passed back to the model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from proton import Condition, Delivery, Link

from broker.model import Consumer, Exchange, ModelError, Queue, QueuedMessage

from . import codec

if TYPE_CHECKING:
    from broker.net import ConnectionDriver

    from .connection import AmqpConnection

log = logging.getLogger("qstore.amqp")

RESOURCE_LIMIT = "amqp:resource-limit-exceeded"
DECODE_ERROR = "amqp:decode-error"
NOT_FOUND = "amqp:not-found"
WINDOW = 1000  # credit kept open on each incoming link


def reject(dlv: Delivery, condition: str, description: str) -> None:
    dlv.local.condition = Condition(condition, description)
    dlv.update(Delivery.REJECTED)
    dlv.settle()


class IncomingLink:
    """Messages from the client to a queue, an exchange, or (no address) each message's `to`."""

    def __init__(self, conn: AmqpConnection, link: Link, node: Queue | Exchange | None) -> None:
        self.conn = conn
        self.link = link
        self.node = node
        link.flow(WINDOW)

    def on_delivery(self, dlv: Delivery) -> None:
        link = self.link
        if dlv.partial or not dlv.readable:
            return  # the rest of a large message is still coming
        data = link.recv(dlv.pending)
        link.advance()
        if link.credit < WINDOW // 2:
            link.flow(WINDOW - link.credit)
        if dlv.settled:  # the client sent it pre-settled: at most once, no outcome wanted
            self._route(data, None)
            dlv.settle()
        else:
            self._route(data, dlv)

    def _route(self, data: bytes, dlv: Delivery | None) -> None:
        core = self.conn.core
        now = core.clock()
        try:
            message, decoded = codec.extract(data, now)
        except codec.BadMessage as exc:
            if dlv is not None:
                reject(dlv, DECODE_ERROR, str(exc))
            return
        node = self.node
        model = core.model
        pending = core.events.begin() if core.events else None
        try:
            if node is None:
                to = decoded.address
                target = model.resolve(to) if to else None
                if target is None:
                    raise _NoRoute(f"no queue or exchange named {to!r} (the message's 'to')")
                node = target
            if isinstance(node, Queue):
                result = model.enqueue(node.name, message, now)
            else:
                result = model.publish(node.name, message, now)
        except (ModelError, _NoRoute) as exc:
            if dlv is not None:
                reject(dlv, getattr(exc, "condition", NOT_FOUND), str(exc))
            return
        finally:
            if core.events:
                core.events.end()
        core.outbox.schedule()
        if dlv is None:
            return
        if not result.accepted:
            reject(dlv, result.condition or RESOURCE_LIMIT, result.description or "refused")
            return
        if pending is None:
            self._settle(dlv, None)
        else:
            pending.when_done(lambda err: self._settle(dlv, err))

    def _settle(self, dlv: Delivery, error: BaseException | None) -> None:
        if self.conn.gone:
            return
        if error is not None:
            reject(dlv, RESOURCE_LIMIT, f"not stored: {error}")
        else:
            dlv.update(Delivery.ACCEPTED)
            dlv.settle()
        self.conn.driver.wake()

    def close(self) -> None:
        pass


class _NoRoute(Exception):
    condition = NOT_FOUND


class OutgoingLink:
    """A consumer (or browser) of a queue, fed by the outbox."""

    def __init__(self, conn: AmqpConnection, link: Link, consumer: Consumer) -> None:
        self.conn = conn
        self.link = link
        self.consumer = consumer
        self.driver: ConnectionDriver = conn.driver
        self._tags = 0

    def __repr__(self) -> str:
        return f"OutgoingLink({self.link.name!r}, queue={self.consumer.queue.name!r})"

    def on_flow(self) -> None:
        core = self.conn.core
        if not self.conn.paused:
            core.model.set_credit(self.consumer, self.link.credit)
        if self.link.drain_mode:
            core.outbox.drain_requested(self)
        core.outbox.schedule()

    def send(self, qm: QueuedMessage) -> None:
        self._tags += 1
        dlv = self.link.delivery(str(self._tags))
        dlv.qs_id = qm.id
        self.link.send(codec.outgoing_bytes(qm))
        self.link.advance()
        if self.consumer.presettled or self.consumer.browse:
            dlv.settle()

    def drain(self) -> bool:
        """The receiver asked to drain: whatever credit is left after dispatch is used up."""
        if self.consumer.closed or not self.link.drain_mode:
            return False
        self.link.drained()
        self.conn.core.model.set_credit(self.consumer, self.link.credit)
        return True

    def on_delivery(self, dlv: Delivery) -> None:
        """The client's outcome for a message we sent."""
        id_: Any = getattr(dlv, "qs_id", None)
        if id_ is None or not (dlv.settled or dlv.remote_state):
            return
        model = self.conn.core.model
        state = dlv.remote_state
        if state == Delivery.ACCEPTED or (state is None and dlv.settled):
            model.accept(self.consumer, id_)
        elif state == Delivery.REJECTED:
            model.reject(self.consumer, id_)
        elif state == Delivery.RELEASED:
            model.release(self.consumer, id_)
        elif state == Delivery.MODIFIED:
            if dlv.remote.undeliverable:
                model.reject(self.consumer, id_)
            else:
                model.release(self.consumer, id_, delivery_failed=bool(dlv.remote.failed))
        else:
            return  # a non-terminal state (received): wait for the outcome
        dlv.settle()
        self.conn.core.outbox.schedule()

    def close(self) -> None:
        self.conn.core.model.unsubscribe(self.consumer)
        self.conn.core.outbox.schedule()
