"""Why a TLS handshake failed, for the log: both ends of the network edge meet it (the listener's
accepted sockets and the HA pump's connections to the primary).

Here, not in `broker/security`: the network edge wraps sockets in TLS and reports the failures;
security makes the contexts and reads certificates, and builds on the edge (its authenticator is
handed a `EnginePump`), so the edge must not import it back.
"""

from __future__ import annotations

import ssl

import anyio

# What a failed TLS handshake raises under anyio: the SSL library's error, a socket error, or
# (a peer that hangs up) EndOfStream / BrokenResourceError, which are not OSErrors.
HANDSHAKE_ERRORS = (
    TimeoutError,
    ssl.SSLError,
    OSError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
)


# The SSL library's reasons that people meet most, with what they usually mean.
_HINTS = {
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS: a plain AMQP port or client?",
    "CERTIFICATE_VERIFY_FAILED": "the certificate is not signed by --ssl-ca-file's CA, or does "
    "not name the host",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA that signed our certificate",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "--ssl-require-client-auth: the client sent no "
    "certificate",
}


def handshake_reason(exc: BaseException) -> str:
    """Why a TLS handshake failed, in one line: the SSL library's reason (e.g.
    CERTIFICATE_VERIFY_FAILED), not its repr. anyio reports a peer that hangs up mid-handshake
    as EndOfStream (or BrokenResourceError), which say nothing by themselves."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, anyio.EndOfStream):
        return "the peer closed the connection"
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or " ".join(str(cause).split())
        hint = _HINTS.get(reason)
        return f"{reason} ({hint})" if hint else reason
    if isinstance(exc, anyio.BrokenResourceError) and exc.__cause__ is None:
        return "the connection broke"
    return " ".join(str(cause).split()) or type(cause).__name__
