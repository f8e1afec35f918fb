"""The state changes the model announces, in the order they happen.

The persistence edge journals them and the replication edge forwards them; replaying the stream
through a fresh model (queues/exchanges/bindings by declare/bind with the given uuids, messages with
`Broker.restore_message`, removals with `Broker.remove_message`) rebuilds the same state. The model
does not decide what is durable or replicated: each event carries what the edges need to decide
(queue durability and arguments at declare, the message's own `durable` flag on every message
event).

Delivery: listeners registered with `Broker.add_listener` are called synchronously, in order, after
the change is made and before the model call returns. A listener must not call back into the
broker and must not raise (an exception propagates to the model's caller with the state already
changed). Inside `Broker.restoring()` nothing is emitted.

`Enqueued` is the exception: it never goes to listeners. The calls that put a message
(`publish`, `enqueue`, `restore_message`) give it back to their caller, which records it (the
event log, with what the caller's outcome waits for: `EventLog.record_publish`); so each event
reaches the log once, by one road. What a publish displaces on the way (expired heads, ring
victims, a last-value predecessor) is a `Dequeued` like any other, emitted before the call
returns, so it is recorded before the publish's own `Enqueued`.

Implied changes are not repeated: `QueueDeleted` implies its messages and bindings are gone,
`ExchangeDeleted` implies its bindings are gone. Built-in exchanges never appear. Consumer
subscriptions and acquisitions are connection state, not broker state: no events.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .message import Message


class DequeueReason(enum.StrEnum):
    CONSUMED = "consumed"  # accepted by a consumer, or sent to a pre-settled one
    REJECTED = "rejected"  # the consumer's outcome was `rejected`
    EXPIRED = "expired"  # its expiry passed; met at dispatch, browse, admission or `expire()`
    RING = "ring"  # dropped by a ring queue to make room
    LVQ = "lvq"  # replaced by a newer message with the same last-value key
    PURGE = "purge"  # purged by management


@dataclass(frozen=True, slots=True)
class QueueDeclared:
    name: str
    uuid: uuid.UUID
    durable: bool
    auto_delete: bool
    exclusive_owner: Any
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueDeleted:
    name: str
    uuid: uuid.UUID


@dataclass(frozen=True, slots=True)
class ExchangeDeclared:
    name: str
    uuid: uuid.UUID
    type: str
    durable: bool
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExchangeDeleted:
    name: str
    uuid: uuid.UUID


@dataclass(frozen=True, slots=True)
class Bound:
    """A binding was made, or an existing one's arguments replaced."""

    exchange: str
    queue: str
    key: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unbound:
    exchange: str
    queue: str
    key: str


@dataclass(frozen=True, slots=True)
class Enqueued:
    """`message` was put on `queue` as `id`; its delivery count is `message.delivery_count`."""

    queue: str
    id: int
    message: Message


@dataclass(frozen=True, slots=True)
class Dequeued:
    queue: str
    id: int
    reason: DequeueReason
    durable: bool  # the message's own flag, so an edge need not remember every enqueue


@dataclass(frozen=True, slots=True)
class DeliveryCountChanged:
    queue: str
    id: int
    delivery_count: int
    durable: bool


Event = (
    QueueDeclared
    | QueueDeleted
    | ExchangeDeclared
    | ExchangeDeleted
    | Bound
    | Unbound
    | Enqueued
    | Dequeued
    | DeliveryCountChanged
)
Listener = Callable[[Event], None]


class Emitter:
    """Fans events out to listeners. `active` is a plain attribute so hot paths can skip building
    events nobody will see."""

    __slots__ = ("_listeners", "_muted", "active", "muted")

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._muted = 0
        self.active = False
        self.muted = False  # inside `restoring()`: no events are made, not even returned

    def add(self, listener: Listener) -> None:
        self._listeners.append(listener)
        self._refresh()

    def remove(self, listener: Listener) -> None:
        self._listeners.remove(listener)
        self._refresh()

    def mute(self) -> None:
        self._muted += 1
        self._refresh()

    def unmute(self) -> None:
        self._muted -= 1
        self._refresh()

    def _refresh(self) -> None:
        self.muted = self._muted > 0
        self.active = bool(self._listeners) and not self.muted

    def emit(self, event: Event) -> None:
        if self.active:
            for listener in self._listeners:
                listener(event)
