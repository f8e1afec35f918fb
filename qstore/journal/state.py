"""The state a journal describes, rebuilt by applying its entries in order.

`JournalState.apply` is the one place that knows what each record means. Replay uses it to hand the
broker its durable queues, exchanges, bindings and messages; the journal keeps a body-less instance
live to learn which records a later record has cancelled, which is all compaction needs. Each call
returns the seqs it cancelled as one unit, ordered so that the cancelled records come first and the
cancelling record last: deleting a unit's prefix never changes what replay produces.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from .records import (
    Bind,
    Delivery,
    Dequeue,
    Enqueue,
    Entry,
    Epoch,
    ExchangeDeclare,
    ExchangeDelete,
    QueueDeclare,
    QueueDelete,
    Unbind,
)


@dataclass(slots=True)
class MessageState:
    msgid: int
    seq: int  # the enqueue record
    size: int  # body bytes
    priority: int
    expiry: int
    delivery_count: int
    body: bytes | None
    position: tuple[int, int]
    update_seq: int = 0  # the last Delivery record, 0 when none

    def seqs(self) -> list[int]:
        return [self.seq, self.update_seq] if self.update_seq else [self.seq]


@dataclass(slots=True)
class QueueState:
    name: str
    uuid: uuid.UUID
    arguments: dict[str, Any]
    seq: int
    messages: dict[int, MessageState] = field(default_factory=dict)  # enqueue order
    bytes: int = 0

    @property
    def depth(self) -> int:
        return len(self.messages)


@dataclass(slots=True)
class ExchangeState:
    name: str
    uuid: uuid.UUID
    type: str
    arguments: dict[str, Any]
    seq: int


@dataclass(slots=True)
class BindingState:
    exchange: str
    queue: str
    key: str
    arguments: dict[str, Any]
    seq: int


@dataclass(frozen=True, slots=True)
class EpochInfo:
    number: int
    node: uuid.UUID
    seq: int  # local seq of the epoch record
    origin: int  # first origin seq of the epoch


BindingKey = tuple[str, str, str]


def is_builtin_exchange(name: str) -> bool:
    """The AMQP built-ins every broker has: never declared, never journaled, never deleted."""
    return name == "" or name.startswith("amq.")


class JournalState:
    """Queues, exchanges, bindings and live messages, plus what is needed to compare histories."""

    def __init__(self, keep_bodies: bool = True) -> None:
        self.keep_bodies = keep_bodies
        self.queues: dict[str, QueueState] = {}
        self.exchanges: dict[str, ExchangeState] = {}
        self.bindings: dict[BindingKey, BindingState] = {}
        self.epochs: list[EpochInfo] = []
        self.last_seq = 0
        self.position: tuple[int, int] = (0, 0)
        self.max_origin = 0

    @property
    def epoch(self) -> int:
        return self.epochs[-1].number if self.epochs else 0

    def apply(self, e: Entry) -> list[int]:
        """Apply one entry; return the seqs it cancelled (possibly including its own)."""
        self.last_seq = e.seq
        if e.origin:
            self.position = (e.epoch, e.origin)
            self.max_origin = max(self.max_origin, e.origin)
        r = e.record
        match r:
            case Enqueue():
                return self._enqueue(e, r)
            case Dequeue():
                q = self.queues.get(r.queue)
                m = q.messages.pop(r.msgid, None) if q else None
                if m is None:
                    return [e.seq]
                q.bytes -= m.size  # type: ignore[union-attr]
                return [*m.seqs(), e.seq]
            case Delivery():
                q = self.queues.get(r.queue)
                m = q.messages.get(r.msgid) if q else None
                if m is None:
                    return [e.seq]
                old, m.update_seq, m.delivery_count = m.update_seq, e.seq, r.delivery_count
                return [old] if old else []
            case QueueDeclare():
                old = self.queues.get(r.name)
                garbage = self._drop_queue(old) if old else []
                self.queues[r.name] = QueueState(r.name, r.uuid, dict(r.arguments), e.seq)
                return garbage
            case QueueDelete():
                q = self.queues.get(r.name)
                if q is None or q.uuid != r.uuid:
                    return [e.seq]
                return [*self._drop_queue(q), e.seq]
            case ExchangeDeclare():
                old = self.exchanges.get(r.name)
                garbage = self._drop_exchange(old) if old else []
                self.exchanges[r.name] = ExchangeState(
                    r.name, r.uuid, r.type, dict(r.arguments), e.seq
                )
                return garbage
            case ExchangeDelete():
                x = self.exchanges.get(r.name)
                if x is None or x.uuid != r.uuid:
                    return [e.seq]
                return [*self._drop_exchange(x), e.seq]
            case Bind():
                key = (r.exchange, r.queue, r.key)
                if r.queue not in self.queues or not self._exchange_exists(r.exchange):
                    return [e.seq]
                old = self.bindings.get(key)
                self.bindings[key] = BindingState(*key, dict(r.arguments), e.seq)
                return [old.seq] if old else []
            case Unbind():
                b = self.bindings.pop((r.exchange, r.queue, r.key), None)
                return [b.seq, e.seq] if b else [e.seq]
            case Epoch():
                self.epochs.append(EpochInfo(r.number, r.node, e.seq, e.origin))
                return []
        raise AssertionError(f"unhandled record {r!r}")  # pragma: no cover

    def _exchange_exists(self, name: str) -> bool:
        """Built-in exchanges (the nameless one and `amq.*`) exist without a declare record."""
        return name in self.exchanges or is_builtin_exchange(name)

    def _enqueue(self, e: Entry, r: Enqueue) -> list[int]:
        return self.enqueue(
            e.seq, e.epoch, e.origin, r.queue, r.msgid, r.body, r.priority, r.expiry,
            r.delivery_count,
        )

    def enqueue(
        self,
        seq: int,
        epoch: int,
        origin: int,
        queue: str,
        msgid: int,
        body: bytes | memoryview,
        priority: int,
        expiry: int,
        delivery_count: int,
    ) -> list[int]:
        """Apply an Enqueue given as fields: replay's fast path skips building the record."""
        self.last_seq = seq
        if origin:
            self.position = (epoch, origin)
            if origin > self.max_origin:
                self.max_origin = origin
        q = self.queues.get(queue)
        if q is None:
            return [seq]
        old = q.messages.pop(msgid, None)
        size = len(body)
        q.messages[msgid] = MessageState(
            msgid,
            seq,
            size,
            priority,
            expiry,
            delivery_count,
            bytes(body) if self.keep_bodies else None,
            (epoch, origin),
        )
        q.bytes += size
        if old is None:
            return []
        q.bytes -= old.size
        return old.seqs()

    def _drop_queue(self, q: QueueState) -> list[int]:
        del self.queues[q.name]
        garbage = [s for m in q.messages.values() for s in m.seqs()]
        for key in [k for k in self.bindings if k[1] == q.name]:
            garbage.append(self.bindings.pop(key).seq)
        garbage.append(q.seq)
        return garbage

    def _drop_exchange(self, x: ExchangeState) -> list[int]:
        del self.exchanges[x.name]
        garbage = [self.bindings.pop(k).seq for k in [k for k in self.bindings if k[0] == x.name]]
        garbage.append(x.seq)
        return garbage

    def live_seqs(self) -> set[int]:
        """Every seq the state still depends on (used to check compaction)."""
        seqs = {q.seq for q in self.queues.values()}
        seqs.update(x.seq for x in self.exchanges.values())
        seqs.update(b.seq for b in self.bindings.values())
        seqs.update(ep.seq for ep in self.epochs)
        for q in self.queues.values():
            for m in q.messages.values():
                seqs.update(m.seqs())
        return seqs

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of the state (seqs excluded: compaction keeps meaning)."""
        return {
            "queues": {
                n: {
                    "uuid": str(q.uuid),
                    "arguments": q.arguments,
                    "messages": [
                        (m.msgid, m.priority, m.expiry, m.delivery_count, m.body, m.position)
                        for m in q.messages.values()
                    ],
                }
                for n, q in self.queues.items()
            },
            "exchanges": {
                n: {"uuid": str(x.uuid), "type": x.type, "arguments": x.arguments}
                for n, x in self.exchanges.items()
            },
            "bindings": {k: b.arguments for k, b in self.bindings.items()},
            "epochs": [(ep.number, str(ep.node), ep.origin) for ep in self.epochs],
        }
