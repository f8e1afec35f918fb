"""Start-up recovery: the model rebuilt from the broker's own journal.

Every durable queue, exchange, binding and message comes back, in order, with its delivery count.
The journal's open-time replay keeps no bodies (a restart holds only metadata while scanning); each
restored message's body is read back by its seq. Only last-value queues need a restored message
decoded, for its key property. A queue's dedup window comes back from the enqueue records the
journal keeps for it (qstore/journal/state.py): the message-id of each is read from its bytes.
"""

from __future__ import annotations

import logging

from broker.amqp import codec
from broker.eventlog import AUTO_DELETE_KEY, EventLog
from broker.model import Broker, Message
from qstore.journal import Enqueue, Journal
from qstore.journal.state import QueueState

log = logging.getLogger("qstore.recovery")


def restore(model: Broker, journal: Journal, events: EventLog) -> int:
    """Rebuild `model` from `journal` before anything is appended; return the message count."""
    state = journal.state
    count = 0
    with events.adopting_state():
        for x in state.exchanges.values():
            model.declare_exchange(x.name, x.type, durable=True, arguments=x.arguments, uuid=x.uuid)
        for q in state.queues.values():
            args = dict(q.arguments)
            auto_delete = bool(args.pop(AUTO_DELETE_KEY, False))
            model.declare_queue(
                q.name, durable=True, auto_delete=auto_delete, arguments=args, uuid=q.uuid
            )
            lvq = "qpid.last_value_queue_key" in args
            for m in q.messages.values():
                entry = journal.get(m.seq)
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
                model.restore_message(q.name, m.msgid, msg)
                count += 1
            if q.window is not None:
                _restore_window(model, journal, q)
        for b in state.bindings.values():
            model.bind(b.exchange, b.queue, b.key, b.arguments)
    return count


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
