"""A message as the model sees it, and its life on one queue.

`Message` is what the AMQP layer hands in: the message's AMQP encoding exactly as received (`body`,
opaque here: the model never decodes it, so what a consumer gets is byte-for-byte what was sent)
plus the few fields the broker decides on, extracted by the AMQP layer once. It is immutable so one
instance can sit on several queues after a fan-out.

`QueuedMessage` is one message on one queue: the broker-assigned `id`, the per-queue delivery count
and acquisition state. A fan-out puts the same `Message` and the same `id` on every queue it
reaches; ids are unique per broker *publish*, so (queue, id) names a queued message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .consumer import Consumer

DEFAULT_PRIORITY = 4


@dataclass(frozen=True, slots=True)
class Message:
    """What the AMQP layer extracted from a received message, plus its bytes.

    `expiry` is an absolute time in the same clock as the `now` passed to the model (seconds), or
    None for never. `subject` is the routing key when sent to an exchange. `properties` are the
    application properties (headers exchange matching, last-value key). `delivery_count` is the
    count the message arrives with (normally 0; restored or replicated messages carry theirs).
    `message_id` is the AMQP message-id as encoded in the message (None: it has none), the key
    of a queue's dedup window (`dedup.py`).
    """

    body: bytes
    durable: bool = False
    priority: int = DEFAULT_PRIORITY
    expiry: float | None = None
    subject: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    delivery_count: int = 0
    message_id: bytes | None = None

    @property
    def size(self) -> int:
        """Bytes counted against `qpid.max_size`: the encoded message as received."""
        return len(self.body)


class State(enum.IntEnum):
    AVAILABLE = 0  # waiting on the queue for a consumer
    ACQUIRED = 1  # sent to a consumer, outcome not yet known
    DEAD = 2  # dequeued; may linger in the queue's lazy indexes until compacted


class QueuedMessage:
    """One message on one queue. Deliveries hand these to the AMQP layer.

    Read-only for callers: `id`, `message`, `delivery_count`, `first_acquirer`, `queue` (name).
    The rest is the queue's bookkeeping.
    """

    __slots__ = (
        "acquirer",
        "delivery_count",
        "id",
        "level",
        "lvq_key",
        "message",
        "queue",
        "redelivered",
        "seq",
        "size",
        "state",
    )

    def __init__(self, queue: str, id: int, message: Message, level: int = 0) -> None:
        self.queue = queue
        self.id = id
        self.message = message
        self.delivery_count = message.delivery_count
        # A message restored with a delivery count may have been acquired before the restart.
        self.redelivered = message.delivery_count > 0
        self.size = len(message.body)
        self.level = level
        self.seq = 0  # position on its queue, assigned when stored
        self.state = State.AVAILABLE
        self.acquirer: Consumer | None = None
        self.lvq_key: Any = None

    @property
    def first_acquirer(self) -> bool:
        """AMQP `first-acquirer`: False once the message has been acquired and given back."""
        return not self.redelivered

    def __repr__(self) -> str:
        return (
            f"QueuedMessage({self.queue!r}, id={self.id}, count={self.delivery_count}, "
            f"{self.state.name.lower()})"
        )
