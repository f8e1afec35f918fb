"""Producer flow control: when a queue, or the broker as a whole, holds too much, producers wait.

Queue flow limits are qpidd's (`QueueFlowLimit`): a queue whose depth passes `qpid.flow_stop_count`
messages or whose bytes pass `qpid.flow_stop_size` is *flow-stopped*; it resumes once it is below
`qpid.flow_resume_count` and `qpid.flow_resume_size` again. Unset, the stop marks are 80% of the
queue's limits (`qpid.max_count`, `qpid.max_size`, the latter possibly from
`--default-queue-limit`) and the resume marks 70%; a stop mark of 0 turns that dimension off, a
resume mark of 0 means "at the stop mark". Ring queues are never flow-stopped (their size is
bounded by design, as in qpidd). A flow-stopped queue still takes what it is sent up to its limit,
where its policy (reject, ring) applies as before: flow control only stops *granting credit* to
the links that publish into it (the AMQP layer's business; see `broker.amqp.links`).

The broker-wide memory watermark (`--max-memory`, RabbitMQ's memory alarm) is `Usage`: an
estimate of the memory the messages held by all queues take, counted by the queues as messages
come and go: each message's bytes plus `MESSAGE_OVERHEAD` for what the broker keeps beside them
(a message fanned out to N queues counts N times). The bytes alone would let small messages take
twice the limit: bench/limits_bench.py measured about 1.1 KiB of resident memory per queued 1 KiB
message beyond its bytes. Above the limit the alarm is raised and no publishing link is
credited; it clears below `RESUME_SHARE` of the limit.

Everything here is decisions and counters; no I/O and no clock. The one `listener` (set by the
AMQP layer) hears of each change, synchronously, from inside the model call that caused it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidField

if TYPE_CHECKING:
    from .queue import Queue

STOP_COUNT = "qpid.flow_stop_count"
STOP_SIZE = "qpid.flow_stop_size"
RESUME_COUNT = "qpid.flow_resume_count"
RESUME_SIZE = "qpid.flow_resume_size"
KEYS = (STOP_COUNT, STOP_SIZE, RESUME_COUNT, RESUME_SIZE)

STOP_RATIO = 0.80  # qpidd's --default-flow-stop-threshold (percent of the limit)
RESUME_RATIO = 0.70  # qpidd's --default-flow-resume-threshold
RESUME_SHARE = 0.90  # the memory alarm clears below this share of --max-memory
MESSAGE_OVERHEAD = 1024  # bytes counted per queued message beside its own (see the module doc)
SIZE_GUESS = 64 << 10  # a message size assumed for a window before any message is seen

# What the listener hears: (queue, True) stopped, (queue, False) resumed (or deleted while
# stopped); (None, True) the memory alarm raised, (None, False) cleared.
FlowListener = Callable[["Queue | None", bool], None]


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """A queue's flow-stop and resume marks; 0 turns a stop dimension off."""

    stop_count: int = 0
    stop_size: int = 0
    resume_count: int = 0
    resume_size: int = 0

    def stops(self, count: int, size: int) -> bool:
        """Past a stop mark (qpidd: strictly above it)."""
        return bool(
            (self.stop_count and count > self.stop_count)
            or (self.stop_size and size > self.stop_size)
        )

    def resumes(self, count: int, size: int) -> bool:
        """Below every resume mark that is set."""
        return (not self.resume_size or size < self.resume_size) and (
            not self.resume_count or count < self.resume_count
        )


def flow_limits(
    arguments: dict[str, Any],
    *,
    max_count: int,
    max_size: int,
    size_explicit: bool,
    policy: str,
    number: Callable[[dict[str, Any], str], int],
) -> FlowLimits | None:
    """A queue's flow limits from its arguments and its (effective) limits, or None (no flow
    control). `number(arguments, key)` reads a whole number >= 0 (absent: 0). `size_explicit`:
    `max_size` was given in the arguments, not taken from `--default-queue-limit`; a stop mark
    above a default limit is not an error (a restart with a smaller default must not make a
    journaled queue invalid), only one above an explicit limit is."""
    if policy == "ring":
        return None  # a ring queue's size is bounded by design: never flow-stopped
    stop_count = math.floor(max_count * STOP_RATIO + 0.5)  # rounded as qpidd does
    stop_size = math.floor(max_size * STOP_RATIO + 0.5)
    resume_count = math.floor(max_count * RESUME_RATIO)
    resume_size = math.floor(max_size * RESUME_RATIO)
    if arguments.get(STOP_COUNT) is not None:
        stop_count = number(arguments, STOP_COUNT)
    if arguments.get(STOP_SIZE) is not None:
        stop_size = number(arguments, STOP_SIZE)
    if arguments.get(RESUME_COUNT) is not None:
        resume_count = number(arguments, RESUME_COUNT)
    if arguments.get(RESUME_SIZE) is not None:
        resume_size = number(arguments, RESUME_SIZE)
    if not (stop_count or stop_size):
        return None
    resume_count = _resume(stop_count, resume_count, max_count, "count", True)
    resume_size = _resume(stop_size, resume_size, max_size, "size", size_explicit)
    return FlowLimits(stop_count, stop_size, resume_count, resume_size)


def _resume(stop: int, resume: int, limit: int, kind: str, limit_explicit: bool) -> int:
    """qpidd's validateFlowConfig for one dimension: the resume mark to use."""
    if not stop:
        return 0
    if resume > stop:
        raise InvalidField(
            f"queue argument qpid.flow_resume_{kind}={resume} must be at most "
            f"qpid.flow_stop_{kind}={stop}"
        )
    if limit and limit < stop and limit_explicit:
        raise InvalidField(
            f"queue argument qpid.flow_stop_{kind}={stop} must be at most qpid.max_{kind}={limit}"
        )
    return resume or stop


def credit_window(
    flow: FlowLimits | None, max_count: int, max_size: int, message_size: int, most: int
) -> int:
    """The credit to keep open on a link that publishes into a queue with these limits: at most
    `most`, and small enough that what one producer may send on credit it already holds cannot
    carry the queue from its stop mark past its limit (where its policy would refuse instead of
    flow control holding the producer). `message_size` is a typical message's size (the queue's
    average); several producers together can still overshoot. At least 1."""
    window = most
    if flow is not None:
        if max_count and flow.stop_count:
            window = min(window, max_count - flow.stop_count)
        if max_size and flow.stop_size:
            window = min(window, (max_size - flow.stop_size) // max(message_size, 1))
    return max(window, 1)


class Usage:
    """The bytes all queues hold and the broker-wide watermark on them (see the module doc).

    The queues keep `bytes` (one add or subtract per message) and compare it with `high` on
    enqueue and `low` on dequeue: `high` is infinite without a limit or while the alarm is up,
    `low` is below zero while it is down, so each side costs one comparison."""

    __slots__ = (
        "alarm", "alarms", "bytes", "high", "limit", "listener", "low", "overhead", "stopped"
    )  # fmt: skip

    def __init__(self, overhead: int = MESSAGE_OVERHEAD) -> None:
        self.bytes = 0  # the estimate: messages' bytes plus `overhead` each
        self.overhead = overhead  # fixed for the life of the queues that count into it
        self.limit = 0  # --max-memory; 0: none
        self.high: float = math.inf
        self.low: float = -1
        self.alarm = False
        self.alarms = 0  # times raised since start
        self.stopped = 0  # queues flow-stopped now
        self.listener: FlowListener | None = None

    @property
    def resume_at(self) -> int:
        return int(self.limit * RESUME_SHARE)

    def set_limit(self, limit: int) -> None:
        """Set `--max-memory` (0: none); raises or clears the alarm at once if it must."""
        if limit < 0:
            raise ValueError("a memory limit cannot be negative")
        self.limit = limit
        if self.alarm:
            self.low = self.resume_at if limit else math.inf
            self.check_low()
        else:
            self.high = limit if limit else math.inf
            self.check_high()

    def check_high(self) -> None:
        """After bytes went up: raise the alarm if past the limit."""
        if self.bytes > self.high:
            self.alarm = True
            self.alarms += 1
            self.high, self.low = math.inf, self.resume_at
            self._tell(None, True)

    def check_low(self) -> None:
        """After bytes went down: clear the alarm if below the resume mark."""
        if self.bytes < self.low:
            self.alarm = False
            self.high, self.low = (self.limit or math.inf), -1
            self._tell(None, False)

    def _tell(self, queue: Queue | None, stopped: bool) -> None:
        if self.listener is not None:
            self.listener(queue, stopped)
