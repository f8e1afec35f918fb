"""Start-up recovery: the model rebuilt from the broker's own journal.

Every durable queue, exchange, binding and message comes back, in order, with its delivery count.
The journal's open-time replay keeps no bodies (a restart holds only metadata while scanning); each
restored message's body is read back by its seq. Only last-value queues need a restored message
decoded, for its key property. A queue's dedup window comes back from the enqueue records the
journal keeps for it (qstore/journal/state.py): the message-id of each is read from its bytes,
with the entities (the messages restored later leave the window alone).

Two steps: the entities (queues, exchanges, bindings: few, at once: `restore_entities`), then the
messages (`MessageRestore`, a chunk per step). A standalone broker does both before it listens.
An HA member restores its messages in the background while it already catches up with its primary:
the messages are taken as the journal held them at open, so what the replication stream journals
meanwhile changes nothing of what is restored (see broker/ha/replicator.py for the rest).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

from broker.amqp import codec
from broker.eventlog import AUTO_DELETE_KEY, EventLog
from broker.model import Broker, Message
from qstore.journal import Enqueue, Journal, MessageState, QueueState

log = logging.getLogger("qstore.recovery")

CHUNK = 64  # messages per step of a background restore: under a ms of the loop, so that the
# catch-up's batches, which come between, go first (30000 behind: ready 1.25 -> 1.05 s)


def restore_entities(model: Broker, journal: Journal, events: EventLog) -> MessageRestore:
    """Exchanges, queues and bindings into `model` now (the event log learns them, writes
    nothing); return what restores their messages."""
    state = journal.state
    with events.adopting_state():
        for x in state.exchanges.values():
            model.declare_exchange(x.name, x.type, durable=True, arguments=x.arguments, uuid=x.uuid)
        for q in state.queues.values():
            args = dict(q.arguments)
            auto_delete = bool(args.pop(AUTO_DELETE_KEY, False))
            model.declare_queue(
                q.name, durable=True, auto_delete=auto_delete, arguments=args, uuid=q.uuid
            )
            if q.window is not None:
                _restore_window(model, journal, q)
        for b in state.bindings.values():
            model.bind(b.exchange, b.queue, b.key, b.arguments)
    return MessageRestore(model, journal)


def _restore_window(model: Broker, journal: Journal, q: QueueState) -> None:
    """The queue's dedup window as it was: the ids of the messages the journal's window holds,
    oldest first, consumed ones included (the journal kept their enqueue records)."""
    window = model.queue(q.name).dedup
    if window is None:  # pragma: no cover - the same arguments give both a window
        return
    ids: list[bytes | None] = []
    for msgid, seq, _live in q.window_seqs():
        entry = journal.get(seq)
        if entry is None or not isinstance(entry.record, Enqueue):
            log.error("journal lost the enqueue of message %s on %r (dedup window)", msgid, q.name)
            continue
        ids.append(codec.message_id(entry.record.body))
    window.reset(ids)


class MessageRestore:
    """The journal's messages at open, restored into the model a chunk per `step`."""

    def __init__(self, model: Broker, journal: Journal) -> None:
        self.model = model
        self.journal = journal
        # the live messages now, frozen (a copy of each queue's index: the writer's state moves on)
        self._queues = [
            QueueState(q.name, q.uuid, q.arguments, q.seq, packed=dict(q.packed))
            for q in journal.state.queues.values()
            if q.packed
        ]
        self.total = sum(q.depth for q in self._queues)
        self.restored = 0
        self.lost = 0  # messages whose enqueue record could not be read back
        self._left: Iterator[tuple[str, bool, MessageState]] = self._each()

    def __len__(self) -> int:
        return self.total

    def _each(self) -> Iterator[tuple[str, bool, MessageState]]:
        for q in self._queues:
            lvq = "qpid.last_value_queue_key" in q.arguments
            for m in q.messages.values():
                yield q.name, lvq, m

    def step(self, n: int = CHUNK) -> bool:
        """Restore up to `n` more messages; False once every one is."""
        chunk = [m for _, m in zip(range(n), self._left, strict=False)]
        if not chunk:
            return False
        bodies = self.journal.bodies([m.seq for _, _, m in chunk])
        model = self.model
        with model.restoring():  # no event: the journal has them, nothing to write
            for (queue, lvq, m), body in zip(chunk, bodies, strict=True):
                if body is None:
                    log.error("journal lost the body of message %s on %r", m.msgid, queue)
                    self.lost += 1
                    continue
                props = codec.extract(body, 0.0)[0].properties if lvq else {}
                msg = Message(
                    body=body,
                    durable=True,
                    priority=m.priority,
                    expiry=m.expiry / 1000 if m.expiry else None,
                    properties=props,
                    delivery_count=m.delivery_count,
                )
                model.restore_message(queue, m.msgid, msg, window=False)  # restored at start
                self.restored += 1
        return True


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """Around a whole restore: no pass of the cyclic garbage collector, which would rescan a
    heap that only grows (as replay does, qstore/journal/reader.py); per step was not enough
    (each step that enables it again may set off a full pass)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
