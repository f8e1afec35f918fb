"""What one client connection may hold (#11): message size, sessions, links, private queues.

Each limit is enforced before the memory is spent and refused with the AMQP condition a client
can act on; `Notices` logs the first refusal of each kind on a connection as a warning and the
rest at debug, so that a client hammering a limit costs one log line, not one per frame.

What proton enforces for us: the channel-max we advertise (`max_sessions - 1`; a begin above it
closes the connection with amqp:connection:framing-error, as AMQP 2.7.1 wants) and
max-frame-size. What it does not let us do: advertise a handle-max (proton 0.40 has no setter
for a session's local handle-max and always offers 2^31-1), so the link limit is ours alone, a
refusal of the attach past it (amqp:resource-limit-exceeded) that leaves the session working.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.config import BrokerConfig

MESSAGE_SIZE_EXCEEDED = "amqp:link:message-size-exceeded"
RESOURCE_LIMIT = "amqp:resource-limit-exceeded"
NOT_ALLOWED = "amqp:not-allowed"
MANAGEMENT_MAX_REQUEST = 1 << 20  # a management request is a few properties and a small map
NO_LIMIT = 1 << 63  # a size no delivery reaches: one comparison on the message path, no `if 0`
PROTON_MAX_SESSIONS = 32768  # proton's PN_IMPL_CHANNEL_MAX + 1


@dataclass(frozen=True)
class Limits:
    """Per-connection limits; 0 means none (sessions: proton's most)."""

    max_message_size: int = 16 << 20
    max_sessions: int = 64
    max_links_per_session: int = 256
    max_temporary_queues: int = 1000

    @classmethod
    def from_config(cls, cfg: BrokerConfig) -> Limits:
        return cls(
            max_message_size=cfg.max_message_size,
            max_sessions=cfg.max_sessions,
            max_links_per_session=cfg.max_links_per_session,
            max_temporary_queues=cfg.max_temporary_queues,
        )

    @property
    def message_size(self) -> int:
        """The largest message accepted, NO_LIMIT for none."""
        return self.max_message_size or NO_LIMIT

    @property
    def incomplete_budget(self) -> int:
        """Bytes of incomplete messages (transfers still to come) one connection may make the
        broker hold: two of the largest, e.g. interleaved on two links. Without it the message
        size limit would bound one link only, and a client could hold one almost-complete
        message on each of its thousands of links."""
        return 2 * self.max_message_size if self.max_message_size else NO_LIMIT

    @property
    def sessions(self) -> int:
        return min(self.max_sessions or PROTON_MAX_SESSIONS, PROTON_MAX_SESSIONS)

    @property
    def channel_max(self) -> int:
        """What our `open` advertises: the highest channel number, one less than the sessions."""
        return self.sessions - 1

    def management_size(self) -> int:
        """A `$management` request is bounded more tightly than a message."""
        return min(self.message_size, MANAGEMENT_MAX_REQUEST)


class Notices:
    """Logs a limit's refusals on one connection: the first of each kind as a warning, the
    rest at debug (a client that keeps trying must not flood the log)."""

    def __init__(self, logger: logging.Logger, prefix: str) -> None:
        self._log = logger
        self._prefix = prefix
        self._said: set[str] = set()

    def refused(self, kind: str, text: str) -> None:
        first = kind not in self._said
        self._said.add(kind)
        level = logging.WARNING if first else logging.DEBUG
        more = " (further refusals of this kind on this connection are logged at debug)"
        self._log.log(level, "%s %s%s", self._prefix, text, more if first else "")
