"""A receiver: prefetches up to `capacity` messages; fetch() hands them out one at a time.

Fetched messages stay unacknowledged until the session acknowledges them (or releases/rejects
them). When the connection is lost, the broker puts back everything it had sent us and not been
told about, so the receiver forgets both its prefetched messages (they come again) and the
deliveries behind fetched ones: acknowledging such a message later is dropped (a stale
acknowledgement would name a delivery of a connection that no longer exists), and the broker
redelivers it. An application therefore sees duplicates after a fail-over, never a gap.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proton import Delivery, Described, Link, Message, Terminus, symbol

from .address import Address
from .errors import Empty
from .links import LinkBase, put, terminus

if TYPE_CHECKING:
    from proton import Session as PnSession

    from .session import Session

log = logging.getLogger("qstore.client")

SUBJECT_FILTER = symbol("subject-filter")
LEGACY_TOPIC = symbol("apache.org:legacy-amqp-topic-binding:string")
TRACKER = "_qstore_tracker"  # the attribute a fetched message carries


@dataclass(eq=False, frozen=True)
class Tracker:
    """Which delivery a message came on (plain Python: no proton object lives in a Message)."""

    receiver: Receiver
    gen: int
    key: int


class Receiver(LinkBase):
    """Receives from one address; `capacity` is the prefetch (0: one message per fetch)."""

    role = "receiver"

    def __init__(self, session: Session, address: Address, capacity: int) -> None:
        super().__init__(session, address, capacity)
        self._buffer: deque[Message] = deque()  # prefetched, not yet fetched
        self._deliveries: dict[int, Delivery] = {}  # unsettled deliveries of the current engine
        self._key = 0
        self._fetching = 0  # fetch() calls waiting (capacity 0 grants credit only for them)
        self.received = 0  # messages handed out by fetch()
        self.source: str | None = None  # the broker's name for the source (dynamic queues)

    # -- the application's side ---------------------------------------------------------------

    @property
    def available(self) -> int:
        """Messages buffered, ready for fetch() without waiting."""
        return len(self._buffer)

    def fetch(self, timeout: float | None = None) -> Message:
        """The next message; raise Empty if none arrives within `timeout` seconds."""

        def ready() -> bool:
            if self._buffer:
                return True
            self._check()
            return False

        with self._io.lock:
            self._check()
            self._fetching += 1
            try:
                self._credit()
                if not self._io.wait(ready, timeout):
                    raise Empty(f"no message from {str(self.address)!r} within {timeout:g}s")
                return self._take()
            finally:
                self._fetching -= 1

    def close(self) -> None:
        """Detach; the broker puts back what was sent to us and not acknowledged."""
        with self._io.lock:
            if not self._closed:
                self._buffer.clear()
                self._deliveries.clear()
                self._detach()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take(self) -> Message:
        msg = self._buffer.popleft()
        self.received += 1
        tracker: Tracker | None = getattr(msg, TRACKER, None)
        if tracker is not None:
            self.session._fetched[tracker] = None
        self._credit()
        return msg

    def _settle(self, tracker: Tracker, state: Any) -> None:
        """Give the broker our outcome for a fetched message (settled at once: settle-first)."""
        if tracker.gen != self._io.gen:
            log.debug("receiver %r: dropping a stale acknowledgement", str(self.address))
            return
        dlv = self._deliveries.pop(tracker.key, None)
        if dlv is None:
            return
        dlv.update(state)
        dlv.settle()
        self._io.wake()

    # -- the engine's side --------------------------------------------------------------------

    def _make(self, pn_session: PnSession) -> Link:
        link = pn_session.receiver(self.name)
        src = link.source
        terminus(src, self.address, "receiver")
        if self.address.browse:
            src.distribution_mode = Terminus.DIST_MODE_COPY
        if self.address.subject:
            put(src.filter, {SUBJECT_FILTER: Described(LEGACY_TOPIC, self.address.subject)})
        if self.address.unreliable:
            link.snd_settle_mode = Link.SND_SETTLED
        return link

    def _opened(self, link: Link) -> None:
        self._credit()

    def _on_attached(self, link: Link) -> None:
        self.source = link.remote_source.address

    def _lost(self) -> None:
        super()._lost()
        if self._buffer:
            log.debug("receiver %r: dropping %d prefetched", str(self.address), len(self._buffer))
        self._buffer.clear()  # the broker redelivers them
        self._deliveries.clear()

    def _credit(self) -> None:
        """Keep buffered + credit at `capacity`, topped up in batches rather than per message."""
        link = self._pn
        if link is None:
            return
        target = self.capacity if self.capacity else min(self._fetching, 1)
        want = target - len(self._buffer) - link.credit
        if want > 0 and (link.credit == 0 or want >= max(1, target // 4)):
            link.flow(want)
            self._io.wake()

    def on_delivery(self, delivery: Any) -> None:
        if delivery.partial or not delivery.readable:
            return  # the rest of a large message is still coming
        link = delivery.link
        data = link.recv(delivery.pending)
        link.advance()
        msg = Message()
        msg.decode(data)
        tracker = None
        if delivery.settled:  # sent settled (browse, unreliable): nothing to acknowledge
            delivery.settle()
        else:
            self._key += 1
            self._deliveries[self._key] = delivery
            tracker = Tracker(self, self._io.gen, self._key)
        setattr(msg, TRACKER, tracker)
        self._buffer.append(msg)
        self._io.cond.notify_all()
