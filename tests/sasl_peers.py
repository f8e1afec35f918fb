"""Test peers for qstore.sasl over real sockets on 127.0.0.1.

- `SaslFrontServer`: what the broker will do: SaslServer on the accepted socket, then every byte
  from `rest` on to a stock `proton.Transport(Transport.SERVER)` (sasl() never called) that
  opens the connection, sessions and links the client opens and accepts its messages.
- `ProtonSaslServer`: a stock proton server engine doing its own SASL (ANONYMOUS, as pip's
  proton can), for SaslClient's side.
- `sasl_client_connect`: SaslClient on a socket, then a stock client `Transport` (no sasl())
  that opens an AMQP connection.

One thread per connection; every socket has a timeout, every wait is bounded.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from proton import Collector, Connection, Delivery, Message, Transport

from qstore.sasl import SaslClient, SaslServer

TIMEOUT = 10.0


@dataclass
class Seen:
    """What one accepted connection went through."""

    state: str = "pending"
    user: str | None = None
    mechanism: str | None = None
    failure: str | None = None
    remote_container: str | None = None
    bodies: list[object] = field(default_factory=list)
    sasl_output: bytes = b""  # everything the server wrote, for header checks


def pump_proton(sock: socket.socket, transport: Transport, collector: Collector, on_event) -> None:
    """Drive a proton transport over a blocking socket until either side closes."""
    while True:
        while (ev := collector.peek()) is not None:
            on_event(ev)
            collector.pop()
        pending = transport.pending()
        if pending > 0:
            sock.sendall(transport.peek(pending))
            transport.pop(pending)
            continue
        if pending < 0:
            return
        if transport.capacity() < 0:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            transport.close_tail()
            continue
        transport.push(data)


def _serve_amqp(sock: socket.socket, first: bytes, seen: Seen) -> None:
    transport = Transport(Transport.SERVER)
    conn = Connection()
    collector = Collector()
    conn.collect(collector)
    transport.bind(conn)

    def on_event(ev) -> None:
        name = ev.type.name
        if name == "PN_CONNECTION_REMOTE_OPEN":
            seen.remote_container = ev.connection.remote_container
            ev.connection.open()
        elif name == "PN_SESSION_REMOTE_OPEN":
            ev.session.open()
        elif name == "PN_LINK_REMOTE_OPEN":
            ev.link.source.copy(ev.link.remote_source)
            ev.link.target.copy(ev.link.remote_target)
            ev.link.open()
            if ev.link.is_receiver:
                ev.link.flow(10)
        elif name == "PN_DELIVERY" and ev.link.is_receiver and not ev.delivery.partial:
            msg = Message()
            msg.decode(ev.link.recv(ev.delivery.pending))
            seen.bodies.append(msg.body)
            ev.delivery.update(Delivery.ACCEPTED)
            ev.delivery.settle()
            ev.link.advance()
            ev.link.flow(1)
        elif name == "PN_LINK_REMOTE_CLOSE":
            ev.link.close()
        elif name == "PN_SESSION_REMOTE_CLOSE":
            ev.session.close()
        elif name == "PN_CONNECTION_REMOTE_CLOSE":
            ev.connection.close()

    if first:
        transport.push(first)
    pump_proton(sock, transport, collector, on_event)


class _ThreadedServer:
    """A listening socket on 127.0.0.1 (port from the OS) and a thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)  # how soon close() stops the accept loop
        self.port = self.sock.getsockname()[1]
        self.url = f"amqp://127.0.0.1:{self.port}"
        self.seen: list[Seen] = []
        self.done = threading.Event()  # set after each connection ends
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(TIMEOUT)
            seen = Seen()
            self.seen.append(seen)
            t = threading.Thread(target=self._run, args=(conn, seen), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, conn: socket.socket, seen: Seen) -> None:
        try:
            with conn:
                self.handle(conn, seen)
        except OSError:
            pass
        finally:
            self.done.set()

    def handle(self, conn: socket.socket, seen: Seen) -> None:
        raise NotImplementedError

    def wait_done(self, count: int = 1) -> list[Seen]:
        """The first `count` connections, once they have ended (bounded wait)."""
        for t in list(self._threads)[:count]:
            t.join(TIMEOUT)
            assert not t.is_alive(), "a test server connection did not end"
        return self.seen[:count]

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._accepter.join(TIMEOUT)
        for t in self._threads:
            t.join(TIMEOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SaslFrontServer(_ThreadedServer):
    """SaslServer in front of a stock proton server transport, as the broker does it."""

    def __init__(self, make_sasl: Callable[[], SaslServer]) -> None:
        self.make_sasl = make_sasl
        super().__init__()

    def handle(self, conn: socket.socket, seen: Seen) -> None:
        server = self.make_sasl()
        while server.state == "pending":
            if server.pending_check is not None:
                # This thread is already off any event loop: it is the "worker thread".
                server.check_done(server.pending_check())
            else:
                data = conn.recv(65536)
                if not data:
                    server.peer_closed()
                    break
                server.feed(data)
            out = server.take_output()
            seen.sasl_output += out
            conn.sendall(out)
        seen.state, seen.user, seen.mechanism = server.state, server.user, server.mechanism
        seen.failure = server.failure
        if server.state == "ok":
            _serve_amqp(conn, server.rest, seen)


class ProtonSaslServer(_ThreadedServer):
    """A stock proton server transport doing its own SASL with `mechs`."""

    def __init__(self, mechs: str = "ANONYMOUS") -> None:
        self.mechs = mechs
        super().__init__()

    def handle(self, conn: socket.socket, seen: Seen) -> None:
        transport = Transport(Transport.SERVER)
        sasl = transport.sasl()
        sasl.allowed_mechs(self.mechs)
        connection = Connection()
        collector = Collector()
        connection.collect(collector)
        transport.bind(connection)

        def on_event(ev) -> None:
            name = ev.type.name
            if name == "PN_CONNECTION_REMOTE_OPEN":
                seen.state = "ok"
                seen.user = transport.user
                seen.mechanism = sasl.mech
                seen.remote_container = ev.connection.remote_container
                ev.connection.open()
            elif name == "PN_CONNECTION_REMOTE_CLOSE":
                ev.connection.close()

        pump_proton(conn, transport, collector, on_event)


@dataclass
class ClientResult:
    sasl: SaslClient
    remote_container: str | None = None


def sasl_client_connect(port: int, client: SaslClient) -> ClientResult:
    """Log in with `client` over a socket, then open (and close) an AMQP connection with a
    stock client transport fed from `client.rest`."""
    result = ClientResult(client)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        client.start()
        sock.sendall(client.take_output())
        while client.state == "pending":
            data = sock.recv(65536)
            if not data:
                client.peer_closed()
                break
            client.feed(data)
            sock.sendall(client.take_output())
        if client.state != "ok":
            return result
        transport = Transport(Transport.CLIENT)
        conn = Connection()
        conn.container = "qstore-sasl-test"
        collector = Collector()
        conn.collect(collector)
        transport.bind(conn)
        conn.open()

        def on_event(ev) -> None:
            if ev.type.name == "PN_CONNECTION_REMOTE_OPEN":
                result.remote_container = ev.connection.remote_container or ""
                ev.connection.close()
            elif ev.type.name == "PN_CONNECTION_REMOTE_CLOSE":
                with contextlib.suppress(Exception):
                    transport.close_tail()

        if client.rest:
            transport.push(client.rest)
        pump_proton(sock, transport, collector, on_event)
    return result
