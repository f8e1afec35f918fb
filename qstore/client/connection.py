"""A client connection that fails over: the public face of the I/O thread (see iothread.py).

    conn = Connection.establish("node1", reconnect=True, reconnect_urls=["node1", "node2", "node3"],
                                heartbeat=10)

URLs use the seed's grammar (`[amqp:][user[/password]@][tcp:|ssl:]host[:port][,...]`) or the
usual `amqp://[user:password@]host[:port]` / `amqps://...`; the connection tries `url`'s
addresses, then `reconnect_urls`, in order. An `ssl:` or `amqps://` address is TLS (see tls.py),
never plain TCP: verified against the system's CAs, or `ssl_ca_file`; `ssl_cert_file` and
`ssl_key_file` present a client certificate (then `sasl_mechanisms="EXTERNAL"` logs in with it,
the default when no user is given); `ssl_context` replaces all three with a context of your own.

The login is `qstore.sasl`'s SASL client (see engine.py): with a user and password, the best of
SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN the broker offers, so the password itself crosses the wire
only when the broker offers nothing better or `sasl_mechanisms="PLAIN"` asks for it; without,
EXTERNAL (a client certificate) or ANONYMOUS. `sasl_mechanisms` (one name or several, separated
by spaces) limits the choice; `sasl_mechanism` tells the one used.

With `reconnect`, a lost connection is re-established (see reconnect.py for the order and the
back-off) and every session, link and unacknowledged message comes back on its own;
`reconnect_timeout` (seconds from the loss) or `reconnect_limit` (attempts) bound it, after which
every call raises ConnectionError. Without `reconnect`, each URL is tried once and a loss is
fatal. Bad credentials and a broker certificate that does not verify are never retried.
"""

from __future__ import annotations

import ssl
import time
import uuid
from typing import Any

from proton import Connection as PnConnection

from qstore.urls import Address, UrlError, parse_client_url

from .engine import EngineOptions, sasl_client
from .errors import AddressError, ConnectionError, MessagingError, Timeout
from .iothread import IoThread, log
from .reconnect import ReconnectPolicy
from .session import Session
from .tls import client_context

DEFAULT_PORT = 5672
DEFAULT_CONNECT_TIMEOUT = 10.0


def _addresses(urls: list[str]) -> tuple[list[Address], str | None, str | None]:
    """Every address of every URL, in order, once each; the first credentials found."""
    out: list[Address] = []
    user = password = None
    for text in urls:
        try:
            parsed = parse_client_url(text)
        except UrlError as exc:
            raise AddressError(f"bad broker URL {text!r}: {exc}") from None
        if user is None and parsed.user:
            user, password = parsed.user, parsed.password
        out.extend(a for a in parsed.addresses if a not in out)
    return out, user, password


def _tls_context(
    urls: list[Address],
    context: ssl.SSLContext | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
) -> ssl.SSLContext | None:
    """The context for the ssl: addresses; None when there are none (TLS options then are a
    mistake worth saying: the connection would not use them)."""
    files = ca_file or cert_file or key_file
    if context is not None and files:
        raise ValueError("give either ssl_context or ssl_ca_file/ssl_cert_file/ssl_key_file")
    if not any(a.transport == "ssl" for a in urls):
        if context is not None or files:
            raise ValueError("TLS options given but no URL is ssl: or amqps://")
        return None
    return context or client_context(ca_file, cert_file, key_file)


class Connection:
    def __init__(
        self,
        url: str = f"127.0.0.1:{DEFAULT_PORT}",
        *,
        reconnect: bool = False,
        reconnect_urls: list[str] | None = None,
        reconnect_timeout: float | None = None,
        reconnect_limit: int | None = None,
        reconnect_interval_min: float = 0.05,
        reconnect_interval_max: float = 2.0,
        heartbeat: float | None = None,
        username: str | None = None,
        password: str | None = None,
        sasl_mechanisms: str | None = None,
        connect_timeout: float | None = None,
        container_id: str | None = None,
        properties: dict[str, Any] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ssl_ca_file: str | None = None,
        ssl_cert_file: str | None = None,
        ssl_key_file: str | None = None,
    ) -> None:
        if isinstance(reconnect_urls, str):
            reconnect_urls = [reconnect_urls]
        urls, url_user, url_password = _addresses([url, *(reconnect_urls or [])])
        tls = _tls_context(urls, ssl_context, ssl_ca_file, ssl_cert_file, ssl_key_file)
        user = username or url_user
        if sasl_mechanisms is None and not user and ssl_cert_file:
            sasl_mechanisms = "EXTERNAL"  # the certificate is who we are
        if heartbeat is not None and not heartbeat > 0:
            raise ValueError(f"heartbeat must be a number of seconds > 0, not {heartbeat!r}")
        if connect_timeout is None:
            connect_timeout = 2 * heartbeat if heartbeat else DEFAULT_CONNECT_TIMEOUT
        elif not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0, not {connect_timeout!r}")
        policy = ReconnectPolicy(
            len(urls),
            enabled=reconnect,
            interval_min=reconnect_interval_min,
            interval_max=reconnect_interval_max,
            timeout=reconnect_timeout,
            limit=reconnect_limit,
        )
        self._sessions: list[Session] = []
        self._n_sessions = 0
        options = EngineOptions(
            container_id=container_id or f"qstore-client-{uuid.uuid4()}",
            heartbeat=heartbeat,
            user=user,
            password=password if username else url_password,
            mechanisms=sasl_mechanisms,
            properties=properties,
        )
        sasl_client(options, None)  # a mechanism or credentials that cannot log in: ValueError
        self._io = IoThread(urls, self, policy, options, connect_timeout, tls)

    @classmethod
    def establish(cls, url: str = f"127.0.0.1:{DEFAULT_PORT}", **options: Any) -> Connection:
        """Create and open a connection (`timeout=` bounds the open; other options as __init__)."""
        timeout = options.pop("timeout", None)
        conn = cls(url, **options)
        conn.open(timeout)
        return conn

    def open(self, timeout: float | None = None) -> Connection:
        """Connect (failing over until a broker answers, if reconnect is on); Timeout after
        `timeout` seconds (the connection is then closed)."""
        d = self._io
        try:
            with d.lock:
                d.start()
                if not d.wait(lambda: d.opened, timeout):
                    raise Timeout(f"no broker accepted the connection within {timeout:g}s")
        except MessagingError:
            d.close(0.0)
            raise
        return self

    # -- state ----------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while an AMQP connection to a broker is open (False while failing over)."""
        return self._io.opened

    @property
    def url(self) -> str:
        """The broker of the current (or last) connection, as host:port."""
        return self._io.url

    @property
    def error(self) -> MessagingError | None:
        """Why the connection is unusable (closed, gave up, refused), or None."""
        return self._io.error

    @property
    def sasl_mechanism(self) -> str | None:
        """The SASL mechanism of the current (or last) login, e.g. "SCRAM-SHA-512"; None before
        the first. A password crosses the wire only with "PLAIN" (inside TLS, if ssl:)."""
        return self._io.mechanism

    @property
    def reconnects(self) -> int:
        """How many times a connection was re-established after the first."""
        return max(0, self._io.connects - 1)

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions)

    def session(self, name: str | None = None) -> Session:
        d = self._io
        with d.lock:
            d.raise_error()
            self._n_sessions += 1
            s = Session(self, name or f"session-{self._n_sessions}")
            self._sessions.append(s)
            if d.connection is not None:
                s._start(d.connection)
                d.wake()
            return s

    def close(self, timeout: float = 10.0) -> None:
        """Give senders up to `timeout` seconds for their outstanding acknowledgements (failing
        over if need be), then close the AMQP connection. Never raises for what it cannot finish:
        call `sync()` first to see every send error."""
        d = self._io
        deadline = time.monotonic() + timeout
        with d.lock:
            if d.error is None:
                for s in list(self._sessions):
                    try:
                        s.sync(max(0.0, deadline - time.monotonic()))
                    except Timeout:
                        left = sum(x.unsettled for x in s.senders)
                        log.warning("closing with %d unacknowledged messages", left)
                    except MessagingError:
                        pass  # logged when it happened
        d.close(max(0.5, deadline - time.monotonic()))

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.connected else ("failed" if self.error else "connecting")
        return f"Connection({self.url!r}, {state})"

    # -- the I/O thread's calls (under the lock) ----------------------------------------------

    def engine_started(self, conn: PnConnection) -> None:
        for s in self._sessions:
            s._start(conn)

    def engine_lost(self) -> None:
        for s in self._sessions:
            s._lost()

    def _forget(self, session: Session) -> None:
        if session in self._sessions:
            self._sessions.remove(session)


__all__ = ["Connection", "ConnectionError"]
