"""--max-connections at the listener, over real sockets on 127.0.0.1 (broker.net.Server with a
ConnectionLimit on an injected clock): a full listener refuses a new socket while the unopened
ones are young, drops the oldest unopened one for it once that has waited past the grace (also in
the middle of a TLS handshake), never drops an opened connection, and gives every slot back."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from net_support import (
    WAIT,
    Record,
    ServerThread,
    SinkSourceHandler,
    close_lines,
    raw_connect,
    read_until_closed,
    wait_for,
)
from proton import Event, Message
from proton.utils import BlockingConnection

from broker.net.limit import ConnectionLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class AdmittingHandler(SinkSourceHandler):
    """Admits each connection at its open, as the AMQP layer does (refuses none: no reserve)."""

    def on_event(self, event: Event) -> None:
        if event.type == Event.CONNECTION_REMOTE_OPEN:
            slot = self.pump.slot
            assert slot is not None and slot.admit_open(ha=False)
        super().on_event(event)


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def _serve(**kw: Any) -> ServerThread:
        srv = ServerThread(lambda d: AdmittingHandler(d, Record()), open_timeout=60, **kw)
        started.append(srv)
        return srv.start()

    yield _serve
    for srv in started:
        srv.stop()


def _sockets(srv: ServerThread, limit: ConnectionLimit) -> int:
    return int(srv.call(lambda: limit.sockets))


def _refused(srv: ServerThread) -> bool:
    """A new socket is closed at once, without a word."""
    sock = raw_connect(srv)
    try:
        return read_until_closed(sock, timeout=WAIT) == b""
    finally:
        sock.close()


def _still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False


def _served(srv: ServerThread, conn: BlockingConnection, body: str) -> None:
    conn.create_sender("sink").send(Message(body=body))  # waits for `accepted`


def test_a_full_listener_drops_the_oldest_unopened_socket_for_a_newcomer(
    serve: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qstore.net")
    clock = Clock()
    limit = ConnectionLimit(3, grace=1.0, clock=clock)
    srv = serve(limit=limit)
    opened = [BlockingConnection(srv.url, timeout=WAIT) for _ in range(2)]
    idle = raw_connect(srv)  # says nothing
    try:
        wait_for(lambda: _sockets(srv, limit) == 3, "three sockets")
        clock.now = 0.5  # the idle socket is young: the newcomer is refused
        assert _refused(srv)
        assert _still_open(idle)
        clock.now = 1.5  # past the grace: a stock client takes the idle socket's place
        newcomer = BlockingConnection(srv.url, timeout=WAIT)
        opened.append(newcomer)
        assert read_until_closed(idle) == b""
        lines = close_lines(caplog, idle.getsockname()[1])
        assert "dropped before its AMQP open for a newer socket" in lines[0].getMessage()
        clock.now = 100.0  # every slot is an opened connection: none is dropped, however old
        assert _refused(srv)
        for i, conn in enumerate(opened):
            _served(srv, conn, f"still served {i}")
        assert srv.call(lambda: (limit.sockets, limit.clients)) == (3, 3)
    finally:
        idle.close()
        for conn in opened:
            conn.close()
    wait_for(lambda: _sockets(srv, limit) == 0, "every slot given back")
    warnings = [r for r in caplog.records if r.getMessage().startswith("at --max-connections")]
    assert len(warnings) == 1, warnings  # one spell, logged once


def test_a_socket_stuck_in_its_tls_handshake_is_dropped_for_a_newcomer(
    serve: Callable[..., ServerThread],
) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    clock = Clock()
    limit = ConnectionLimit(1, grace=1.0, clock=clock)
    srv = serve(limit=limit, ssl_context=server_ctx)
    stuck = raw_connect(srv)  # a TCP connection that never says ClientHello
    try:
        wait_for(lambda: _sockets(srv, limit) == 1, "the stuck socket")
        clock.now = 2.0
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT)
        with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert read_until_closed(stuck) == b""  # the handshake was cut
            tls.sendall(b"AMQP\x00\x01\x00\x00")  # the newcomer is served by AMQP
            assert tls.recv(8) == b"AMQP\x00\x01\x00\x00"
            assert _sockets(srv, limit) == 1
    finally:
        stuck.close()
    wait_for(lambda: _sockets(srv, limit) == 0, "every slot given back")
