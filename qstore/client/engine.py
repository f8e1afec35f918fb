"""One connected socket and the proton engine on it: bytes in, bytes out, timers. No decisions.

The driver makes one Engine per connection attempt and throws it away when it dies; everything
here runs under the driver's lock. Heartbeats: `transport.idle_timeout = 2 x heartbeat` makes
proton advertise `heartbeat` to the broker (which then sends at least that often) and declare the
connection dead after 2 x heartbeat without input, the seed's "no later than twice the heartbeat".
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from proton import Collector, Connection, Event, Transport, symbol

from qstore.urls import Address

from .tls import buffered

_READ_SIZE = 1 << 16
_TLS_WRITE = 16 << 10  # one TLS record: a retried SSL write must start with the same bytes


@dataclass(frozen=True)
class EngineOptions:
    """What every engine of one client connection is opened with."""

    container_id: str
    heartbeat: float | None = None
    user: str | None = None
    password: str | None = None
    mechanisms: str | None = None
    properties: dict[str, Any] | None = None


class Engine:
    """`sock` is non-blocking, plain or an `ssl.SSLSocket` whose handshake is done: TLS asks for
    a retry (SSLWantRead/WantWrite) where a socket would block, and may hold decrypted bytes
    that select() does not see (`buffered()`)."""

    def __init__(self, sock: socket.socket, addr: Address, opts: EngineOptions) -> None:
        self.sock = sock
        self.addr = addr
        self.reason: str | None = None  # why it is dying, once known
        self.tick_deadline = 0.0  # when proton's timers want a tick (0: never)
        t = self.transport = Transport()
        if opts.heartbeat:
            t.idle_timeout = 2 * opts.heartbeat
        sasl = t.sasl()
        if opts.user:
            sasl.allowed_mechs(opts.mechanisms or "PLAIN")
            sasl.allow_insecure_mechs = True  # PLAIN over plain TCP, as the seed's clients allow
        else:
            sasl.allowed_mechs(opts.mechanisms or "ANONYMOUS")
        c = self.connection = Connection()
        c.container = opts.container_id
        c.hostname = addr.host
        if opts.user:
            c.user = opts.user
            c.password = opts.password
        if opts.properties:
            c.properties = {symbol(k): v for k, v in opts.properties.items()}
        self.collector = Collector()
        c.collect(self.collector)
        t.bind(c)

    def tick(self, now: float) -> None:
        self.tick_deadline = self.transport.tick(now)

    def next_event(self) -> Event | None:
        return self.collector.peek()

    def pop_event(self) -> None:
        self.collector.pop()

    def wants(self) -> tuple[bool, bool]:
        """(read, write): whether the engine can take input and has output."""
        return self.transport.capacity() > 0, self.transport.pending() > 0

    @property
    def dead(self) -> bool:
        """Both directions are closed. (capacity() and pending() also process the engine and
        may post events, e.g. a SASL failure: handle the events after asking.)"""
        t = self.transport
        return t.closed or (t.capacity() < 0 and t.pending() < 0)

    def buffered(self) -> int:
        return buffered(self.sock)

    def read(self) -> None:
        """Read what the socket has, and everything TLS decrypted with it."""
        t = self.transport
        while (cap := t.capacity()) > 0:
            try:
                data = self.sock.recv(min(cap, _READ_SIZE))
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except ssl.SSLError as exc:
                self._broken(f"TLS error: {exc.reason or exc}")
                return
            except OSError as exc:
                self._broken(f"socket error: {exc.strerror or exc}")
                return
            if not data:
                self.reason = self.reason or "the broker closed the socket"
                t.close_tail()
                return
            t.push(data)
            if not self.buffered():
                return

    def write(self) -> None:
        t = self.transport
        limit = _TLS_WRITE if isinstance(self.sock, ssl.SSLSocket) else None
        while (n := t.pending()) > 0:
            chunk = min(n, limit) if limit else n
            try:
                sent = self.sock.send(t.peek(chunk))
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except ssl.SSLError as exc:
                self._broken(f"TLS error: {exc.reason or exc}")
                return
            except OSError as exc:
                self._broken(f"socket error: {exc.strerror or exc}")
                return
            t.pop(sent)
            if sent < chunk:
                return

    def _broken(self, reason: str) -> None:
        self.reason = self.reason or reason
        with contextlib.suppress(Exception):
            self.transport.close_tail()
        with contextlib.suppress(Exception):
            self.transport.close_head()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
