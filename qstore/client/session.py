"""A session: a group of senders and receivers, and the acknowledgement of fetched messages.

Each Session is one AMQP session of the current engine, begun again (with all its links) on every
new engine. `acknowledge()` accepts fetched messages; messages fetched on an engine that has since
been lost are not acknowledged (the broker redelivers them).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from proton import Connection as PnConnection
from proton import Delivery, Message
from proton import Session as PnSession

from . import address as addresses
from .errors import Empty, LinkError, MessagingError, Timeout
from .links import LinkBase
from .receiver import TRACKER, Receiver, Tracker
from .sender import Sender

if TYPE_CHECKING:
    from .connection import Connection


class Session:
    def __init__(self, connection: Connection, name: str) -> None:
        self.connection = connection
        self.name = name
        self._io = connection._io
        self._links: list[LinkBase] = []
        self._pn: PnSession | None = None
        self._fetched: dict[Tracker, None] = {}  # fetched, not acknowledged (ordered)
        self._closed = False

    def __repr__(self) -> str:
        return f"Session({self.name!r})"

    @property
    def senders(self) -> list[Sender]:
        return [x for x in self._links if isinstance(x, Sender)]

    @property
    def receivers(self) -> list[Receiver]:
        return [x for x in self._links if isinstance(x, Receiver)]

    def sender(self, address: str, capacity: int = 100, timeout: float | None = None) -> Sender:
        """Attach a sender (waiting up to `timeout` for the broker to accept the attach)."""
        link = Sender(self, addresses.parse(address), capacity)
        self._add(link, timeout)
        return link

    def receiver(self, address: str, capacity: int = 100, timeout: float | None = None) -> Receiver:
        """Attach a receiver; `capacity` messages are prefetched (0: one per fetch)."""
        link = Receiver(self, addresses.parse(address), capacity)
        self._add(link, timeout)
        return link

    def _add(self, link: LinkBase, timeout: float | None) -> None:
        with self._io.lock:
            self._check()
            self._links.append(link)
            if self._pn is not None:
                link._start(self._pn)
                self._io.wake()
            try:
                attached = link._wait_attached(timeout)
            except MessagingError:
                self._forget(link)
                raise
            if not attached:
                link._detach()
                raise Timeout(f"{link.role} {str(link.address)!r} not attached within {timeout:g}s")

    def acknowledge(self, message: Message | None = None) -> None:
        """Accept one fetched message, or (None) every message fetched and not yet acknowledged."""
        self._settle(message, Delivery.ACCEPTED)

    def release(self, message: Message | None = None) -> None:
        """Give a fetched message (or all) back to the broker, for delivery again."""
        self._settle(message, Delivery.RELEASED)

    def reject(self, message: Message | None = None) -> None:
        """Refuse a fetched message (or all): the broker drops it (or dead-letters it)."""
        self._settle(message, Delivery.REJECTED)

    def _settle(self, message: Message | None, state: Any) -> None:
        with self._io.lock:
            self._io.raise_error()
            if message is None:
                trackers = list(self._fetched)
                self._fetched.clear()
            else:
                if not hasattr(message, TRACKER):
                    raise ValueError("this message was not fetched by a qstore.client receiver")
                tracker: Tracker | None = getattr(message, TRACKER)
                if tracker is None:
                    return  # it came settled (browse, unreliable): nothing to say
                if tracker.receiver.session is not self:
                    raise ValueError("this message was fetched on another session")
                self._fetched.pop(tracker, None)
                trackers = [tracker]
            for t in trackers:
                t.receiver._settle(t, state)

    def sync(self, timeout: float | None = None) -> None:
        """Wait until every sender of this session has all its messages acknowledged."""
        for snd in self.senders:
            snd.sync(timeout)

    def next_receiver(self, timeout: float | None = None) -> Receiver:
        """The first receiver of this session with a message ready; Empty after `timeout`."""

        def ready() -> bool:
            return any(r.available for r in self.receivers)

        with self._io.lock:
            self._check()
            for r in self.receivers:
                r._fetching += 1
                r._credit()
            try:
                if not self._io.wait(ready, timeout):
                    raise Empty(f"no message on any receiver within {timeout:g}s")
            finally:
                for r in self.receivers:
                    r._fetching -= 1
            return next(r for r in self.receivers if r.available)

    def close(self, timeout: float | None = None) -> None:
        """Close every link (senders wait up to `timeout` for acknowledgements), end the session."""
        with self._io.lock:
            if self._closed:
                return
            for link in list(self._links):
                # a send error was logged when it happened; closing must not fail on it
                with contextlib.suppress(MessagingError):
                    if isinstance(link, Sender):
                        link.close(timeout)
                    elif isinstance(link, Receiver):
                        link.close()
            self._closed = True
            if self._pn is not None:
                self._pn.close()
                self._io.wake()
            self._pn = None
            self.connection._forget(self)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the engine's side (under the lock) ---------------------------------------------------

    def _check(self) -> None:
        self._io.raise_error()
        if self._closed:
            raise LinkError(f"session {self.name!r} is closed")

    def _start(self, conn: PnConnection) -> None:
        if self._closed:
            return
        self._pn = conn.session()
        self._pn.open()
        for link in self._links:
            link._start(self._pn)

    def _lost(self) -> None:
        self._pn = None
        self._fetched.clear()  # their deliveries are gone with the engine
        for link in self._links:
            link._lost()

    def _forget(self, link: LinkBase) -> None:
        if link in self._links:
            self._links.remove(link)
