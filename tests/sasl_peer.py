"""A SASL server that records what a client logs in with, and refuses it: a real socket on
127.0.0.1, speaking the AMQP SASL frames with proton's codec.

Until the broker checks passwords, this is how a test sees that a client sends the user, password
and mechanism it was given (PLAIN's initial response is "\\0user\\0password"), and how the
client takes the outcome `auth` (code 1): the seed's "Authentication failed". Optionally behind
TLS (`context`), to see EXTERNAL with a client certificate. `logins` holds one `Login` a client.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from dataclasses import dataclass

from proton import Data, symbol, ubyte

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
MECHANISMS, INIT, OUTCOME = 0x40, 0x41, 0x44
AUTH_FAILED = 1


@dataclass
class Login:
    header: bytes = b""
    mechanism: str | None = None
    response: bytes | None = None
    tls_error: str | None = None
    peer_cert: dict | None = None


def frame(descriptor: int, *fields: object) -> bytes:
    d = Data()
    d.put_described()
    d.enter()
    d.put_ulong(descriptor)
    d.put_list()
    d.enter()
    for f in fields:
        if isinstance(f, list):
            d.put_array(False, Data.SYMBOL)
            d.enter()
            for name in f:
                d.put_symbol(symbol(name))
            d.exit()
        else:
            d.put_object(f)
    d.exit()
    d.exit()
    body = d.encode()
    return struct.pack(">IBBH", 8 + len(body), 2, 1, 0) + body


def parse_init(body: bytes) -> tuple[str, bytes | None]:
    """(mechanism, initial response) of a sasl-init frame body."""
    d = Data()
    d.decode(body)
    d.rewind()
    d.next()
    d.enter()
    d.next()
    assert d.get_ulong() == INIT, "expected sasl-init"
    d.next()
    d.enter()
    d.next()
    mech = str(d.get_symbol())
    response = None
    if d.next() == Data.BINARY:
        response = bytes(d.get_binary())
    return mech, response


class SaslPeer:
    """Offers `mechanisms`, records the client's choice, answers `auth` (failed) and hangs up."""

    def __init__(
        self, mechanisms: tuple[str, ...] = ("PLAIN",), context: ssl.SSLContext | None = None
    ) -> None:
        self.mechanisms = list(mechanisms)
        self.context = context
        self.logins: list[Login] = []
        self.done = threading.Condition()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            login = Login()
            with contextlib.suppress(OSError), conn:
                conn.settimeout(5)
                self._serve(conn, login)
            with self.done:
                self.logins.append(login)
                self.done.notify_all()

    def _serve(self, conn: socket.socket, login: Login) -> None:
        sock: socket.socket = conn
        if self.context is not None:
            try:
                sock = self.context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                login.tls_error = str(exc)
                return
            login.peer_cert = sock.getpeercert() or None  # type: ignore[attr-defined]
        login.header = _read(sock, 8)
        if login.header != SASL_HEADER:
            return
        sock.sendall(SASL_HEADER + frame(MECHANISMS, self.mechanisms))
        size = struct.unpack(">I", _read(sock, 4))[0]
        rest = _read(sock, size - 4)
        login.mechanism, login.response = parse_init(rest[4:])
        sock.sendall(frame(OUTCOME, ubyte(AUTH_FAILED)))
        _read(sock, 1)  # until the client hangs up: it reads the outcome first

    def wait_for(self, n: int = 1, timeout: float = 10.0) -> list[Login]:
        with self.done:
            self.done.wait_for(lambda: len(self.logins) >= n, timeout)
            return list(self.logins)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(5)

    def __enter__(self) -> SaslPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data
