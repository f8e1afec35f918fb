"""broker.net over real sockets on 127.0.0.1: stock proton clients, raw misbehaving peers,
heartbeats, abort (HA refusal) with client fail-over, back-pressure and graceful stop.

Each server runs its own anyio event loop in a background thread; every wait is bounded.
The handlers and the harness are in net_support.py."""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from net_support import (
    AMQP_HEADER,
    WAIT,
    FailingHandler,
    FloodHandler,
    Record,
    Relay,
    RelayHandler,
    SendThenReceive,
    ServerThread,
    SinkSourceHandler,
    check_good_client,
    client_frames,
    close_lines,
    raw_connect,
    read_until_closed,
    run_container,
    server_said,
    wait_for,
)
from proton import Condition, Endpoint, Message, Timeout
from proton.utils import BlockingConnection, ConnectionClosed

from broker.net import ConnectionHandler, EnginePump


@pytest.fixture
def start() -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def _start(factory: Callable[[EnginePump], ConnectionHandler], **kw: Any) -> ServerThread:
        srv = ServerThread(factory, **kw)
        started.append(srv)
        return srv.start()

    yield _start
    errors = []
    for srv in started:  # stop them all, even if one fails to stop
        try:
            srv.stop()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


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


# --- stock clients -----------------------------------------------------------------------------


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
    # proton times nothing out before the first byte, nor before the open: the pump does
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


NOT_PERFORMATIVES = {
    # a well-framed frame whose body is no performative: proton stops reading in silence
    "after-open": client_frames() + struct.pack(">IBBH", 9, 2, 0, 0) + b"\x00",
    "before-open": AMQP_HEADER + struct.pack(">IBBH", 9, 2, 0, 0) + b"\x45",
}


@pytest.mark.parametrize("name", list(NOT_PERFORMATIVES))
def test_a_frame_that_is_not_a_performative_is_a_decode_error(
    start: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """Found by tests/test_pump_fuzz.py: the peer was neither answered nor dropped (not even
    after it hung up) until the idle timeout, here a minute away."""
    caplog.set_level(logging.INFO, logger="qstore.net")
    record = Record()
    srv = start(lambda d: SinkSourceHandler(d, record), idle_timeout=60)
    sock = raw_connect(srv)
    try:
        sock.sendall(NOT_PERFORMATIVES[name])
        said = read_until_closed(sock, timeout=2)
        port = sock.getsockname()[1]
    finally:
        sock.close()
    cond = server_said(said).remote_condition
    assert cond is not None and cond.name == "amqp:decode-error", (said, cond)
    lines = close_lines(caplog, port)
    assert len(lines) == 1 and "decode-error" in lines[0].getMessage()
    check_good_client(srv, record, "after a frame that is not a performative")


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
        # now the slow consumer reads: the pump wakes the handler, which sends the rest
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
