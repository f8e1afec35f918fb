"""What `qstore.client` raises, named as qpid.messaging names it.

The split that matters to an application is between errors the client heals by itself (a lost
connection while `reconnect` is on: never raised, the client fails over) and errors that will not
heal (bad credentials, an address that does not exist, a malformed address, a message the broker
rejected, a reconnect that gave up): those are raised, once, from the next call that can report
them.
"""

from __future__ import annotations

import builtins
import copy
from typing import Any

UNAUTHORIZED = "amqp:unauthorized-access"
NOT_FOUND = "amqp:not-found"


class MessagingError(Exception):
    """Base of every error of this package; `condition` is the AMQP error name, if any."""

    def __init__(self, text: str, condition: str | None = None) -> None:
        super().__init__(text)
        self.condition = condition


class ConnectionError(MessagingError, builtins.ConnectionError):
    """The connection is gone for good: closed, reconnect disabled or given up, or refused."""


class AuthenticationError(ConnectionError):
    """The broker refused our credentials (amqp:unauthorized-access): retrying cannot help."""


class TlsError(ConnectionError):
    """The broker's certificate did not verify (unknown CA, wrong host name): retrying cannot
    help, and the connection never falls back to plain TCP."""


class Timeout(MessagingError):
    """A bounded wait (open, attach, sync) ran out of time; nothing was lost or cancelled."""


class AddressError(MessagingError, ValueError):
    """An address that does not follow the grammar or uses an option we do not support."""


class LinkError(MessagingError):
    """The broker refused or closed a sender or receiver (the condition says why)."""


class NotFound(LinkError):
    """The address names no queue or exchange, and the address did not ask to create it."""


class Unauthorized(LinkError):
    """The broker does not allow this link to this address."""


class SendError(MessagingError):
    """The broker did not take a message (e.g. rejected by a full reject-policy queue)."""

    def __init__(self, text: str, condition: str | None = None, message: Any = None) -> None:
        super().__init__(text, condition)
        self.message = message


class InsufficientCapacity(SendError):
    """`send(timeout=...)` found `capacity` messages still unacknowledged until the timeout."""


class ReceiverError(MessagingError):
    """Base of what `fetch` raises besides connection and link errors."""


class Empty(ReceiverError):
    """`fetch(timeout)` found no message within the timeout."""


def link_error(condition: str | None, description: str | None, what: str) -> LinkError:
    """The exception for a link the broker closed with `condition`."""
    text = f"{what}: {condition or 'closed by the broker'}" + (
        f": {description}" if description else ""
    )
    if condition == NOT_FOUND:
        return NotFound(text, condition)
    if condition == UNAUTHORIZED:
        return Unauthorized(text, condition)
    return LinkError(text, condition)


def fresh(error: MessagingError) -> MessagingError:
    """A copy of a stored error to raise (again): raising one object from many calls and threads
    would pile every raise's traceback onto it."""
    err = copy.copy(error)
    err.__traceback__ = None
    return err
