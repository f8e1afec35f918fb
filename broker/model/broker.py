"""The broker core: one object the AMQP, management and recovery code call. No I/O, no clock.

Calls that depend on time take `now` (seconds, the same clock as `Message.expiry`). Every state
change makes an event (`events.py`), in order: announced to listeners before the call returns, or
(a message put) handed back by the call.

Message ids: each publish that is accepted by at least one queue gets the next id (1, 2, ...);
all the queues a fan-out reaches hold the message under that same id. A caller may pass the id
(replica apply, restore); the counter then moves past it so ids never repeat.

Publishing is all-or-nothing: if any matched queue refuses (reject policy at its limit), no queue
gets the message and the result is rejected with `amqp:resource-limit-exceeded`, so a sender that
retries creates no duplicates. A message that matches no binding is accepted and dropped (counted
on the exchange's `dropped`). A message whose message-id a queue's dedup window holds (a
producer's resend) is not put on that queue (counted on its `duplicates_dropped`); if no queue is
left it is accepted and dropped (`dedup.py`).

Calls in, events out: a call that puts a message (`publish`, `enqueue`, `restore_message`) gives
back its `Enqueued` events (`PublishResult.enqueued`) instead of emitting them, and the caller
hands them to whoever records them (the event log: `EventLog.record_publish`, which returns what
the sender's outcome waits for), so nothing is carried between the two calls in a field. Every
other change (declares, dequeues, those of messages a publish displaced included) goes to the
listeners.

Typical use by the AMQP layer:
    result = broker.publish("amq.topic", msg, now)     # or broker.enqueue("q", msg, now)
    pending = events.record_publish(result)            # its enqueues, journaled and replicated
    c = broker.subscribe("q", owner=conn_id, context=link); broker.set_credit(c, link.credit)
    for consumer, qm in broker.dispatch(now): send qm.message.body on consumer.context
    broker.accept(consumer, qm.id) / release(..., delivery_failed=True) / reject(...)
    broker.close_connection(conn_id)                   # its consumers' messages come back

Not thread-safe: one thread (the event loop) owns the broker and every object it hands out.

Start-up restore: inside `with broker.restoring():` declare exchanges and queues with their
uuids, bind, then `restore_message` each message in queue order; nothing is emitted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .consumer import Consumer
from .errors import InvalidField, PreconditionFailed, ResourceLocked
from .events import DequeueReason, Enqueued
from .message import Message
from .queue import Delivery, Queue
from .registry import Registry
from .stats import BrokerStats

log = logging.getLogger(__name__)

RESOURCE_LIMIT = "amqp:resource-limit-exceeded"


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The outcome for the sender. `enqueued`: the message's `Enqueued` event on each queue it
    went to, in order (empty when dropped unrouted, a duplicate, or rejected); they are not
    emitted, the caller records them. `id` is its message id, None unless some queue took it."""

    accepted: bool
    id: int | None = None
    enqueued: tuple[Enqueued, ...] = ()
    condition: str | None = None
    description: str | None = None

    @property
    def queues(self) -> tuple[str, ...]:
        """The names of the queues the message went to (made when asked: most publishes never
        ask, and the events carry them)."""
        return tuple([e.queue for e in self.enqueued])


DROPPED = PublishResult(True)
DUPLICATE = PublishResult(True)  # every queue it reached had its message-id in its dedup window


class Broker(Registry):
    """The broker core; see the module docstring. Entity management is in `Registry`."""

    def __init__(self) -> None:
        super().__init__()
        self._next_id = 1
        self._next_consumer = 1

    @property
    def next_id(self) -> int:
        return self._next_id

    @next_id.setter
    def next_id(self, value: int) -> None:
        """Move the id counter forward (recovery: past every id the journal ever used)."""
        self._next_id = max(self._next_id, value)

    # -- messages in ---------------------------------------------------------------------------

    def route(self, exchange: str, routing_key: str, message: Message) -> list[Queue]:
        """The queues a message would go to (no side effects)."""
        return self.exchange(exchange).match(routing_key, message)

    def publish(
        self,
        exchange: str,
        message: Message,
        now: float,
        *,
        routing_key: str | None = None,
        id: int | None = None,
    ) -> PublishResult:
        """Route through an exchange (routing key: `routing_key`, else the subject, else "")."""
        x = self.exchange(exchange)
        if routing_key is None:
            routing_key = message.subject or ""
        targets = x.match(routing_key, message)
        if not targets:
            x.dropped += 1
            return DROPPED
        result = self._deliver(targets, message, now, id)
        if result.accepted:
            x.routed += 1
        return result

    def enqueue(
        self, queue: str, message: Message, now: float, *, id: int | None = None
    ) -> PublishResult:
        """Put a message straight on a queue (an AMQP address naming a queue)."""
        return self._deliver([self.queue(queue)], message, now, id)

    def _deliver(
        self, targets: list[Queue], message: Message, now: float, id: int | None
    ) -> PublishResult:
        refusals = None
        mid = message.message_id
        if mid is not None:
            targets = self._not_duplicates(targets, mid)
            if not targets:
                return DUPLICATE
        for q in targets:
            if id is not None and q.get(id) is not None:
                raise PreconditionFailed(f"message id {id} is already on queue {q.name!r}")
            why = q.admit(message, now)
            if why is not None:
                refusals = [*(refusals or ()), why]
        if refusals:
            return PublishResult(False, None, (), RESOURCE_LIMIT, "; ".join(refusals))
        id = self._take_id(id)
        for q in targets:
            q.put(id, message)
        if len(targets) == 1:  # the usual case, without a comprehension's function and list
            return PublishResult(True, id, (Enqueued(targets[0].name, id, message),))
        return PublishResult(True, id, tuple([Enqueued(q.name, id, message) for q in targets]))

    @staticmethod
    def _not_duplicates(targets: list[Queue], mid: bytes) -> list[Queue]:
        """The targets whose dedup window does not hold `mid`; the others count a duplicate."""
        kept = targets
        for q in targets:
            w = q.dedup
            if w is not None and mid in w:
                w.dropped += 1
                if kept is targets:
                    kept = list(targets)
                kept.remove(q)
        return kept

    def _take_id(self, id: int | None) -> int:
        if id is None:
            id = self._next_id
            self._next_id += 1
            return id
        if not isinstance(id, int) or isinstance(id, bool) or not 0 < id < 2**64:
            raise InvalidField(f"message id must be an integer from 1 to 2**64-1, got {id!r}")
        if id >= self._next_id:
            self._next_id = id + 1
        return id

    def take_id(self) -> int:
        """A message id no message has or will have (a snapshot's dedup window entries)."""
        return self._take_id(None)

    def restore_message(
        self, queue: str, id: int, message: Message, *, window: bool = True
    ) -> Enqueued | None:
        """Put a message back exactly as the journal or the primary had it: at the back, with its
        id and `message.delivery_count`, bypassing limits and last-value replacement (its source
        already applied them). Returns its `Enqueued` event for the caller to record (not
        emitted), None inside `restoring()` (a restore makes no events, and no garbage per
        message). `window=False`: the queue's dedup window is restored on its own (from the
        journal at start)."""
        q = self.queue(queue)
        if q.get(id) is not None:
            raise PreconditionFailed(f"message id {id} is already on queue {queue!r}")
        id = self._take_id(id)
        q.put(id, message, policy=False, window=window)
        return None if self._em.muted else Enqueued(queue, id, message)

    def remove_message(
        self, queue: str, id: int, reason: DequeueReason = DequeueReason.CONSUMED
    ) -> bool:
        """Dequeue one message by id, even if acquired (replica apply). False if not there."""
        return self.queue(queue).discard(id, reason)

    def set_delivery_count(self, queue: str, id: int, count: int) -> bool:
        """Set a message's delivery count (replica apply). False if not there."""
        return self.queue(queue).set_delivery_count(id, count)

    def purge(self, queue: str) -> int:
        """Drop the queue's available messages; return how many."""
        return self.queue(queue).purge()

    def expire(self, now: float) -> int:
        """Sweep every queue for expired messages (a housekeeping timer); return how many."""
        return sum(q.expire(now) for q in list(self.queues.values()))

    # -- consumers -----------------------------------------------------------------------------

    def subscribe(
        self,
        queue: str,
        *,
        owner: Any = None,
        browse: bool = False,
        presettled: bool = False,
        credit: int = 0,
        context: Any = None,
    ) -> Consumer:
        """Start consuming (or browsing) a queue; `owner` is the connection id."""
        q = self.queue(queue)
        if q.exclusive_owner is not None and owner != q.exclusive_owner:
            raise ResourceLocked(f"queue {queue!r} is exclusive to the connection that declared it")
        c = Consumer(
            self._next_consumer,
            q,
            owner=owner,
            browse=browse,
            presettled=presettled,
            context=context,
        )
        self._next_consumer += 1
        c.credit = max(0, credit)
        q.add_consumer(c)
        if owner is not None:
            self._by_owner.setdefault(owner, {})[c] = None
        return c

    def set_credit(self, consumer: Consumer, credit: int) -> None:
        """The link credit the receiver now grants (absolute, not a delta)."""
        if not consumer.closed:
            consumer.credit = max(0, credit)
            consumer.queue.credit_changed(consumer)

    def unsubscribe(self, consumer: Consumer) -> None:
        """Close a consumer: its acquired messages return in order with delivery count + 1.
        An auto-delete queue whose last consumer this was is deleted."""
        if consumer.closed:
            return
        q = consumer.queue
        q.remove_consumer(consumer)
        self._forget_owner(consumer)
        if q.auto_delete and q.had_consumers and not q.consumers and not q.deleted:
            log.info("queue %r auto-deleted: its last consumer went", q.name)
            self._delete_queue(q)

    def close_connection(self, owner: Any) -> None:
        """A connection closed or died: close its consumers (messages come back, count + 1);
        exclusive queues it owned are deleted if auto-delete, else no longer exclusive."""
        for c in list(self._by_owner.pop(owner, ())):
            self.unsubscribe(c)
        for name in sorted(self._owned.pop(owner, ())):
            q = self.queues.get(name)
            if q is None:
                continue
            if q.auto_delete:
                self._delete_queue(q)
            else:
                q.exclusive_owner = None

    def dispatch(self, now: float) -> list[Delivery]:
        """The deliveries to send now, as (consumer, queued message) pairs, credit taken."""
        out: list[Delivery] = []
        if self._dirty:
            queues = list(self._dirty)
            self._dirty.clear()
            for q in queues:
                q.dispatch(now, out)
        return out

    def accept(self, consumer: Consumer, id: int) -> bool:
        """Outcome accepted: the message is dequeued. False if the consumer does not hold it."""
        return not consumer.closed and consumer.queue.settle(consumer, id, DequeueReason.CONSUMED)

    def reject(self, consumer: Consumer, id: int) -> bool:
        """Outcome rejected: the message is dropped."""
        return not consumer.closed and consumer.queue.settle(consumer, id, DequeueReason.REJECTED)

    def release(self, consumer: Consumer, id: int, *, delivery_failed: bool = False) -> bool:
        """Outcome released (or modified): back to its original position; with
        `delivery_failed` (modified with delivery-failed) its delivery count goes up by one."""
        return not consumer.closed and consumer.queue.release(consumer, id, delivery_failed)

    # -- stats ---------------------------------------------------------------------------------

    def stats(self) -> BrokerStats:
        qs = [q.stats() for q in self.queues.values()]
        xs = list(self.exchanges.values())
        return BrokerStats(
            queues=len(qs),
            exchanges=len(xs),
            consumers=sum(s.consumers for s in qs),
            depth=sum(s.depth for s in qs),
            bytes=sum(s.bytes for s in qs),
            acquired=sum(s.acquired for s in qs),
            enqueues=self._retired[0] + sum(s.enqueues for s in qs),
            dequeues=self._retired[1] + sum(s.dequeues for s in qs),
            routed=self._retired[2] + sum(x.routed for x in xs),
            dropped=self._retired[3] + sum(x.dropped for x in xs),
            flow_stopped_queues=self.usage.stopped,
            max_memory=self.usage.limit,
            memory_alarm=self.usage.alarm,
            memory_alarm_count=self.usage.alarms,
        )
