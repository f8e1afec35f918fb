"""The I/O thread of one client connection: connecting, serving the engine, failing over.

One background thread drives a proton engine (engine.py) over a socket: the engine, never proton's
reactor, so that fail-over is ours to decide. Every touch of the engine, from this thread or from
an application thread, happens under `IoThread.lock`; application threads change the engine (send,
credit, settle) and `wake()` the thread, which writes the output. Waits use `IoThread.cond`,
notified on every event that can end a wait.

Each attempt gets a fresh engine and a new generation number (`gen`), and the owner re-opens its
sessions and links on it, pipelined behind the AMQP open (which the engine holds back until its
SASL login succeeded). The attempt counts as connected only when the broker answers with its own
open: a backup drops the socket after reading ours, which sends us on to the next URL
(reconnect.py says which and when). A login the broker refuses, or one no attempt could pass (no
mechanism in common, a SCRAM signature that does not match), is an `AuthenticationError`; a
broker that hangs up or fails for now during the login is a failed attempt like a dead port.
Losing an open connection starts a new reconnect episode; bad credentials, a reconnect that gives
up, or close() end the thread, and every later call raises `IoThread.error`.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from proton import Connection, Event, Link

from qstore.urls import Address

from .engine import Engine, EngineOptions
from .errors import UNAUTHORIZED, AuthenticationError, MessagingError, TlsError, fresh
from .errors import ConnectionError as ClientConnectionError
from .reconnect import GiveUp, ReconnectPolicy
from .tls import HandshakeFailed, handshake

log = logging.getLogger("qstore.client")


class EngineOwner(Protocol):
    """What the I/O thread tells the `Connection` (always under the lock)."""

    def engine_started(self, conn: Connection) -> None: ...
    def engine_lost(self) -> None: ...


class LinkHandler(Protocol):
    def on_remote_open(self, link: Link) -> None: ...
    def on_remote_close(self, link: Link, condition: Any) -> None: ...
    def on_flow(self, link: Link) -> None: ...
    def on_delivery(self, delivery: Any) -> None: ...


class IoThread:
    def __init__(
        self,
        urls: list[Address],
        owner: EngineOwner,
        policy: ReconnectPolicy,
        options: EngineOptions,
        connect_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.urls = urls
        self.owner = owner
        self.policy = policy
        self.options = options
        self.connect_timeout = connect_timeout  # TCP connect (+ TLS), then again for the open
        self.tls = tls  # for ssl: addresses; never None when one is in `urls`

        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.gen = 0  # one per engine: deliveries of an older generation are stale
        self.opened = False  # the broker's AMQP open arrived on the current engine
        self.error: MessagingError | None = None  # set once: every later call raises it
        self.links: dict[Link, LinkHandler] = {}
        self.connects = 0  # successful opens, the first one included
        self.index = 0  # the URL of the current (or last) engine
        self.last_reason = ""
        self.mechanism: str | None = None  # the SASL mechanism of the last successful login

        self._engine: Engine | None = None
        self._open_deadline = 0.0
        self._closing = False
        self._stopped = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False
        self._thread = threading.Thread(target=self._run, name="qstore.client-io", daemon=True)

    # -- for application threads (under the lock, except start and close) ----------------------

    @property
    def url(self) -> str:
        return str(self.urls[self.index])

    @property
    def connection(self) -> Connection | None:
        """The current engine's connection, None between engines."""
        return self._engine.connection if self._engine is not None else None

    def start(self) -> None:
        if self._thread.ident is None and not self._stopped:
            self.policy.begin(time.monotonic())
            self._thread.start()

    def wake(self) -> None:
        """Ask the I/O thread to process the engine (after a change made under the lock)."""
        if not self._woken:
            self._woken = True
            with contextlib.suppress(OSError, ValueError):
                self._wake_w.send(b"x")

    def raise_error(self) -> None:
        """Raise the connection's fatal error, if any."""
        if self.error is not None:
            raise fresh(self.error)

    def wait(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ready() (which may raise), the connection fails (raised), or the timeout
        passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if ready():
                return True
            self.raise_error()
            if deadline is None:
                self.cond.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)

    def close(self, timeout: float) -> None:
        """Close the AMQP connection (waiting up to `timeout` for the broker's close) and stop."""
        deadline = time.monotonic() + timeout
        with self.lock:
            if self._stopped:
                return
            self._closing = True
            if self._engine is not None and self.opened and self.error is None:
                self._engine.connection.close()
                self.wake()
                while self._engine is not None and (left := deadline - time.monotonic()) > 0:
                    self.cond.wait(left)
            self._stopped = True
            if self._engine is not None:
                self._drop_engine()
            if self.error is None:
                self.error = ClientConnectionError("the connection is closed")
            self.cond.notify_all()
            self.wake()
        if self._thread.ident is None:
            self._close_wake()  # never started: nobody else will
        elif threading.current_thread() is not self._thread:
            self._thread.join(max(0.1, deadline - time.monotonic()))

    # -- the I/O thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self.lock:
                    engine = self._engine
                    if self._stopped or self.error is not None or (self._closing and not engine):
                        return
                    if engine is None:
                        try:
                            index, at = self.policy.next(time.monotonic())
                        except GiveUp as exc:
                            urls = ", ".join(str(u) for u in self.urls)
                            last = f"; last error: {self.last_reason}" if self.last_reason else ""
                            err = f"could not connect to {urls}: {exc}{last}"
                            self._fail(ClientConnectionError(err))
                            return
                if engine is None:
                    if self._sleep_until(at):
                        self._attempt(index)
                else:
                    self._service(engine)
        except Exception as exc:  # a bug of ours: fail loudly rather than hang the application
            log.exception("qstore.client I/O thread failed")
            with self.lock:
                self._fail(ClientConnectionError(f"client I/O thread failed: {exc!r}"))
        finally:
            self._close_wake()

    def _close_wake(self) -> None:
        with self.lock:
            self._wake_w.close()
            self._wake_r.close()

    def _sleep_until(self, at: float) -> bool:
        """Sleep until `at`; False if the I/O thread was stopped meanwhile."""
        while True:
            with self.lock:
                if self._stopped:
                    return False
            remaining = at - time.monotonic()
            if remaining <= 0:
                return True
            r, _, _ = select.select([self._wake_r], [], [], remaining)
            if r:
                self._drain_wake()

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        self._woken = False

    def _attempt(self, index: int) -> None:
        addr = self.urls[index]
        if addr.transport not in ("tcp", "ssl") or (addr.transport == "ssl" and not self.tls):
            with self.lock:
                self._fail(ClientConnectionError(f"{addr}: transport {addr.transport} unsupported"))
            return
        deadline = time.monotonic() + self.connect_timeout
        try:
            sock = socket.create_connection((addr.host, addr.port), timeout=self.connect_timeout)
        except OSError as exc:
            with self.lock:
                self.index = index
                self._attempt_failed(exc.strerror or str(exc) or type(exc).__name__)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if addr.transport == "ssl":
            assert self.tls is not None
            try:
                sock = handshake(
                    sock,
                    self.tls,
                    addr.host,
                    deadline,
                    lambda: self._stopped,
                    self._wake_r,
                    self._drain_wake,
                )
            except HandshakeFailed as exc:
                with self.lock:
                    self.index = index
                    if exc.verify:  # the next attempt meets the same certificate
                        self._fail(TlsError(f"{addr}: {exc}"))
                    else:
                        self._attempt_failed(str(exc))
                return
        with self.lock:
            if self._stopped:
                sock.close()
                return
            self.index = index
            self._engine = Engine(sock, addr, self.options)
            self.opened = False
            self.gen += 1
            self._open_deadline = time.monotonic() + self.connect_timeout
            log.debug("connecting to %s", addr)
            self._engine.connection.open()
            self.owner.engine_started(self._engine.connection)

    def _service(self, engine: Engine) -> None:
        """One round: process the engine, wait for the socket, a wake-up or a deadline, do I/O."""
        with self.lock:
            if self._engine is not engine:
                return
            self._pump(engine)
            if self._engine is not engine:
                return
            want_read, want_write = engine.wants()
            readers = [self._wake_r, engine.sock] if want_read else [self._wake_r]
            writers = [engine.sock] if want_write else []
            deadlines = [d for d in (engine.tick_deadline, self._open_deadline) if d]
            # TLS may hold decrypted bytes that select() cannot see: read them without waiting.
            buffered = want_read and engine.buffered() > 0
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        r, w, _ = select.select(readers, writers, [], 0.0 if buffered else timeout)
        with self.lock:
            if self._wake_r in r:
                self._drain_wake()
            if self._engine is not engine:
                return
            if engine.sock in r or buffered:
                engine.read()
            if engine.sock in w:
                engine.write()

    def _pump(self, engine: Engine) -> None:
        """Tick the engine, handle its events, write what it says; notice a dead engine."""
        if engine.sasl_failure is not None:
            self._login_failed(engine, engine.sasl_failure)
            return
        now = time.monotonic()
        engine.tick(now)
        if not self._events(engine):
            return
        engine.write()
        dead = engine.dead  # may post events (the reason): handle them first
        if not self._events(engine):
            return
        if not self.opened and self._open_deadline and now >= self._open_deadline:
            self._lose(f"no AMQP open within {self.connect_timeout:g}s")
        elif dead:
            self._lose(engine.reason or "the connection closed")

    def _events(self, engine: Engine) -> bool:
        """Dispatch every collected event; False if the engine went meanwhile."""
        while (ev := engine.next_event()) is not None:
            self._dispatch(ev, engine)
            if self._engine is not engine:
                return False
            engine.pop_event()
        return True

    def _dispatch(self, ev: Event, engine: Engine) -> None:
        t = ev.type
        if t in (Event.DELIVERY, Event.LINK_FLOW, Event.LINK_REMOTE_OPEN, Event.LINK_REMOTE_CLOSE):
            h = self.links.get(ev.link)
            if h is None:
                pass
            elif t == Event.DELIVERY:
                h.on_delivery(ev.delivery)
            elif t == Event.LINK_FLOW:
                h.on_flow(ev.link)
            elif t == Event.LINK_REMOTE_OPEN:
                h.on_remote_open(ev.link)
            else:
                h.on_remote_close(ev.link, ev.link.remote_condition)
        elif t == Event.SESSION_REMOTE_CLOSE:
            for link, h in list(self.links.items()):
                if link.session == ev.session:
                    h.on_remote_close(link, ev.session.remote_condition)
        elif t == Event.CONNECTION_REMOTE_OPEN:
            self.opened = True
            self._open_deadline = 0.0
            self.connects += 1
            self.policy.connected()
            self.last_reason = ""
            self.mechanism = engine.mechanism
            log.info("connected to %s (SASL %s)", self.url, engine.mechanism)
            self.cond.notify_all()
        elif t == Event.CONNECTION_REMOTE_CLOSE:
            cond = ev.connection.remote_condition
            if not self._closing:
                if self._refused(cond):
                    return
                what = f"{cond.name}: {cond.description}" if cond is not None else "no reason"
                engine.reason = f"the broker closed the connection ({what})"
            ev.connection.close()
        elif t == Event.TRANSPORT_ERROR:
            cond = ev.transport.condition
            if not self._closing and self._refused(cond):
                return
            if cond is not None:
                engine.reason = engine.reason or f"{cond.name}: {cond.description}"
        elif t == Event.TRANSPORT_CLOSED:
            self._lose(engine.reason or "the connection closed")

    def _login_failed(self, engine: Engine, failure: str) -> None:
        """The SASL login failed: try again (elsewhere) if another attempt may pass, else end
        with the seed's error for bad credentials (the text names the condition)."""
        if engine.sasl_transient:
            self._lose(failure)
        else:
            self._fail(AuthenticationError(f"{self.url}: {UNAUTHORIZED}: {failure}", UNAUTHORIZED))

    def _refused(self, cond: Any) -> bool:
        """Bad credentials end the I/O thread: trying again (or elsewhere) cannot help."""
        if cond is None or cond.name != UNAUTHORIZED:
            return False
        self._fail(AuthenticationError(f"{self.url}: {cond.name}: {cond.description}", cond.name))
        return True

    # -- losing an engine -----------------------------------------------------------------------

    def _drop_engine(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
        self.links.clear()
        self.owner.engine_lost()
        self.opened = False
        self.gen += 1
        self._open_deadline = 0.0

    def _lose(self, reason: str) -> None:
        """The current engine is gone: fail over, or fail."""
        was_open = self.opened
        self._drop_engine()
        self.cond.notify_all()
        if self._closing:
            return
        if not was_open:
            self._attempt_failed(reason)
            return
        log.warning("connection to %s lost: %s", self.url, reason)
        if not self.policy.enabled:
            self._fail(ClientConnectionError(f"connection to {self.url} lost: {reason}"))
            return
        self.policy.begin(time.monotonic(), start=self.index + 1)

    def _attempt_failed(self, reason: str) -> None:
        log.debug("no connection at %s: %s", self.url, reason)
        self.last_reason = f"{self.url}: {reason}"
        self.policy.failed(time.monotonic())

    def _fail(self, error: MessagingError) -> None:
        if self.error is None:
            self.error = error
            if not self._closing:
                log.error("connection failed: %s", error)
        if self._engine is not None:
            self._drop_engine()
        self.cond.notify_all()
