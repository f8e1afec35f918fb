"""A subscription to a queue: what the AMQP layer's outgoing link is, as far as the model cares.

Made by `Broker.subscribe`, handed back by `Broker.dispatch` with each delivery, and passed to the
settlement calls. `context` is the AMQP layer's own handle (its link object, say): the model never
touches it, so a delivery `(consumer, qm)` leads straight back to the link to send on.

Modes:
- acquiring (default): each message goes to one consumer; it stays acquired until the AMQP layer
  reports the outcome (`Broker.accept/release/reject`) or the consumer closes.
- pre-settled (`presettled=True`, at-most-once): the message is dequeued as it is sent.
- browsing (`browse=True`, distribution-mode copy): sees every available message once, in arrival
  order, without acquiring it; there is nothing to settle.

`credit` is the link credit the AMQP layer last granted (`Broker.set_credit`, absolute): each
delivery uses one. Credit left after `Broker.dispatch` means nothing is available for this consumer
right now, which is what a drain request needs to know (advance the delivery count, credit 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .store import Cursor

if TYPE_CHECKING:
    from .message import QueuedMessage
    from .queue import Queue


class Consumer:
    __slots__ = (
        "acquired",
        "browse",
        "closed",
        "context",
        "credit",
        "cursor",
        "id",
        "owner",
        "presettled",
        "queue",
        "ready",
    )

    def __init__(
        self,
        id: int,
        queue: Queue,
        *,
        owner: Any = None,
        browse: bool = False,
        presettled: bool = False,
        context: Any = None,
    ) -> None:
        self.id = id
        self.queue = queue
        self.owner = owner  # the connection id; closing it closes this consumer
        self.browse = browse
        self.presettled = presettled
        self.context = context
        self.credit = 0
        self.closed = False
        # Messages sent and not yet settled, in the order acquired (dicts keep insertion order).
        self.acquired: dict[int, QueuedMessage] = {}
        self.cursor: Cursor | None = Cursor() if browse else None
        self.ready = False  # in the queue's round-robin of consumers with credit

    @property
    def mode(self) -> str:
        return "browse" if self.browse else "consume"

    def __repr__(self) -> str:
        flags = "browse" if self.browse else ("presettled" if self.presettled else "acquire")
        return (
            f"Consumer({self.id}, queue={self.queue.name!r}, {flags}, credit={self.credit}, "
            f"acquired={len(self.acquired)}{', closed' if self.closed else ''})"
        )
