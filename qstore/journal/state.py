"""The state a journal describes, rebuilt by applying its entries in order.

`JournalState.apply` is the one place that knows what each record means. Replay uses it to hand the
broker its durable queues, exchanges, bindings and messages; the journal keeps a body-less instance
live to learn which records a later record has cancelled, which is all compaction needs. Each call
returns the seqs it cancelled as one unit, ordered so that the cancelled records come first and the
cancelling record last: deleting a unit's prefix never changes what replay produces.

A live message is held packed (a bytes object, its body in a dict of its own), not as an object
with fields: a broker's journal holds up to millions of them, and bytes are invisible to Python's
cyclic garbage collector, which would otherwise walk every one of them at each collection of the
old generation (these collections cost the writer thread more than its LMDB work did).
`QueueState.messages` presents them as `MessageState` values, built on access.

A queue with a dedup window (argument `qstore.dedup-window` N: the broker remembers the
message-ids of its last N messages, broker/model/dedup.py) keeps its window in the journal by
keeping records: the enqueue and dequeue of a consumed message are cancelled only once N later
messages have been enqueued on the queue, so replay meets the enqueue (the message-id is in its
bytes) of every message in the window. `QueueState.window` follows it without reading messages.
"""

from __future__ import annotations

import struct
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping, ValuesView
from dataclasses import dataclass, field
from typing import Any

from qstore.exchanges import is_builtin_exchange

from .records import (
    Bind,
    Delivery,
    Dequeue,
    Enqueue,
    Entry,
    Epoch,
    ExchangeDeclare,
    ExchangeDelete,
    History,
    QueueDeclare,
    QueueDelete,
    Unbind,
)


@dataclass(slots=True)
class MessageState:
    """A live message as the journal describes it (a copy: changing it changes no state)."""

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


# A live message packed: seq, update_seq, size, expiry, origin, epoch, delivery count, priority.
_MSG = struct.Struct("=QQQQQIIB")
_SEQS = struct.Struct("=QQQ")  # its first fields: seq, update_seq, size
_pack_msg = _MSG.pack
_GONE = struct.Struct("=QQ")  # a consumed message still in its queue's window: enqueue, dequeue
DEDUP_WINDOW = "qstore.dedup-window"


def window_size(arguments: dict[str, Any]) -> int:
    """A queue's dedup window from its arguments (the broker validated them: else 0)."""
    value = arguments.get(DEDUP_WINDOW)
    if value is None or isinstance(value, bool):
        return 0
    try:
        n = int(value)
    except (TypeError, ValueError):
        return 0
    return max(n, 0)


def _seqs_of(packed: bytes) -> list[int]:
    seq, update, _ = _SEQS.unpack_from(packed)
    return [seq, update] if update else [seq]


@dataclass(slots=True)
class QueueState:
    name: str
    uuid: uuid.UUID
    arguments: dict[str, Any]
    seq: int
    packed: dict[int, bytes] = field(default_factory=dict)  # msgid -> packed, enqueue order
    bodies: dict[int, bytes] = field(default_factory=dict)  # msgid -> body, when kept
    bytes: int = 0
    window_size: int = 0  # qstore.dedup-window; 0: none
    # the last `window_size` msgids enqueued, oldest first: None while live, else the packed
    # (enqueue seq, dequeue seq) that the window keeps from compaction
    window: OrderedDict[int, bytes | None] | None = None

    def window_seqs(self) -> list[tuple[int, int, bool]]:
        """The window, oldest first: (msgid, enqueue seq, live)."""
        out = []
        if self.window is not None:
            for msgid, gone in self.window.items():
                if gone is None:
                    packed = self.packed.get(msgid)
                    if packed is not None:
                        out.append((msgid, _SEQS.unpack_from(packed)[0], True))
                else:
                    out.append((msgid, _GONE.unpack(gone)[0], False))
        return out

    @property
    def depth(self) -> int:
        return len(self.packed)

    @property
    def messages(self) -> Messages:
        """The live messages in enqueue order, by msgid (a read-only view)."""
        return Messages(self)


class Messages(Mapping[int, MessageState]):
    """A queue's live messages as `MessageState`s, each built when it is read."""

    __slots__ = ("_q",)

    def __init__(self, q: QueueState) -> None:
        self._q = q

    def _state(self, msgid: int, packed: bytes) -> MessageState:
        seq, update, size, expiry, origin, epoch, count, prio = _MSG.unpack(packed)
        body = self._q.bodies.get(msgid)
        return MessageState(msgid, seq, size, prio, expiry, count, body, (epoch, origin), update)

    def __getitem__(self, msgid: int) -> MessageState:
        return self._state(msgid, self._q.packed[msgid])

    def __contains__(self, msgid: object) -> bool:
        return msgid in self._q.packed

    def __iter__(self) -> Iterator[int]:
        return iter(self._q.packed)

    def __len__(self) -> int:
        return len(self._q.packed)

    def values(self) -> _Values:
        return _Values(self)


class _Values(ValuesView[MessageState]):
    _mapping: Messages

    def __iter__(self) -> Iterator[MessageState]:
        m = self._mapping
        for msgid, packed in m._q.packed.items():
            yield m._state(msgid, packed)


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


class JournalState:
    """Queues, exchanges, bindings and live messages, plus what is needed to compare histories."""

    def __init__(self, keep_bodies: bool = True) -> None:
        self.keep_bodies = keep_bodies
        self.queues: dict[str, QueueState] = {}
        self.exchanges: dict[str, ExchangeState] = {}
        self.bindings: dict[BindingKey, BindingState] = {}
        self.epochs: list[EpochInfo] = []
        self.last_seq = 0
        self._pos_epoch = 0  # position, kept as two ints: no tuple per record
        self._pos_origin = 0
        self.max_origin = 0

    @property
    def epoch(self) -> int:
        return self.epochs[-1].number if self.epochs else 0

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, origin seq) of the last record that had an origin seq."""
        return (self._pos_epoch, self._pos_origin)

    def apply(self, e: Entry) -> list[int]:
        """Apply one entry; return the seqs it cancelled (possibly including its own)."""
        r = e.record
        if r.__class__ is Enqueue:
            return self._enqueue(e, r)  # type: ignore[arg-type]
        self._at(e.seq, e.epoch, e.origin)
        match r:
            case Enqueue():  # a subclass (the exact class took the fast path above)
                return self._enqueue(e, r)
            case Dequeue():
                return self.dequeue(e.seq, r.queue, r.msgid)
            case Delivery():
                q = self.queues.get(r.queue)
                packed = q.packed.get(r.msgid) if q else None
                if packed is None:
                    return [e.seq]
                f = list(_MSG.unpack(packed))
                old, f[1], f[6] = f[1], e.seq, r.delivery_count
                q.packed[r.msgid] = _pack_msg(*f)  # type: ignore[union-attr]
                return [old] if old else []
            case QueueDeclare():
                old = self.queues.get(r.name)
                garbage = self._drop_queue(old) if old else []
                q = self.queues[r.name] = QueueState(r.name, r.uuid, dict(r.arguments), e.seq)
                q.window_size = window_size(r.arguments)
                if q.window_size:
                    q.window = OrderedDict()
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
            case History():  # a snapshot replaced the history: what came before says nothing
                self.epochs = [EpochInfo(n, node, e.seq, o) for n, node, o in r.epochs]
                self._pos_epoch, self._pos_origin = e.epoch, e.origin
                self.max_origin = e.origin
                return []
        raise AssertionError(f"unhandled record {r!r}")  # pragma: no cover

    def _exchange_exists(self, name: str) -> bool:
        """Built-in exchanges (the nameless one and `amq.*`) exist without a declare record."""
        return name in self.exchanges or is_builtin_exchange(name)

    def _enqueue(self, e: Entry, r: Enqueue) -> list[int]:
        return self.enqueue(
            e.seq,
            e.epoch,
            e.origin,
            r.queue,
            r.msgid,
            r.body,
            r.priority,
            r.expiry,
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
        self._at(seq, epoch, origin)
        q = self.queues.get(queue)
        if q is None:
            return [seq]
        msgs = q.packed
        old = msgs.pop(msgid, None)
        size = len(body)
        msgs[msgid] = _pack_msg(seq, 0, size, expiry, origin, epoch, delivery_count, priority)
        if self.keep_bodies:
            q.bodies[msgid] = bytes(body)
        q.bytes += size
        if old is None:
            window = q.window
            if window is None:
                return []
            prior = window.pop(msgid, None)  # (msgids are not reused: only a test reuses one)
            garbage = list(_GONE.unpack(prior)) if prior is not None else []
            window[msgid] = None
            if len(window) > q.window_size:
                gone = window.popitem(last=False)[1]  # the oldest leaves: kept no longer
                if gone is not None:
                    garbage.extend(_GONE.unpack(gone))
            return garbage
        seq0, update, size0 = _SEQS.unpack_from(old)
        q.bytes -= size0
        return [seq0, update] if update else [seq0]

    def _at(self, seq: int, epoch: int, origin: int) -> None:
        """The last record applied is `seq`; one with an origin seq moves the position."""
        self.last_seq = seq
        if origin:
            self._pos_epoch = epoch
            self._pos_origin = origin
            if origin > self.max_origin:
                self.max_origin = origin

    def dequeued(self, seq: int, epoch: int, origin: int, queue: str, msgid: int) -> list[int]:
        """Apply a Dequeue given as fields, position included (the writer's fast path)."""
        self._at(seq, epoch, origin)
        return self.dequeue(seq, queue, msgid)

    def dequeue(self, seq: int, queue: str, msgid: int) -> list[int]:
        """Apply a Dequeue given as fields (its position is the caller's to set)."""
        q = self.queues.get(queue)
        packed = q.packed.pop(msgid, None) if q else None
        if packed is None:
            return [seq]
        seq0, update, size = _SEQS.unpack_from(packed)
        q.bytes -= size  # type: ignore[union-attr]
        if self.keep_bodies:
            q.bodies.pop(msgid, None)  # type: ignore[union-attr]
        window = q.window  # type: ignore[union-attr]
        if window is not None and msgid in window:  # its id stays: so do its records
            window[msgid] = _GONE.pack(seq0, seq)
            return [update] if update else []
        return [seq0, update, seq] if update else [seq0, seq]

    def _drop_queue(self, q: QueueState) -> list[int]:
        del self.queues[q.name]
        garbage = [s for packed in q.packed.values() for s in _seqs_of(packed)]
        if q.window is not None:
            garbage.extend(s for g in q.window.values() if g is not None for s in _GONE.unpack(g))
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
            for packed in q.packed.values():
                seqs.update(_seqs_of(packed))
            if q.window is not None:
                seqs.update(s for g in q.window.values() if g is not None for s in _GONE.unpack(g))
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
                    **({"window": list(q.window)} if q.window is not None else {}),
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
