"""A minimal AMQP peer for testing broker.net: a sink for what clients send, a source of N
messages for what clients receive, and optionally a refusing mode that aborts at the client's
`open` (as an HA backup does). Test-only; the real AMQP layer lives in broker/amqp."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from proton import Delivery, Endpoint, Event, Link, Message

from broker.net import ConnectionDriver, ConnectionHandler


@dataclass
class Record:
    """What all connections of one server saw; read by the test thread."""

    received: list[object] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    closed: list[str | None] = field(default_factory=list)
    backed_up_at: int | None = None  # FloodHandler: messages sent when output first backed up
    sent: int = 0  # FloodHandler: messages sent in all
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_event(self, name: str) -> None:
        with self.lock:
            self.event_types.append(name)


class SinkSourceHandler(ConnectionHandler):
    """Opens what the client opens; receivers get credit and accept; senders send `to_send`."""

    CREDIT = 10

    def __init__(
        self, driver: ConnectionDriver, record: Record, to_send: int = 0, refuse: bool = False
    ) -> None:
        self.driver = driver
        self.record = record
        self.to_send = to_send
        self.refuse = refuse
        self.senders: dict[Link, int] = {}  # sender link -> messages sent on it

    def on_event(self, event: Event) -> None:
        self.record.add_event(event.type.name)
        kind = event.type
        if kind == Event.CONNECTION_REMOTE_OPEN:
            if self.refuse:
                self.driver.abort("refused: test backup")
                return
            event.connection.container = "net-test-broker"
            event.connection.open()
        elif kind == Event.SESSION_REMOTE_OPEN:
            event.session.open()
        elif kind == Event.LINK_REMOTE_OPEN:
            self._open_link(event.link)
        elif kind == Event.DELIVERY:
            self._delivery(event.delivery)
        elif kind == Event.LINK_REMOTE_CLOSE:
            self.senders.pop(event.link, None)
            event.link.close()
        elif kind == Event.SESSION_REMOTE_CLOSE:
            event.session.close()
        elif kind == Event.CONNECTION_REMOTE_CLOSE:
            event.connection.close()

    def _open_link(self, link: Link) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.open()
        if link.is_receiver:
            link.flow(self.CREDIT)
        else:
            self.senders[link] = 0

    def _delivery(self, dlv: Delivery) -> None:
        link = dlv.link
        if link.is_receiver:
            if dlv.readable and not dlv.partial:
                body = Message()
                body.decode(link.recv(dlv.pending))
                with self.record.lock:
                    self.record.received.append(body.body)
                dlv.update(Delivery.ACCEPTED)
                dlv.settle()
                link.flow(1)
        elif dlv.settled or dlv.remote_state:
            dlv.settle()  # the client has the message: forget it

    def process(self) -> None:
        for link, sent in list(self.senders.items()):
            if link.state & Endpoint.LOCAL_CLOSED:
                continue
            while link.credit > 0 and sent < self.to_send:
                link.delivery(str(sent).encode())
                link.send(Message(body=f"m{sent}").encode())
                link.advance()
                sent += 1
            self.senders[link] = sent

    def on_closed(self, error: str | None) -> None:
        with self.record.lock:
            self.record.closed.append(error)


class FloodHandler(SinkSourceHandler):
    """Sends `to_send` messages of `size` bytes, but only while the driver's output is not
    backed up: what the AMQP layer does for a slow consumer."""

    def __init__(self, driver: ConnectionDriver, record: Record, to_send: int, size: int) -> None:
        super().__init__(driver, record, to_send=to_send)
        self.body = b"x" * size

    def process(self) -> None:
        for link in list(self.senders):
            while link.credit > 0 and self.record.sent < self.to_send:
                if self.driver.output_backed_up:
                    if self.record.backed_up_at is None:
                        self.record.backed_up_at = self.record.sent
                    return
                link.delivery(str(self.record.sent).encode())
                link.send(Message(body=self.body).encode())
                link.advance()
                self.record.sent += 1


class FailingHandler(SinkSourceHandler):
    """Raises on a session: stands for a bug in the layer above."""

    def on_event(self, event: Event) -> None:
        if event.type == Event.SESSION_REMOTE_OPEN:
            raise RuntimeError("bug in the layer above")
        super().on_event(event)


class Relay:
    """The smallest router: messages any connection receives, for consumers on any other."""

    def __init__(self) -> None:
        self.queue: deque[bytes] = deque()
        self.consumers: list[RelayHandler] = []


class RelayHandler(SinkSourceHandler):
    """Receivers feed the relay and wake every consumer's driver; senders send from the relay
    in `process()`. A consumer hears of a message only through `driver.wake()`."""

    def __init__(self, driver: ConnectionDriver, record: Record, relay: Relay) -> None:
        super().__init__(driver, record)
        self.relay = relay

    def _open_link(self, link: Link) -> None:
        super()._open_link(link)
        if link.is_sender and self not in self.relay.consumers:
            self.relay.consumers.append(self)

    def _delivery(self, dlv: Delivery) -> None:
        link = dlv.link
        if not (link.is_receiver and dlv.readable and not dlv.partial):
            return super()._delivery(dlv)
        self.relay.queue.append(link.recv(dlv.pending))
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()
        link.flow(1)
        for consumer in self.relay.consumers:
            consumer.driver.wake()

    def process(self) -> None:
        for link in list(self.senders):
            while link.credit > 0 and self.relay.queue:
                link.delivery(b"r")
                link.send(self.relay.queue.popleft())
                link.advance()

    def on_closed(self, error: str | None) -> None:
        if self in self.relay.consumers:
            self.relay.consumers.remove(self)
        super().on_closed(error)
