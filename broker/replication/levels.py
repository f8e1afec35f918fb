"""What replicates, decided per entity (the seed's 1.12.7).

`qpid.replicate` on a queue or exchange (none | configuration | all), else the broker's default
`--ha-replicate`. Built-in exchanges never replicate. An exclusive auto-delete queue (a private
subscription queue) does not replicate unless its arguments ask for it. A binding replicates when
both ends do and its own `qpid.replicate` argument is not `none`; bindings to built-in exchanges
never do. Messages replicate only on queues at level `all`.
"""

from __future__ import annotations

from typing import Any

from qstore.exchanges import is_builtin_exchange

NONE, CONFIGURATION, ALL = "none", "configuration", "all"
LEVELS = (NONE, CONFIGURATION, ALL)
KEY = "qpid.replicate"


def level_of(arguments: dict[str, Any], default: str) -> str:
    given = arguments.get(KEY)
    return str(given) if given in LEVELS else default


def queue_level(
    arguments: dict[str, Any], default: str, *, exclusive: bool = False, auto_delete: bool = False
) -> str:
    if KEY not in arguments and exclusive and auto_delete:
        return NONE
    return level_of(arguments, default)


def exchange_level(name: str, arguments: dict[str, Any], default: str) -> str:
    return NONE if is_builtin_exchange(name) else level_of(arguments, default)


def binding_replicates(exchange_level: str, queue_level: str, arguments: dict[str, Any]) -> bool:
    if exchange_level == NONE or queue_level == NONE:
        return False
    return arguments.get(KEY) != NONE
