"""One connected socket and the proton engine on it: bytes in, bytes out, timers. No decisions.

The I/O thread makes one Engine per connection attempt and throws it away when it dies; everything
here runs under the I/O thread's lock. Heartbeats: `transport.idle_timeout = 2 x heartbeat` makes
proton advertise `heartbeat` to the broker (which then sends at least that often) and declare the
connection dead after 2 x heartbeat without input, the seed's "no later than twice the heartbeat".

The login is ours, not proton's: pip's proton can only send PLAIN (the password in the clear,
or inside TLS), so `qstore.sasl.SaslClient` runs the SASL exchange first (SCRAM when the broker
offers it, and it checks the broker's signature), and proton's transport, on which `sasl()` is
never called, speaks plain AMQP. Until the outcome, proton's output (its AMQP header and open)
is held back and its clock does not run; what the broker sent after the outcome is pushed into
proton. A failed login leaves `sasl_failure` set for the I/O thread to judge.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from proton import Collector, Connection, Event, Transport, symbol

from qstore.sasl import SaslClient
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


def sasl_client(opts: EngineOptions, hostname: str | None) -> SaslClient:
    """The login of one attempt: with a user and password the best of SCRAM-SHA-512,
    SCRAM-SHA-256 and PLAIN the broker offers, else EXTERNAL or ANONYMOUS; `mechanisms` (one
    name or several, space-separated) limits the choice. ValueError (one line) for options that
    cannot log in, which Connection() checks up front."""
    return SaslClient(
        user=opts.user, password=opts.password, mechanism=opts.mechanisms, hostname=hostname
    )


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
        # Checked when the Connection is made (sasl_client), so this cannot raise.
        self._sasl: SaslClient | None = sasl_client(opts, addr.host)
        self._sasl.start()
        self._sasl_out = bytearray(self._sasl.take_output())  # SASL bytes, before any of proton's
        self.mechanism: str | None = None  # the one the login used, once it succeeded
        self.sasl_failure: str | None = None  # why the login failed, if it did
        self.sasl_transient = False  # ... and whether another attempt may not meet it
        c = self.connection = Connection()
        c.container = opts.container_id
        c.hostname = addr.host
        if opts.properties:
            c.properties = {symbol(k): v for k, v in opts.properties.items()}
        self.collector = Collector()
        c.collect(self.collector)
        t.bind(c)

    def tick(self, now: float) -> None:
        # Before the outcome proton has seen no input: its idle timeout would count the login
        # as silence. The I/O thread's open deadline bounds the login instead.
        self.tick_deadline = 0.0 if self._sasl is not None else self.transport.tick(now)

    def next_event(self) -> Event | None:
        return self.collector.peek()

    def pop_event(self) -> None:
        self.collector.pop()

    def wants(self) -> tuple[bool, bool]:
        """(read, write): whether the engine can take input and has output."""
        if self._sasl is not None:
            return self.sasl_failure is None, bool(self._sasl_out)
        return self.transport.capacity() > 0, bool(self._sasl_out) or self.transport.pending() > 0

    @property
    def dead(self) -> bool:
        """Both directions are closed. (capacity() and pending() also process the engine and
        may post events, e.g. a transport error: handle the events after asking.)"""
        t = self.transport
        return t.closed or (t.capacity() < 0 and t.pending() < 0)

    def buffered(self) -> int:
        return buffered(self.sock)

    def read(self) -> None:
        """Read what the socket has, and everything TLS decrypted with it."""
        t = self.transport
        while (cap := t.capacity()) > 0 and self.sasl_failure is None:
            try:
                # At most capacity(): what follows a SASL outcome then fits into proton too.
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
                if self._sasl is not None:
                    self._sasl.peer_closed()
                    self._login_step()
                t.close_tail()
                return
            if self._sasl is not None:
                self._sasl.feed(data)
                data = self._login_step()
            if data:
                t.push(data)
            if not self.buffered():
                return

    def _login_step(self) -> bytes:
        """After input for the SASL client: queue what it answers; once it succeeded, proton
        takes over and gets the bytes that followed the outcome (returned). A failure is left
        in `sasl_failure`."""
        sasl = self._sasl
        assert sasl is not None
        self._sasl_out += sasl.take_output()
        if sasl.state == "failed":
            self.sasl_failure = sasl.failure or "SASL: authentication failed"
            self.sasl_transient = sasl.transient
        elif sasl.state == "ok":
            self.mechanism = sasl.mechanism
            self._sasl = None
            return sasl.rest
        return b""

    def write(self) -> None:
        """Send the SASL bytes first; proton's only once the login succeeded."""
        t = self.transport
        limit = _TLS_WRITE if isinstance(self.sock, ssl.SSLSocket) else None
        while True:
            if self._sasl_out:
                ours, n = True, len(self._sasl_out)
            elif self._sasl is None:
                ours, n = False, t.pending()
                if n <= 0:
                    return
            else:
                return
            chunk = min(n, limit) if limit else n
            try:
                sent = self.sock.send(self._sasl_out[:chunk] if ours else t.peek(chunk))
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except ssl.SSLError as exc:
                self._broken(f"TLS error: {exc.reason or exc}")
                return
            except OSError as exc:
                self._broken(f"socket error: {exc.strerror or exc}")
                return
            if ours:
                del self._sasl_out[:sent]
            else:
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
