"""A sender: keeps every message until the broker acknowledges it, and re-sends after fail-over.

The primary settles a message as accepted only when it is safe (journaled and on every backup), so
the sender's buffer of unacknowledged messages is exactly what a fail-over could lose. On a new
engine the link is re-attached and the whole buffer is sent again, oldest first, before anything
new (`resent` counts each re-send; the receiving side may see duplicates, never gaps).
A message the application gave no message-id gets one, unique to this sender and message
(`<uuid of the sender>:<n>`), and a re-send is the very bytes first sent: a queue with a dedup
window (`qstore.dedup-window`) recognises it and does not enqueue it twice.
A `rejected` (or released) outcome is an error that will not heal: it is raised by the `send()`
that waits for it (sync), else by the next `send()` or `sync()`.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proton import Delivery, Link, Message

from .address import Address
from .errors import InsufficientCapacity, SendError, Timeout
from .links import LinkBase, terminus

if TYPE_CHECKING:
    from proton import Session as PnSession

    from .session import Session

log = logging.getLogger("qstore.client")

_OUTCOMES = (Delivery.ACCEPTED, Delivery.REJECTED, Delivery.RELEASED, Delivery.MODIFIED)


@dataclass(eq=False)
class _Out:
    """One message held until the broker settles it."""

    seq: int
    message: Message
    data: bytes
    transmissions: int = 0
    done: bool = False
    waiter: bool = False  # a sync send() waits for it and raises its error itself
    error: SendError | None = None


class Sender(LinkBase):
    """Sends messages to one address; see the module docstring for the guarantees."""

    role = "sender"

    def __init__(self, session: Session, address: Address, capacity: int) -> None:
        super().__init__(session, address, capacity)
        if capacity < 1:
            raise ValueError(f"a sender's capacity must be >= 1, not {capacity}")
        self._pending: OrderedDict[int, _Out] = OrderedDict()  # unacknowledged, in send order
        self._unsent: deque[_Out] = deque()  # not yet sent on the current link
        self._errors: deque[SendError] = deque()  # outcomes to report on the next send/sync
        self._seq = 0
        self._id_prefix = f"{uuid.uuid4()}:"  # message-ids this sender gives (see module doc)
        self._tags = 0
        self.sent = 0  # messages given to send()
        self.resent = 0  # re-sends after a fail-over
        self.acknowledged = 0  # messages the broker accepted

    # -- the application's side ---------------------------------------------------------------

    @property
    def unsettled(self) -> int:
        """Messages sent but not yet acknowledged by the broker."""
        return len(self._pending)

    def send(self, message: Message, sync: bool = True, timeout: float | None = None) -> None:
        """Queue `message` for the broker. Blocks while `capacity` messages are unacknowledged
        (InsufficientCapacity after `timeout`). With sync, waits until this message and every
        earlier one are acknowledged (Timeout after `timeout`; the message stays queued)."""
        if not isinstance(message, Message):
            raise TypeError(f"send() takes a proton.Message, not {type(message).__name__}")
        with self._io.lock:
            self._check()
            self._raise_reported()
            if len(self._pending) >= self.capacity:

                def room() -> bool:
                    self._check()
                    return len(self._pending) < self.capacity

                if not self._io.wait(room, timeout):
                    raise InsufficientCapacity(
                        f"sender {str(self.address)!r}: {self.capacity} messages still "
                        f"unacknowledged after {timeout:g}s"
                    )
            self._seq += 1
            out = _Out(self._seq, message, self._encode(message, self._seq))
            self._pending[out.seq] = out
            self._unsent.append(out)
            self.sent += 1
            self._pump()
            if sync:
                out.waiter = True
                try:
                    self._wait_through(out.seq, timeout)
                finally:
                    out.waiter = False
                if out.error is not None:
                    raise out.error
                self._raise_reported()

    def sync(self, timeout: float | None = None) -> None:
        """Wait until every message sent so far is acknowledged; raise what the broker refused."""
        with self._io.lock:
            self._check()
            self._wait_through(self._seq, timeout)
            self._raise_reported()

    def close(self, timeout: float | None = None) -> None:
        """Wait (up to `timeout`) for outstanding acknowledgements, then detach."""
        with self._io.lock:
            if self._closed:
                return
            try:
                if self._error is None and self._io.error is None:
                    self.sync(timeout)
            except Timeout:
                log.warning(
                    "sender %r closed with %d unacknowledged messages",
                    str(self.address),
                    len(self._pending),
                )
            finally:
                self._detach()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_through(self, seq: int, timeout: float | None) -> None:
        def done() -> bool:
            if not self._pending or next(iter(self._pending)) > seq:
                return True
            self._check()
            return False

        if not self._io.wait(done, timeout):
            raise Timeout(
                f"sender {str(self.address)!r}: not acknowledged within {timeout:g}s "
                f"({len(self._pending)} outstanding; they stay queued)"
            )

    def _raise_reported(self) -> None:
        if self._errors:
            raise self._errors.popleft()

    def _encode(self, message: Message, seq: int) -> bytes:
        """The message's bytes with the defaults this sender gives: a message-id (so that a
        re-send is recognised) and the address's subject. The application's message is left
        as it was: it may send the same object again, as a new message."""
        subject = self.address.subject
        add_subject = bool(subject) and message.subject is None
        add_id = message.id is None
        if not (add_subject or add_id):
            return message.encode()
        if add_subject:
            message.subject = subject  # the address's subject is the default (qpid.messaging)
        if add_id:
            message.id = self._id_prefix + str(seq)
        try:
            return message.encode()
        finally:
            if add_subject:
                message.subject = None
            if add_id:
                message.id = None

    # -- the engine's side --------------------------------------------------------------------

    def _make(self, pn_session: PnSession) -> Link:
        link = pn_session.sender(self.name)
        terminus(link.target, self.address, "sender")
        link.snd_settle_mode = Link.SND_SETTLED if self.address.unreliable else Link.SND_UNSETTLED
        return link

    def _lost(self) -> None:
        super()._lost()
        self._unsent = deque(self._pending.values())

    def _on_attached(self, link: Link) -> None:
        again = sum(1 for o in self._unsent if o.transmissions)
        if again:
            log.info("sender %r: re-sending %d unacknowledged messages", str(self.address), again)
        self._pump()

    def on_flow(self, link: Link) -> None:
        self._pump()

    def _pump(self) -> None:
        """Send what the credit allows, oldest first."""
        link = self._pn
        if link is None or not self._attached:
            return
        sent = 0
        while self._unsent and link.credit > 0:
            out = self._unsent.popleft()
            if out.done:
                continue
            self._tags += 1
            dlv = link.delivery(str(self._tags))
            dlv.qs_seq = out.seq
            link.send(out.data)
            link.advance()
            if out.transmissions:
                self.resent += 1
            out.transmissions += 1
            sent += 1
            if self.address.unreliable:  # at most once: nothing to wait for
                dlv.settle()
                self._settled(out, None)
        if sent:
            self._io.wake()

    def on_delivery(self, delivery: Any) -> None:
        state = delivery.remote_state
        if not delivery.settled and state not in _OUTCOMES:
            return
        seq = getattr(delivery, "qs_seq", None)
        error: SendError | None = None
        if state not in (None, Delivery.ACCEPTED):
            cond = delivery.remote.condition
            name = getattr(cond, "name", None)
            what = {Delivery.REJECTED: "rejected", Delivery.RELEASED: "released"}.get(
                state, "not accepted (modified)"
            )
            detail = f": {name}: {cond.description}" if cond is not None else ""
            error = SendError(f"message to {str(self.address)!r} {what}{detail}", name)
        delivery.settle()
        out = self._pending.get(seq) if seq is not None else None
        if out is not None:
            if error is not None:
                error.message = out.message
            self._settled(out, error)

    def _settled(self, out: _Out, error: SendError | None) -> None:
        out.done = True
        self._pending.pop(out.seq, None)
        if error is None:
            self.acknowledged += 1
        else:
            log.warning("%s", error)
            out.error = error
            if not out.waiter:
                self._errors.append(error)
        self._io.cond.notify_all()

    def _on_error(self) -> None:
        if self._pending:
            log.warning(
                "sender %r: %d unacknowledged messages will not be sent",
                str(self.address),
                len(self._pending),
            )
