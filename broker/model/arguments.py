"""Queue and exchange arguments: validation and the settings the model acts on.

The `arguments` dict is kept exactly as given (it is journaled and replicated as is);
`QueueSettings` is what the model reads from it. Values may be given as their natural type or as
strings (command line tools send `K=V` text), so `"100"` is accepted where a count is expected.
Unknown keys are kept and ignored, as the seed does. Anything malformed is an `InvalidField`
naming the argument, the bad value and what would be accepted.

`--default-queue-limit` (qpidd's `--default-queue-limit`) is applied here, to the settings and not
to the arguments: a queue that sets neither `qpid.max_size` nor `qpid.max_count` gets
`max_size = default`, so an explicit 0 opts out. Being a setting, it is decided by each broker for
itself: on restart the current default applies to journaled queues, and a backup's replicas of a
queue get the backup's default (harmless there: replicated messages bypass limits, see
`Queue.put`; after a promotion the new primary's default governs). The flow-control marks
(`flow.flow_limits`) follow the effective limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import InvalidField
from .flow import FlowLimits, flow_limits

MAX_COUNT = "qpid.max_count"
MAX_SIZE = "qpid.max_size"
POLICY_TYPE = "qpid.policy_type"
PRIORITIES = "qpid.priorities"
LVQ_KEY = "qpid.last_value_queue_key"
LVQ_FLAG = "qpid.last_value_queue"  # the seed's older spelling: key is qpid.LVQ_key
LVQ_DEFAULT_KEY = "qpid.LVQ_key"
REPLICATE = "qpid.replicate"
DEDUP_WINDOW = "qstore.dedup-window"  # message-ids of the last N messages kept (dedup.py)

POLICIES = ("reject", "ring")
REPLICATE_LEVELS = ("none", "configuration", "all")
MAX_LEVELS = 10  # priorities are 0-9: more levels than 10 could never be used


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """What the model does with a queue's arguments. 0 limits mean unlimited."""

    max_count: int = 0
    max_size: int = 0
    policy: str = "reject"
    levels: int = 1
    lvq_key: str | None = None
    replicate: str | None = None  # None: the broker's default (--ha-replicate) applies
    flow: FlowLimits | None = None  # producer flow control; None: none
    default_limit: bool = False  # max_size is --default-queue-limit's, not an argument's
    dedup_window: int = 0  # qstore.dedup-window: 0, off

    @property
    def limited(self) -> bool:
        return bool(self.max_count or self.max_size)


def _non_negative_int(args: dict[str, Any], key: str) -> int:
    value = args.get(key)
    if value is None:
        return 0
    if isinstance(value, bool):
        n = None
    elif isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str | bytes):
        try:
            n = int(value)
        except ValueError:
            n = None
    else:
        n = None
    if n is None or n < 0:
        raise InvalidField(f"queue argument {key} must be a whole number >= 0, got {value!r}")
    return n


def _choice(args: dict[str, Any], key: str, allowed: tuple[str, ...], what: str) -> str | None:
    value = args.get(key)
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    if not isinstance(text, str) or text not in allowed:
        raise InvalidField(
            f"{what} argument {key} must be one of {'|'.join(allowed)}, got {value!r}"
        )
    return text


def check_arguments(arguments: Any, what: str) -> dict[str, Any]:
    if arguments is None:
        return {}
    if not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments):
        raise InvalidField(f"{what} arguments must be a map with string keys, got {arguments!r}")
    return arguments


def parse_queue_arguments(arguments: dict[str, Any], default_max_size: int = 0) -> QueueSettings:
    """Validate a queue's arguments; raise `InvalidField` with an actionable message.
    `default_max_size` (--default-queue-limit) is the size limit of a queue whose arguments set
    neither `qpid.max_size` nor `qpid.max_count`."""
    max_count = _non_negative_int(arguments, MAX_COUNT)
    max_size = _non_negative_int(arguments, MAX_SIZE)
    default_limit = bool(default_max_size) and arguments.get(MAX_SIZE) is None
    default_limit = default_limit and arguments.get(MAX_COUNT) is None
    if default_limit:
        max_size = default_max_size
    policy = _choice(arguments, POLICY_TYPE, POLICIES, "queue") or "reject"
    levels = _non_negative_int(arguments, PRIORITIES)
    lvq_key = arguments.get(LVQ_KEY)
    if lvq_key is not None and (not isinstance(lvq_key, str) or not lvq_key):
        raise InvalidField(f"queue argument {LVQ_KEY} must be a non-empty string, got {lvq_key!r}")
    if lvq_key is None and arguments.get(LVQ_FLAG) not in (None, False, 0, "0", "false", "False"):
        lvq_key = LVQ_DEFAULT_KEY
    replicate = _choice(arguments, REPLICATE, REPLICATE_LEVELS, "queue")
    flow = flow_limits(
        arguments,
        max_count=max_count,
        max_size=max_size,
        size_explicit=not default_limit,
        policy=policy,
        number=_non_negative_int,
    )
    return QueueSettings(
        max_count=max_count,
        max_size=max_size,
        policy=policy,
        levels=min(max(levels, 1), MAX_LEVELS),
        lvq_key=lvq_key,
        replicate=replicate,
        flow=flow,
        default_limit=default_limit,
        dedup_window=_non_negative_int(arguments, DEDUP_WINDOW),
    )


def parse_exchange_arguments(arguments: dict[str, Any]) -> str | None:
    """Validate an exchange's arguments; return its `qpid.replicate` level if given."""
    return _choice(arguments, REPLICATE, REPLICATE_LEVELS, "exchange")


def priority_table(levels: int) -> tuple[int, ...]:
    """Map message priority 0-9 to a level 0..levels-1, exactly as the seed's PriorityQueue does.

    That is the AMQP 0-10 rule: with N levels, priorities up to `5 - ceil(N/2)` share level 0 and
    each priority above gets the next level, capped at N-1. So 10 levels are one per priority, and
    2 levels split 0-4 (low) from 5-9 (high). Priorities above 9 count as 9.
    """
    first = 5 - min(5, math.ceil(levels / 2))
    return tuple(0 if p <= first else min(p - first, levels - 1) for p in range(10))
