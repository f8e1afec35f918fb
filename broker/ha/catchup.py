"""The catch-up protocol's decisions, both ends (plain functions, no I/O).

A backup that connects states its last position (epoch, seq) and the identity (number, node) of
that epoch. If its history is a prefix of the primary's (the primary's epoch at that seq is the
same epoch) and the primary still has every replicated event after it in its recent log, it gets
the tail from there; otherwise its replicated state is replaced by a snapshot of the primary's
(configuration first, then messages, in compressed batches), followed by the live tail. Either way
the backup is `catch-up` until it has acknowledged the primary's position at connection.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from broker.amqp import codec
from broker.history import EpochId
from broker.model import Broker, Queue, QueuedMessage
from broker.replication import levels, stream
from broker.replication.stream import AUTO_DELETE, DURABLE, EXCLUSIVE, Item
from qstore.journal import Bind, Dequeue, Enqueue, ExchangeDeclare, QueueDeclare


@dataclass(frozen=True)
class BackupPosition:
    epoch: int
    node: str
    seq: int
    history: tuple[EpochId, ...] = ()  # the backup's epochs, oldest first

    @classmethod
    def from_wire(cls, d: Any, epochs: Any = None) -> BackupPosition:
        if not isinstance(d, dict):
            return cls(0, "", 0)
        history = tuple(
            EpochId(int(e[0]), str(e[1]), int(e[2]))
            for e in (epochs if isinstance(epochs, list) else [])
            if isinstance(e, list | tuple) and len(e) == 3
        )
        return cls(int(d.get("epoch", 0)), str(d.get("node", "")), int(d.get("seq", 0)), history)


def common_prefix(backup: BackupPosition, history: list[EpochId], primary_seq: int) -> int:
    """The last seq up to which the backup's history is the primary's: histories diverge at the
    first seq where their epoch identities differ (an epoch one side has and the other lacks)."""
    end = min(backup.seq, primary_seq)
    ours = [(e.number, e.node, e.origin) for e in history if e.origin <= end]
    theirs = [(e.number, e.node, e.origin) for e in backup.history if e.origin <= end]
    for a, b in zip(ours, theirs, strict=False):
        if a != b:
            return min(a[2], b[2]) - 1
    if len(ours) != len(theirs):
        longer = ours if len(ours) > len(theirs) else theirs
        return longer[min(len(ours), len(theirs))][2] - 1
    return end


def epoch_at(history: list[EpochId], seq: int) -> EpochId:
    """The epoch that holds `seq` in a history (epoch 0 before the first epoch record)."""
    found = EpochId(0, "", 0)
    for ep in history:
        if ep.origin <= seq:
            found = ep
        else:
            break
    return found


@dataclass(frozen=True)
class Plan:
    snapshot: bool
    tail_from: int = 0  # with snapshot False: send every replicated event with seq > tail_from
    why: str = ""
    truncate_after: int | None = None  # the backup drops its stream records after this seq


def plan(
    backup: BackupPosition, history: list[EpochId], primary_seq: int, recent_from: int
) -> Plan:
    """Tail or snapshot. `recent_from`: the primary's recent log holds every replicated event
    with seq > recent_from (up to `primary_seq`)."""
    if backup.history:
        common = common_prefix(backup, history, primary_seq)
        if common < backup.seq:
            return Plan(
                True,
                why=f"histories diverge after seq {common} (backup at {backup.seq})",
                truncate_after=common,
            )
    if backup.seq > primary_seq:
        return Plan(True, why=f"backup is ahead (seq {backup.seq} > {primary_seq})")
    mine = epoch_at(history, backup.seq)
    if backup.seq and (mine.number, mine.node) != (backup.epoch, backup.node):
        return Plan(
            True,
            why=f"histories diverge at seq {backup.seq}: backup epoch {backup.epoch}, "
            f"primary epoch {mine.number}",
        )
    if backup.seq < recent_from:
        return Plan(True, why=f"recent log starts after seq {backup.seq}")
    return Plan(False, backup.seq, why="history is a prefix")


def snapshot_items(
    model: Broker,
    queue_level: Any,
    exchange_level: Any,
    epoch: int,
    seq: int,
    bindings: dict[tuple[str, str, str], tuple[bool, bool]],
    epochs: list[list[Any]] | None = None,
) -> Iterator[Item]:
    """The primary's replicated state as items, all at its current position: exchanges, queues,
    bindings, then the messages of queues replicated at level `all` (acquired ones included, with
    their delivery counts). The end carries the primary's `epochs` (broker/history.py: wire):
    the backup's history from then on.

    The state is taken now: the configuration as items, the messages as references to them. The
    message items are made as the iterator is read (a snapshot of a million messages made at
    once stalled its primary for seconds): what a message carries does not change, and what
    happens to it after now (consumed, delivery count) follows the snapshot as events."""
    head = [stream.control(stream.SNAPSHOT_BEGIN, epoch, seq, position=[epoch, seq])]
    for x in model.exchanges.values():
        if x.builtin or exchange_level(x.name) == levels.NONE:
            continue
        xargs = {levels.KEY: exchange_level(x.name), **x.arguments}
        rec = ExchangeDeclare(x.name, x.uuid, x.type, xargs)
        head.append(stream.event(rec, epoch, seq, DURABLE if x.durable else 0))
    for q in model.queues.values():
        if queue_level(q.name) == levels.NONE:
            continue
        flags = (
            (DURABLE if q.durable else 0)
            | (AUTO_DELETE if q.auto_delete else 0)
            | (EXCLUSIVE if q.exclusive_owner is not None else 0)
        )
        qargs = {levels.KEY: queue_level(q.name), **q.arguments}
        head.append(stream.event(QueueDeclare(q.name, q.uuid, qargs), epoch, seq, flags))
    for (x, qn, k), (_durable, replicated) in bindings.items():
        if replicated:
            binding = model.queues[qn].bindings.get((x, k)) if qn in model.queues else None
            args = dict(getattr(binding, "arguments", None) or {})
            head.append(stream.event(Bind(x, qn, k, args), epoch, seq))
    # the state at attach, by reference: the items are made as they are sent
    held = [
        (q.name, _gone_ids(q), q.durable, list(q.messages()))
        for q in model.queues.values()
        if queue_level(q.name) == levels.ALL
    ]
    end = stream.control(
        stream.SNAPSHOT_END, epoch, seq, position=[epoch, seq], epochs=list(epochs or [])
    )
    return itertools.chain(head, _message_items(model, held, epoch, seq), (end,))


def _message_items(
    model: Broker,
    held: list[tuple[str, list[bytes], bool, list[QueuedMessage]]],
    epoch: int,
    seq: int,
) -> Iterator[Item]:
    for name, gone, durable, messages in held:
        yield from _window_items(model, name, gone, durable, epoch, seq)
        for qm in messages:
            m = qm.message
            expiry = int(m.expiry * 1000) if m.expiry else 0
            rec = Enqueue(name, qm.id, m.body, m.priority, expiry, qm.delivery_count)
            yield stream.event(rec, epoch, seq, DURABLE if m.durable else 0)


def _gone_ids(q: Queue) -> list[bytes]:
    """The ids of the queue's dedup window whose messages are gone (consumed), oldest first."""
    if q.dedup is None:
        return []
    live = {qm.message.message_id for qm in q.messages()}
    return [mid for mid in q.dedup.entries() if mid is not None and mid not in live]


def _window_items(
    model: Broker, queue: str, gone: list[bytes], durable: bool, epoch: int, seq: int
) -> Iterator[Item]:
    """Each id of the queue's dedup window whose message is gone, as the enqueue of a message
    of nothing but that id (`codec.id_only`, under a fresh message id) and its dequeue: the
    backup's window and journal then hold them as if it had applied them. They come before the
    queue's live messages, which are mostly the newer ones; a message without an id leaves no
    slot (the backup keeps the ids it has a little longer)."""
    flags = DURABLE if durable else 0
    for mid in gone:
        msgid = model.take_id()
        yield stream.event(Enqueue(queue, msgid, codec.id_only(mid)), epoch, seq, flags)
        yield stream.event(Dequeue(queue, msgid), epoch, seq)


def node_text(node: uuid.UUID | str | None) -> str:
    return "" if node is None else str(node)
