"""TLS for the client's socket: Python's `ssl`, under proton's engine (which sees only plaintext).

An `ssl:` address (or `amqps://`) is TLS or nothing: the I/O thread wraps the connected socket and
completes the handshake before the engine sees a byte, and a handshake that fails is a failed
attempt, never a retry in clear. The default context (`ssl.create_default_context`) verifies the
broker's certificate against the system's CAs or `ssl_ca_file`, and checks that it names the host
connected to (IP addresses included). A certificate that does not verify is a `TlsError`: the
next attempt would meet the same certificate, so it is not retried.

The handshake runs on a non-blocking socket with its own deadline and watches the I/O thread's
wake-up socket, so `close()` and the connect timeout both bound it.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Callable


class HandshakeFailed(Exception):
    """The TLS handshake did not complete; `verify` tells a certificate that did not verify."""

    def __init__(self, text: str, verify: bool = False) -> None:
        super().__init__(text)
        self.verify = verify


def client_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A context that verifies the broker (against `ca_file`, else the system's CAs) and, with
    `cert_file`, presents a client certificate (its key in `key_file` or in `cert_file`).
    Unreadable files raise ValueError with one line naming the file."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"ssl_ca_file {ca_file}: {_why(exc)}") from None
    if key_file and not cert_file:
        raise ValueError("ssl_key_file needs ssl_cert_file")
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            where = cert_file + (f" / {key_file}" if key_file else "")
            raise ValueError(f"ssl_cert_file {where}: {_why(exc)}") from None
    return ctx


def handshake(
    sock: socket.socket,
    context: ssl.SSLContext,
    host: str,
    deadline: float,
    stopped: Callable[[], bool],
    wake: socket.socket,
    drain: Callable[[], None],
) -> ssl.SSLSocket:
    """Wrap the connected, non-blocking `sock` and complete the handshake by `deadline`
    (time.monotonic()); `HandshakeFailed` otherwise. The wait also wakes on `wake` (then calls
    `drain`), and ends early once `stopped()`. The socket is closed on failure."""
    try:
        tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    except (OSError, ValueError) as exc:
        sock.close()
        raise HandshakeFailed(f"TLS setup failed: {_why(exc)}") from None
    try:
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                readers, writers = [tls, wake], []
            except ssl.SSLWantWriteError:
                readers, writers = [wake], [tls]
            if stopped():
                raise HandshakeFailed("the connection is closing")
            left = deadline - time.monotonic()
            if left <= 0:
                raise HandshakeFailed("TLS handshake timed out")
            ready, _, _ = select.select(readers, writers, [], left)
            if wake in ready:
                drain()
    except ssl.SSLCertVerificationError as exc:
        tls.close()
        raise HandshakeFailed(
            f"TLS certificate verification failed: {exc.verify_message or _why(exc)}", verify=True
        ) from None
    except HandshakeFailed:
        tls.close()
        raise
    except (OSError, ssl.SSLError) as exc:
        tls.close()
        raise HandshakeFailed(f"TLS handshake failed: {_why(exc)}") from None


def buffered(sock: socket.socket) -> int:
    """Bytes TLS has decrypted but nobody read yet: select() cannot see them."""
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
