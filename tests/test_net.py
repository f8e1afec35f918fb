"""broker.net over real sockets on 127.0.0.1: stock proton clients, raw misbehaving peers,
heartbeats, abort (HA refusal) with client fail-over, back-pressure and graceful stop.

Each server runs its own anyio event loop in a background thread; every wait is bounded."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from net_handler import FailingHandler, FloodHandler, Record, Relay, RelayHandler, SinkSourceHandler
from proton import Condition, Connection, Endpoint, Message, Timeout, Transport
from proton.handlers import MessagingHandler
from proton.reactor import Container
from proton.utils import BlockingConnection, ConnectionClosed

from broker.net import ConnectionDriver, ConnectionHandler, Server

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
WAIT = 5.0  # bound on every wait for something that should happen at once


class ServerThread:
    """A `Server` with its own event loop in a daemon thread."""

    def __init__(self, factory: Callable[[ConnectionDriver], ConnectionHandler], **options: Any):
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
        """Run `fn` on the server's loop (the drivers are not thread-safe)."""
        return anyio.from_thread.run_sync(fn, *args, token=self.token)

    def stop(self, timeout: float = 10.0) -> None:
        if self.thread.is_alive():
            self.call(self._stop.set)
            self.thread.join(timeout)
        assert not self.thread.is_alive(), "server thread did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def start() -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def _start(factory: Callable[[ConnectionDriver], ConnectionHandler], **kw: Any) -> ServerThread:
        srv = ServerThread(factory, **kw)
        started.append(srv)
        return srv.start()

    yield _start
    for srv in started:
        srv.stop()


@pytest.fixture
def record() -> Record:
    return Record()


@pytest.fixture
def sink(start: Callable[..., ServerThread], record: Record) -> ServerThread:
    return start(
        lambda d: SinkSourceHandler(d, record, to_send=5),
        idle_timeout=0.5,
        max_frame_size=4096,
        linger=0.5,
    )


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
    """The server's log records about the connection from local port `port`, waiting a little
    for the one written after the socket is closed."""
    deadline = time.monotonic() + WAIT
    while True:
        found = [
            r
            for r in caplog.records
            if r.name == "qstore.net" and f":{port}:" in r.getMessage() + ":"
        ]
        if any(r.getMessage().startswith("close ") for r in found) or time.monotonic() > deadline:
            return [r for r in found if r.getMessage().startswith("close ")]
        time.sleep(0.01)


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# --- stock clients -----------------------------------------------------------------------------


def check_good_client(srv: ServerThread, record: Record, body: str) -> None:
    conn = BlockingConnection(srv.url, timeout=WAIT)
    try:
        conn.create_sender("sink").send(Message(body=body))  # waits for `accepted`
    finally:
        conn.close()
    assert body in record.received


def test_blocking_client_sends_and_receives(sink: ServerThread, record: Record) -> None:
    conn = BlockingConnection(sink.url, timeout=WAIT)
    try:
        sender = conn.create_sender("sink")
        for i in range(20):
            sender.send(Message(body=f"b{i}"))
        receiver = conn.create_receiver("source", credit=10)
        got = []
        for _ in range(5):
            got.append(receiver.receive(timeout=WAIT).body)
            receiver.accept()
    finally:
        conn.close()
    assert record.received == [f"b{i}" for i in range(20)]
    assert got == [f"m{i}" for i in range(5)]


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


def test_container_client_sends_and_receives(sink: ServerThread, record: Record) -> None:
    client = SendThenReceive([sink.url], count=7, expect=5)
    run_container(client, lambda: client.done)
    assert record.received == [f"c{i}" for i in range(7)]
    assert client.received == [f"m{i}" for i in range(5)]


def test_wake_delivers_what_another_connection_routed(
    start: Callable[..., ServerThread],
) -> None:
    relay = Relay()
    srv = start(lambda d: RelayHandler(d, Record(), relay))
    consumer = raw_connect(srv)  # attaches with credit, then sends nothing: only wake() can help
    try:
        consumer.sendall(client_frames(receive_credit=10))
        wait_for(lambda: relay.consumers, "the consumer's link")
        producer = BlockingConnection(srv.url, timeout=WAIT)
        try:
            sender = producer.create_sender("relay")
            for i in range(3):
                sender.send(Message(body=f"routed-{i}"))
        finally:
            producer.close()
        seen, deadline = b"", time.monotonic() + WAIT
        while not all(f"routed-{i}".encode() in seen for i in range(3)):
            assert time.monotonic() < deadline, "the consumer was not woken"
            seen += consumer.recv(65536)
    finally:
        consumer.close()


# --- heartbeats --------------------------------------------------------------------------------


def test_idle_client_with_heartbeats_stays_connected(sink: ServerThread, record: Record) -> None:
    # server idle timeout 0.5 s, client 0.4 s: each must keep the other alive while idle
    conn = BlockingConnection(sink.url, timeout=WAIT, heartbeat=0.4)
    try:
        with pytest.raises(Timeout):
            conn.wait(lambda: False, timeout=2.0)  # idle, but the client's I/O keeps running
        conn.create_sender("sink").send(Message(body="after idle"))
    finally:
        conn.close()
    assert "after idle" in record.received
    assert not [e for e in record.closed if e is not None]


def test_silent_peer_is_dropped_after_idle_timeout(
    sink: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qstore.net")
    sock = raw_connect(sink)
    try:
        sock.sendall(client_frames())  # opens, then never says another word
        said = server_said(read_until_closed(sock))
        port = sock.getsockname()[1]
    finally:
        sock.close()
    assert said.remote_condition.name == "amqp:resource-limit-exceeded"
    lines = close_lines(caplog, port)
    assert len(lines) == 1 and "idle-timeout" in lines[0].getMessage()


def test_idle_timeout_follows_the_injected_clock(start: Callable[..., ServerThread]) -> None:
    offset = [0.0]
    srv = start(
        lambda d: SinkSourceHandler(d, Record()),
        idle_timeout=60.0,
        linger=0.5,
        clock=lambda: time.monotonic() + offset[0],
    )
    sock = raw_connect(srv)
    try:
        sock.sendall(client_frames())
        first = sock.recv(65536)
        assert first.startswith(AMQP_HEADER)  # the server answers: it is alive
        offset[0] = 120.0  # two minutes of silence pass on the broker's clock
        srv.call(lambda: [d.wake() for d in srv.server.connections])
        said = server_said(first + read_until_closed(sock))
    finally:
        sock.close()
    assert said.remote_condition.name == "amqp:resource-limit-exceeded"


def test_socket_without_an_open_is_dropped(
    start: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    # proton times nothing out before the first byte, nor before the open: the driver does
    caplog.set_level(logging.INFO, logger="qstore.net")
    srv = start(lambda d: SinkSourceHandler(d, Record()), open_timeout=0.3, idle_timeout=60)
    for first_bytes in (b"", AMQP_HEADER):
        sock = raw_connect(srv)
        try:
            sock.sendall(first_bytes)
            read_until_closed(sock)
            port = sock.getsockname()[1]
        finally:
            sock.close()
        lines = close_lines(caplog, port)
        assert len(lines) == 1 and "no AMQP open within 0.3 s" in lines[0].getMessage()


# --- malformed input ---------------------------------------------------------------------------

BAD_INPUTS = {
    "random-bytes": b"\x01" + os.urandom(3000),
    "header-then-garbage": AMQP_HEADER + b"\xff" * 3000,
    # a frame header announcing 1 MiB where the server's max-frame-size is 4096
    "oversized-frame": client_frames() + struct.pack(">IBBH", 1 << 20, 2, 0, 0) + b"\0" * 100,
    # a frame cut short, then the peer shuts its side
    "truncated-frame": client_frames(attach=True)[:-10],
}
REASONS = {
    "random-bytes": "framing-error",
    "header-then-garbage": "framing-error",
    "oversized-frame": "framing-error",
    "truncated-frame": "mid-frame",
}


def test_malformed_input_closes_only_that_connection(
    sink: ServerThread, record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qstore.net")
    good = BlockingConnection(sink.url, timeout=WAIT)
    try:
        good_sender = good.create_sender("sink")
        for name, payload in BAD_INPUTS.items():
            sock = raw_connect(sink)
            try:
                port = sock.getsockname()[1]
                sock.sendall(payload)
                if name == "truncated-frame":
                    sock.shutdown(socket.SHUT_WR)
                read_until_closed(sock)
            finally:
                sock.close()
            lines = close_lines(caplog, port)
            assert len(lines) == 1, (name, [r.getMessage() for r in lines])
            assert lines[0].levelno == logging.WARNING
            assert REASONS[name] in lines[0].getMessage(), (name, lines[0].getMessage())
            good_sender.send(Message(body=f"still here after {name}"))
            check_good_client(sink, record, f"new client after {name}")
    finally:
        good.close()
    for name in BAD_INPUTS:
        assert f"still here after {name}" in record.received


def test_handler_bug_closes_that_connection_only(
    start: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qstore.net")
    record = Record()
    srv = start(lambda d: FailingHandler(d, record), linger=0.5)
    conn = BlockingConnection(srv.url, timeout=WAIT)
    try:
        with pytest.raises(ConnectionClosed) as info:
            conn.create_sender("sink")
    finally:
        conn.close()
    assert "amqp:internal-error" in str(info.value), str(info.value)
    assert any("handler failed" in r.getMessage() for r in caplog.records)
    # the server still accepts and serves
    conn = BlockingConnection(srv.url, timeout=WAIT)
    conn.close()


# --- abort: how an HA backup refuses a client --------------------------------------------------


def test_abort_on_open_writes_nothing_and_ignores_the_rest(
    start: Callable[..., ServerThread],
) -> None:
    record = Record()
    srv = start(lambda d: SinkSourceHandler(d, record, refuse=True))
    sock = raw_connect(srv)
    try:
        sock.sendall(client_frames(attach=True))  # open, begin, attach in one write
        said = server_said(read_until_closed(sock))
    finally:
        sock.close()
    assert said.state & Endpoint.REMOTE_UNINIT  # the server never sent an open
    wait_for(lambda: record.closed, "on_closed")
    assert record.closed == ["refused: test backup"]
    assert "PN_CONNECTION_REMOTE_OPEN" in record.event_types
    assert "PN_SESSION_REMOTE_OPEN" not in record.event_types
    assert "PN_LINK_REMOTE_OPEN" not in record.event_types


def test_client_fails_over_from_a_refusing_server(
    start: Callable[..., ServerThread], record: Record
) -> None:
    refused = Record()
    backup = start(lambda d: SinkSourceHandler(d, refused, refuse=True))
    primary = start(lambda d: SinkSourceHandler(d, record, to_send=3), linger=0.2)
    client = SendThenReceive([backup.url, primary.url], count=4, expect=3)
    run_container(client, lambda: client.done)
    assert record.received == [f"c{i}" for i in range(4)]
    assert client.received == ["m0", "m1", "m2"]
    wait_for(lambda: refused.closed, "the refused connection to end")
    assert set(refused.closed) == {"refused: test backup"}


# --- back-pressure -----------------------------------------------------------------------------


def test_slow_consumer_backs_up_alone_and_resumes_when_drained(
    start: Callable[..., ServerThread],
) -> None:
    record, size, count = Record(), 64 * 1024, 200  # 12.8 MB: far beyond the socket buffers
    srv = start(
        lambda d: FloodHandler(d, record, to_send=count, size=size),
        output_high_water=256 * 1024,
    )
    other = Record()
    good = start(lambda d: SinkSourceHandler(d, other, to_send=5))  # shares nothing
    slow = raw_connect(srv, rcvbuf=64 * 1024)
    try:
        slow.sendall(client_frames(receive_credit=count))  # ...and then does not read
        wait_for(lambda: record.backed_up_at is not None, "output_backed_up")
        assert record.backed_up_at < count
        # another connection on the same server is served meanwhile
        conn = BlockingConnection(srv.url, timeout=WAIT)
        try:
            conn.create_sender("sink").send(Message(body="not stalled"))
        finally:
            conn.close()
        assert "not stalled" in record.received
        check_good_client(good, other, "other server fine")
        # now the slow consumer reads: the driver wakes the handler, which sends the rest
        total, deadline = 0, time.monotonic() + WAIT
        while total < count * size:
            assert time.monotonic() < deadline, f"only {total} bytes arrived"
            total += len(slow.recv(1 << 20))
        assert record.sent == count
    finally:
        slow.close()


# --- graceful stop -----------------------------------------------------------------------------


def test_graceful_stop_closes_clients_with_forced_and_drops_the_silent(
    start: Callable[..., ServerThread],
) -> None:
    record = Record()
    srv = start(lambda d: SinkSourceHandler(d, record), linger=0.2, stop_timeout=1.0)
    conn = BlockingConnection(srv.url, timeout=WAIT)
    silent = raw_connect(srv)  # never sends a byte: cannot be closed politely
    try:
        conn.create_sender("sink").send(Message(body="before stop"))
        srv.stop()
        with pytest.raises(ConnectionClosed) as info:
            conn.wait(lambda: False, timeout=WAIT)
        assert info.value.connection.remote_condition == Condition(
            "amqp:connection:forced", "the broker is shutting down"
        )
        read_until_closed(silent)
    finally:
        silent.close()
        conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT)
    assert len(record.closed) == 2
