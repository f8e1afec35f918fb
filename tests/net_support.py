"""Test support for broker.net: minimal handlers standing in for the AMQP layer (a sink, a
source of N messages, a refusing mode that aborts at the client's `open` as an HA backup does,
a flood for back-pressure, a relay for wake) and the harness (a server on its own event loop in
a thread, raw peers, stock clients). The real AMQP layer lives in broker/amqp."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from proton import Connection, Delivery, Endpoint, Event, Link, Message, Transport
from proton.handlers import MessagingHandler
from proton.reactor import Container
from proton.utils import BlockingConnection

from broker.net import ConnectionHandler, EnginePump, Server


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
        self, pump: EnginePump, record: Record, to_send: int = 0, refuse: bool = False
    ) -> None:
        self.pump = pump
        self.record = record
        self.to_send = to_send
        self.refuse = refuse
        self.senders: dict[Link, int] = {}  # sender link -> messages sent on it

    def on_event(self, event: Event) -> None:
        self.record.add_event(event.type.name)
        kind = event.type
        if kind == Event.CONNECTION_REMOTE_OPEN:
            if self.refuse:
                self.pump.abort("refused: test backup")
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
    """Sends `to_send` messages of `size` bytes, but only while the pump's output is not
    backed up: what the AMQP layer does for a slow consumer."""

    def __init__(self, pump: EnginePump, record: Record, to_send: int, size: int) -> None:
        super().__init__(pump, record, to_send=to_send)
        self.body = b"x" * size

    def process(self) -> None:
        for link in list(self.senders):
            while link.credit > 0 and self.record.sent < self.to_send:
                if self.pump.output_backed_up:
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
    """Receivers feed the relay and wake every consumer's pump; senders send from the relay
    in `process()`. A consumer hears of a message only through `pump.wake()`."""

    def __init__(self, pump: EnginePump, record: Record, relay: Relay) -> None:
        super().__init__(pump, record)
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
            consumer.pump.wake()

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


# --- the harness: a server in a thread, raw peers, stock clients ------------------------------

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
WAIT = 5.0  # bound on every wait for something that should happen at once


class ServerThread:
    """A `Server` with its own event loop in a daemon thread."""

    def __init__(self, factory: Callable[[EnginePump], ConnectionHandler], **options: Any):
        self.factory = factory
        self.options = options
        self.port = 0
        self.server: Server | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="net-server")

    def _run(self) -> None:
        try:
            anyio.run(self._main)
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.token = anyio.lowlevel.current_token()
        self.server = Server("127.0.0.1", 0, self.factory, **self.options)
        self._stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            self.port = await tg.start(self.server.serve)
            self._ready.set()
            await self._stop.wait()
            await self.server.stop()

    def start(self) -> ServerThread:
        self.thread.start()
        assert self._ready.wait(WAIT) and self.error is None, self.error
        return self

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn` on the server's loop (the pumps are not thread-safe)."""
        return anyio.from_thread.run_sync(fn, *args, token=self.token)

    def stop(self, timeout: float = 10.0) -> None:
        if self.thread.is_alive():
            self.call(self._stop.set)
            self.thread.join(timeout)
        assert not self.thread.is_alive(), "server thread did not stop"
        if self.error is not None:
            raise self.error


# --- raw peers ---------------------------------------------------------------------------------


def client_frames(*, attach: bool = False, receive_credit: int = 0) -> bytes:
    """What a stock client sends first (header, open, maybe begin/attach), made by a client
    engine so the test needs no hand-made frames."""
    t, c = Transport(), Connection()
    c.container = "raw-peer"
    t.bind(c)
    c.open()
    if attach or receive_credit:
        s = c.session()
        s.open()
        if receive_credit:
            link = s.receiver("flood")
            link.source.address = "flood"
            link.open()
            link.flow(receive_credit)
        else:
            s.sender("x").open()
    return bytes(t.peek(t.pending()))


def raw_connect(srv: ServerThread, rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # a fixed small receive buffer: the kernel cannot hide a slow reader
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", srv.port))
    return sock


def read_until_closed(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Everything the server writes until it closes; fails if it does not close in time."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            pytest.fail(f"server did not close the connection within {timeout} s")
        if not chunk:
            return data
        data += chunk


def server_said(data: bytes) -> Connection:
    """Decode the server's bytes with a client engine: did it open, how did it close?"""
    t, c = Transport(), Connection()
    t.bind(c)
    with contextlib.suppress(Exception):  # a complaint about the tail does not matter here
        t.push(data)
    return c


def close_lines(caplog: pytest.LogCaptureFixture, port: int) -> list[logging.LogRecord]:
    """The server's `close` log lines about the client at local port `port` (written just
    after the socket closes, so wait a little for the first)."""

    def lines() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == "qstore.net"
            and r.getMessage().startswith("close ")
            and f"peer=127.0.0.1:{port}:" in r.getMessage()
        ]

    deadline = time.monotonic() + WAIT
    while not lines() and time.monotonic() < deadline:
        time.sleep(0.01)
    return lines()


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def check_good_client(srv: ServerThread, record: Record, body: str) -> None:
    conn = BlockingConnection(srv.url, timeout=WAIT)
    try:
        conn.create_sender("sink").send(Message(body=body))  # waits for `accepted`
    finally:
        conn.close()
    assert body in record.received


class SendThenReceive(MessagingHandler):
    """Sends `count` messages, waits for them all to be accepted, then receives `expect`."""

    def __init__(self, urls: list[str], count: int, expect: int) -> None:
        super().__init__()
        self.urls, self.count, self.expect = urls, count, expect
        self.sent = self.accepted = 0
        self.received: list[object] = []
        self.done = False

    def on_start(self, event: Any) -> None:
        conn = event.container.connect(urls=self.urls)
        event.container.create_sender(conn, "sink")

    def on_sendable(self, event: Any) -> None:
        while event.sender.credit and self.sent < self.count:
            event.sender.send(Message(body=f"c{self.sent}"))
            self.sent += 1

    def on_accepted(self, event: Any) -> None:
        self.accepted += 1
        if self.accepted == self.count:
            event.container.create_receiver(event.connection, "source")

    def on_message(self, event: Any) -> None:
        self.received.append(event.message.body)
        if len(self.received) == self.expect:
            self.done = True
            event.connection.close()


def run_container(handler: MessagingHandler, done: Callable[[], bool]) -> None:
    container = Container(handler)
    container.timeout = 0.05
    container.start()
    deadline = time.monotonic() + WAIT
    try:
        while container.process() and not done():
            assert time.monotonic() < deadline, "the client did not finish in time"
    finally:
        container.stop()
