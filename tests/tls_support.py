"""TLS test helpers until the broker has a TLS listener of its own: real sockets on 127.0.0.1.

`Sniffer` is a plain TCP server that records the first bytes of each connection (a TLS
ClientHello starts with 0x16, an AMQP header with "AMQP") and then closes it: what a client that
is asked for `ssl:` sends to a plain port. `TlsProxy` terminates TLS with a certificate made by
`trustme` and relays the plaintext to a real qstored's port, so a client's TLS path is proven
end to end against a real broker; it records what each handshake did (the error, or the client
certificate presented). Both stop their threads in `close()` (use them as context managers).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

HANDSHAKE_TIMEOUT = 10.0
TLS_RECORD = 0x16


class ThreadedServer:
    """A test server on 127.0.0.1: each accepted socket served in its own thread by `serve`;
    `connections` counts them."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.connections = 0
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve_guarded, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve_guarded(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            self.serve(conn)

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._accepter.join(5)
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sniffer(ThreadedServer):
    """Records the first bytes each client sends (up to 8, waiting up to 5 s), then hangs up."""

    def __init__(self) -> None:
        self.first: list[bytes] = []
        self.seen = threading.Condition()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        data = b""
        with contextlib.suppress(OSError):
            while len(data) < 8 and (chunk := conn.recv(8 - len(data))):
                data += chunk
        with self.seen:
            self.first.append(data)
            self.seen.notify_all()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[bytes]:
        with self.seen:
            self.seen.wait_for(lambda: len(self.first) >= n, timeout)
            return list(self.first)


@dataclass
class Handshake:
    error: str | None = None  # why the server side failed, if it did
    peer_cert: dict[str, Any] | None = None  # the client certificate, if one was presented
    relayed: int = 0  # plaintext bytes relayed client -> broker
    first: bytes = b""  # the first plaintext bytes (an AMQP header)


class TlsProxy(ThreadedServer):
    """TLS on `port` (context `server`), plaintext to 127.0.0.1:`target`."""

    def __init__(self, server: ssl.SSLContext, target: int) -> None:
        self.server = server
        self.target = target
        self.handshakes: list[Handshake] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        record = Handshake()
        self.handshakes.append(record)
        conn.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.server.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            record.error = str(exc)
            return
        record.peer_cert = tls.getpeercert() or None
        with tls, socket.create_connection(("127.0.0.1", self.target), timeout=5) as up:
            tls.setblocking(False)
            up.setblocking(False)
            self._relay(tls, up, record)

    def _relay(self, tls: ssl.SSLSocket, up: socket.socket, record: Handshake) -> None:
        while not self._stop.is_set():
            ready = [tls] if tls.pending() else select.select([tls, up], [], [], 0.1)[0]
            for src in ready:
                dst = up if src is tls else tls
                try:
                    data = src.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    continue
                except OSError:
                    return
                if not data:
                    return
                if src is tls:
                    record.relayed += len(data)
                    record.first = record.first or data[:8]
                _send_all(dst, data)


def _send_all(sock: socket.socket, data: bytes) -> None:
    deadline = time.monotonic() + 10
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            if time.monotonic() > deadline:
                raise TimeoutError("relay stalled") from None
            select.select([], [sock], [], 0.1)
            continue
        view = view[n:]
