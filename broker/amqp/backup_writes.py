"""What an admin connection on a backup may not write (seed 1.12.6).

On a backup, every queue and exchange the primary replicates (level other than `none`) is the
replication stream's alone: a message an admin puts on such a queue, directly, through the
anonymous relay, through an exchange that routes there, or as a management reply, would make the
backup's copy differ from the primary's, and after a failover a message would appear that no
client ever sent. Entities at `qpid.replicate: none` are the backup's own business.

Plain functions over the event log's levels and the model's routing: no I/O, no state. Here,
with the AMQP layer that asks them (the connection, and `$management` above it), not in
`broker/ha`: HA builds on AMQP, so AMQP must not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.model import Exchange, Message, Queue
from broker.replication import levels

if TYPE_CHECKING:
    from broker.eventlog import EventLog
    from broker.model import Broker


def replicated(events: EventLog, node: Queue | Exchange) -> bool:
    """Whether the primary replicates `node` (on a backup: whether it is the primary's)."""
    if isinstance(node, Queue):
        return events.queue_level(node.name) != levels.NONE
    return events.exchange_level(node.name) != levels.NONE


def node_refusal(events: EventLog, node: Queue | Exchange) -> str | None:
    """Why an admin on a backup may not write to (or take from) `node` itself, or None."""
    if replicated(events, node):
        return f"{node.name!r} is replicated from the primary: on a backup it can only be browsed"
    return None


def write_refusal(
    events: EventLog, model: Broker, node: Queue | Exchange, message: Message
) -> str | None:
    """Why `message`, sent to `node` on a backup, must be refused, or None: `node` is
    replicated, or it is an exchange that would route the message into a replicated queue (a
    binding from a built-in or local exchange to a replicated queue does not replicate, but the
    messages it routes land on the replicated queue all the same)."""
    refusal = node_refusal(events, node)
    if refusal is not None or isinstance(node, Queue):
        return refusal
    for q in model.route(node.name, message.subject or "", message):
        if events.queue_level(q.name) != levels.NONE:
            return (
                f"exchange {node.name!r} routes it to {q.name!r}, which is replicated from the "
                "primary: on a backup it can only be browsed"
            )
    return None
