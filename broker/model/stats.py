"""Read-only snapshots of counters, for management and `qstore-stat`.

Counters are cumulative since the broker started (restored messages count as enqueues, so
depth == enqueues - dequeues holds per queue). Broker totals include queues and exchanges that
have since been deleted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueStats:
    name: str
    durable: bool
    depth: int  # messages on the queue, acquired included
    bytes: int  # their encoded size
    enqueues: int
    dequeues: int
    consumers: int  # subscriptions, browsers included
    acquired: int  # sent to consumers, outcome not yet known
    flow_stopped: bool = False  # past its flow-stop mark: publishers are not credited
    flow_stopped_count: int = 0  # times it was flow-stopped
    duplicates_dropped: int = 0  # messages whose id was in its dedup window: not enqueued
    dedup_window: int = 0  # the window's size (qstore.dedup-window; 0: off)


@dataclass(frozen=True, slots=True)
class ExchangeStats:
    name: str
    type: str
    durable: bool
    bindings: int
    routed: int  # messages that reached at least one queue
    dropped: int  # messages that matched no binding


@dataclass(frozen=True, slots=True)
class BrokerStats:
    queues: int
    exchanges: int
    consumers: int
    depth: int
    bytes: int
    acquired: int
    enqueues: int
    dequeues: int
    routed: int
    dropped: int
    flow_stopped_queues: int = 0  # queues flow-stopped now
    max_memory: int = 0  # --max-memory in bytes (0: none), compared with `bytes`
    memory_alarm: bool = False  # `bytes` passed max_memory: no publisher is credited
    memory_alarm_count: int = 0  # times the alarm was raised
