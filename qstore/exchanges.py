"""Which exchanges are built in: the nameless default exchange and every `amq.*` name.

One rule for the broker's model (which makes the built-ins and reserves the prefix), the journal
(which never records them: a built-in exists without a declare) and the event log and replication
levels (a built-in is never journaled or replicated itself).
"""

from __future__ import annotations

BUILTIN_PREFIX = "amq."


def is_builtin_exchange(name: str) -> bool:
    """The AMQP built-ins every broker has: never declared, never journaled, never deleted."""
    return name == "" or name.startswith(BUILTIN_PREFIX)
