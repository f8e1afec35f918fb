"""The I/O thread of one client connection: a socket, a proton engine, and failing over.

One background thread owns the socket and drives a proton Transport/Connection/Collector over it
(the engine, never proton's reactor, so that fail-over is ours to decide). Every touch of the
engine, from this thread or from an application thread, happens under `Driver.lock`; application
threads change the engine (send, credit, settle) and `wake()` the thread, which writes the output.
Waits use `Driver.cond`, notified on every event that can end a wait.

Each socket gets a fresh engine, a new generation number (`gen`), and the owner re-opens its
sessions and links on it (pipelined behind the AMQP open). The attempt counts as connected only
when the broker answers with its own open: a backup drops the socket after reading ours, which
sends us on to the next URL. Heartbeats: `transport.idle_timeout = 2 x heartbeat` advertises
`heartbeat` to the broker and declares the connection dead after 2 x heartbeat without input.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from proton import Collector, Connection, Event, Link, Transport, symbol

from broker.urls import Address

from .errors import UNAUTHORIZED, AuthenticationError, MessagingError, fresh
from .errors import ConnectionError as ClientConnectionError
from .reconnect import GiveUp, ReconnectPolicy

log = logging.getLogger("qstore.client")

_READ_SIZE = 1 << 16


class EngineOwner(Protocol):
    """What the driver tells the `Connection` (always under the lock)."""

    def engine_started(self, conn: Connection) -> None: ...
    def engine_opened(self) -> None: ...
    def engine_lost(self) -> None: ...


class LinkHandler(Protocol):
    def on_remote_open(self, link: Link) -> None: ...
    def on_remote_close(self, link: Link, condition: Any) -> None: ...
    def on_flow(self, link: Link) -> None: ...
    def on_delivery(self, delivery: Any) -> None: ...


class Driver:
    def __init__(
        self,
        urls: list[Address],
        owner: EngineOwner,
        policy: ReconnectPolicy,
        *,
        heartbeat: float | None,
        connect_timeout: float,
        user: str | None,
        password: str | None,
        mechanisms: str | None,
        container_id: str,
        properties: dict[str, Any] | None,
    ) -> None:
        self.urls = urls
        self.owner = owner
        self.policy = policy
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.user = user
        self.password = password
        self.mechanisms = mechanisms
        self.container_id = container_id
        self.properties = {symbol(k): v for k, v in (properties or {}).items()}

        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.gen = 0  # one per engine: deliveries of an older generation are stale
        self.opened = False  # the broker's AMQP open arrived on the current engine
        self.error: MessagingError | None = None  # set once: every later call raises it
        self.links: dict[Link, LinkHandler] = {}
        self.connects = 0  # successful opens, the first one included
        self.index = 0  # the URL of the current (or last) engine
        self.last_reason = ""

        self._closing = False
        self._stopped = False
        self._sock: socket.socket | None = None
        self._transport: Transport | None = None
        self._conn: Connection | None = None
        self._collector: Collector | None = None
        self._reason: str | None = None  # why the current engine is going
        self._tick_deadline = 0.0
        self._open_deadline = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False
        self._thread = threading.Thread(target=self._run, name="qstore.client-io", daemon=True)

    # -- for application threads ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return str(self.urls[self.index])

    @property
    def connection(self) -> Connection | None:
        """The engine's connection, None between engines."""
        return self._conn

    def start(self) -> None:
        if not self._thread.is_alive() and not self._stopped:
            self.policy.begin(time.monotonic())
            self._thread.start()

    def wake(self) -> None:
        """Ask the I/O thread to process the engine (after a change made under the lock)."""
        if not self._woken:
            self._woken = True
            with contextlib.suppress(OSError, ValueError):
                self._wake_w.send(b"x")

    def raise_error(self) -> None:
        """Raise the connection's fatal error, if any (a fresh copy, so tracebacks stay short)."""
        if self.error is not None:
            raise fresh(self.error)

    def wait(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Under the lock: wait until ready() (which may raise), the connection fails (raised),
        or the timeout passes (False)."""
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
            if self._conn is not None and self.opened and self.error is None:
                self._conn.close()
                self.wake()
                while self._sock is not None and (left := deadline - time.monotonic()) > 0:
                    self.cond.wait(left)
            self._stopped = True
            if self._sock is not None:
                self._drop_engine()
            if self.error is None:
                self.error = ClientConnectionError("the connection is closed")
            self.cond.notify_all()
            self.wake()
        if not self._thread.is_alive() and self._thread.ident is None:
            self._close_wake()  # never started: nobody else will
        elif threading.current_thread() is not self._thread:
            self._thread.join(max(0.1, deadline - time.monotonic()))

    # -- the I/O thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self.lock:
                    sock = self._sock
                    if self._stopped or self.error is not None or (self._closing and not sock):
                        return
                    if sock is None:
                        try:
                            index, at = self.policy.next(time.monotonic())
                        except GiveUp as exc:
                            urls = ", ".join(str(u) for u in self.urls)
                            last = f"; last error: {self.last_reason}" if self.last_reason else ""
                            self._fail(
                                ClientConnectionError(f"could not connect to {urls}: {exc}{last}")
                            )
                            return
                if sock is None:
                    if self._sleep_until(at):
                        self._attempt(index)
                else:
                    self._service(sock)
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
        """Sleep until `at`; False if the driver was stopped meanwhile."""
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

    def _attempt(self, index: int) -> None:
        addr = self.urls[index]
        if addr.transport != "tcp":
            with self.lock:
                self._fail(ClientConnectionError(f"{addr}: only tcp is supported"))
            return
        try:
            sock = socket.create_connection((addr.host, addr.port), timeout=self.connect_timeout)
        except OSError as exc:
            with self.lock:
                self.index = index
                self._attempt_failed(exc.strerror or str(exc) or type(exc).__name__)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            if self._stopped:
                sock.close()
                return
            self.index = index
            self._start_engine(sock, addr)

    def _start_engine(self, sock: socket.socket, addr: Address) -> None:
        transport = Transport()
        if self.heartbeat:
            transport.idle_timeout = 2 * self.heartbeat
        sasl = transport.sasl()
        if self.user:
            sasl.allowed_mechs(self.mechanisms or "PLAIN")
            sasl.allow_insecure_mechs = True
        else:
            sasl.allowed_mechs(self.mechanisms or "ANONYMOUS")
        conn = Connection()
        conn.container = self.container_id
        conn.hostname = addr.host
        if self.user:
            conn.user = self.user
            conn.password = self.password
        if self.properties:
            conn.properties = self.properties
        collector = Collector()
        conn.collect(collector)
        transport.bind(conn)
        self._sock, self._transport, self._conn, self._collector = sock, transport, conn, collector
        self._reason = None
        self.opened = False
        self.gen += 1
        self._tick_deadline = 0.0
        self._open_deadline = time.monotonic() + self.connect_timeout
        log.debug("connecting to %s", addr)
        conn.open()
        self.owner.engine_started(conn)

    def _service(self, sock: socket.socket) -> None:
        with self.lock:
            if self._sock is not sock:
                return
            self._pump()
            t = self._transport
            if self._sock is not sock or t is None:
                return
            readers: list[socket.socket] = [self._wake_r]
            if t.capacity() > 0:
                readers.append(sock)
            writers = [sock] if t.pending() > 0 else []
            deadlines = [d for d in (self._tick_deadline, self._open_deadline) if d]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        r, w, _ = select.select(readers, writers, [], timeout)
        with self.lock:
            if self._wake_r in r:
                self._drain_wake()
            if self._sock is not sock:
                return
            if sock in r:
                self._read(sock)
            if sock in w:
                self._write()

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        self._woken = False

    def _read(self, sock: socket.socket) -> None:
        t = self._transport
        assert t is not None
        cap = t.capacity()
        if cap <= 0:
            return
        try:
            data = sock.recv(min(cap, _READ_SIZE))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._reason = self._reason or f"socket error: {exc.strerror or exc}"
            t.close_tail()
            return
        if data:
            t.push(data)
        else:
            self._reason = self._reason or "the broker closed the socket"
            t.close_tail()

    def _write(self) -> None:
        t, sock = self._transport, self._sock
        assert t is not None and sock is not None
        while (n := t.pending()) > 0:
            try:
                sent = sock.send(t.peek(n))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._reason = self._reason or f"socket error: {exc.strerror or exc}"
                t.close_head()
                t.close_tail()
                return
            t.pop(sent)
            if sent < n:
                return

    def _pump(self) -> None:
        """Tick the engine, handle its events, write what it says; notice a dead engine."""
        t = self._transport
        assert t is not None
        now = time.monotonic()
        self._tick_deadline = t.tick(now)
        if not self._events():
            return
        self._write()
        # capacity() and pending() process the engine and may post events (a SASL failure, say):
        # handle them before judging the engine dead, so that the reason is known.
        dead = t.capacity() < 0 and t.pending() < 0
        if not self._events():
            return
        if not self.opened and self._open_deadline and now >= self._open_deadline:
            self._lose(f"no AMQP open within {self.connect_timeout:g}s")
        elif dead or t.closed:
            self._lose(self._reason or "the connection closed")

    def _events(self) -> bool:
        """Dispatch every collected event; False if the engine went meanwhile."""
        collector, gen = self._collector, self.gen
        assert collector is not None
        while (ev := collector.peek()) is not None:
            self._dispatch(ev)
            if self.gen != gen or self._sock is None:
                return False
            collector.pop()
        return True

    def _dispatch(self, ev: Event) -> None:
        t = ev.type
        if t == Event.DELIVERY:
            h = self.links.get(ev.link)
            if h is not None:
                h.on_delivery(ev.delivery)
        elif t == Event.LINK_FLOW:
            h = self.links.get(ev.link)
            if h is not None:
                h.on_flow(ev.link)
        elif t == Event.LINK_REMOTE_OPEN:
            h = self.links.get(ev.link)
            if h is not None:
                h.on_remote_open(ev.link)
        elif t == Event.LINK_REMOTE_CLOSE:
            h = self.links.get(ev.link)
            if h is not None:
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
            log.info("connected to %s", self.url)
            self.owner.engine_opened()
            self.cond.notify_all()
        elif t == Event.CONNECTION_REMOTE_CLOSE:
            cond = ev.connection.remote_condition
            if self._closing:
                pass
            elif cond is not None and cond.name == UNAUTHORIZED:
                self._fail(
                    AuthenticationError(f"{self.url}: {cond.name}: {cond.description}", cond.name)
                )
                return
            else:
                what = f"{cond.name}: {cond.description}" if cond is not None else "no reason"
                self._reason = f"the broker closed the connection ({what})"
            ev.connection.close()
        elif t == Event.TRANSPORT_ERROR:
            cond = ev.transport.condition
            if cond is not None and cond.name == UNAUTHORIZED and not self._closing:
                self._fail(
                    AuthenticationError(f"{self.url}: {cond.name}: {cond.description}", cond.name)
                )
                return
            if cond is not None:
                self._reason = self._reason or f"{cond.name}: {cond.description}"
        elif t == Event.TRANSPORT_CLOSED:
            self._lose(self._reason or "the connection closed")

    # -- losing an engine -----------------------------------------------------------------------

    def _drop_engine(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self.links.clear()
        self.owner.engine_lost()
        self._transport = self._conn = self._collector = None
        self.opened = False
        self.gen += 1
        self._tick_deadline = self._open_deadline = 0.0

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
        if self._sock is not None:
            self._drop_engine()
        self.cond.notify_all()
