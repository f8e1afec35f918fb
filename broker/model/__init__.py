"""qstore's broker core: queues, exchanges, bindings, routing, consumers and settlement, no I/O.

The AMQP layer drives a `Broker` with plain calls (`publish`/`enqueue`, `subscribe`, `set_credit`,
`dispatch(now)`, `accept`/`release`/`reject`, `close_connection`); the persistence and replication
edges listen to its events (`events.py`). Time is always passed in as `now` (seconds). Refusals are
`ModelError`s carrying an AMQP condition. One concept per module:

- `message`   Message (what was received) and QueuedMessage (one message on one queue)
- `arguments` queue/exchange argument validation, priority levels
- `store`     a queue's message indexes (FIFO per priority level, by id, arrival order)
- `queue`     a queue's policies: limits, ring, last-value, TTL, dispatch, settlement
- `consumer`  a subscription: credit, acquiring / pre-settled / browsing
- `topic`     topic pattern matching
- `exchange`  exchange types and bindings
- `events`    the event dataclasses and their delivery
- `stats`     counter snapshots
- `broker`    the facade tying them together
"""

from .arguments import QueueSettings
from .broker import Broker, PublishResult
from .consumer import Consumer
from .errors import (
    InvalidField,
    ModelError,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    ResourceLimitExceeded,
    ResourceLocked,
)
from .events import (
    Bound,
    DeliveryCountChanged,
    Dequeued,
    DequeueReason,
    Enqueued,
    Event,
    ExchangeDeclared,
    ExchangeDeleted,
    Listener,
    QueueDeclared,
    QueueDeleted,
    Unbound,
)
from .exchange import Binding, Exchange
from .message import Message, QueuedMessage
from .queue import Delivery, Queue
from .stats import BrokerStats, ExchangeStats, QueueStats

__all__ = [
    "Binding",
    "Bound",
    "Broker",
    "BrokerStats",
    "Consumer",
    "Delivery",
    "DeliveryCountChanged",
    "DequeueReason",
    "Dequeued",
    "Enqueued",
    "Event",
    "Exchange",
    "ExchangeDeclared",
    "ExchangeDeleted",
    "ExchangeStats",
    "InvalidField",
    "Listener",
    "Message",
    "ModelError",
    "NotAllowed",
    "NotFound",
    "PreconditionFailed",
    "PublishResult",
    "Queue",
    "QueueDeclared",
    "QueueDeleted",
    "QueueSettings",
    "QueueStats",
    "QueuedMessage",
    "ResourceLimitExceeded",
    "ResourceLocked",
    "Unbound",
]
