"""TLS contexts from the broker's options, made by Python's `ssl` module (never our own crypto).

The SASL layer runs in front of proton, so TLS must wrap it from outside: anyio's TLS stream on
the accepted socket (server) or on the connection to another broker (client), not proton's SSL.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from broker.config import BrokerConfig


class TlsError(Exception):
    """A certificate, key or CA file that cannot be used; one line naming the file."""


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    text = path.read_text(encoding="utf-8")
    return text.splitlines()[0] if text else ""


def _load_identity(ctx: ssl.SSLContext, cfg: BrokerConfig) -> None:
    assert cfg.ssl_cert_file is not None
    try:
        ctx.load_cert_chain(
            cfg.ssl_cert_file, cfg.ssl_key_file, password=_password(cfg.ssl_key_password_file)
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        key = f" / '{cfg.ssl_key_file}'" if cfg.ssl_key_file else ""
        raise TlsError(
            f"--ssl-cert-file: cannot use '{cfg.ssl_cert_file}'{key}: {_reason(exc)}"
        ) from None


def _load_ca(ctx: ssl.SSLContext, cfg: BrokerConfig) -> None:
    if cfg.ssl_ca_file is None:
        return
    try:
        ctx.load_verify_locations(cafile=cfg.ssl_ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsError(f"--ssl-ca-file: cannot use '{cfg.ssl_ca_file}': {_reason(exc)}") from None


def server_context(cfg: BrokerConfig) -> ssl.SSLContext | None:
    """The TLS listener's context, or None without --ssl-cert-file. Client certificates are
    asked for when a CA is given (then EXTERNAL is offered to a verified client) and required
    with --ssl-require-client-auth."""
    if cfg.ssl_cert_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(ctx, cfg)
    if cfg.ssl_ca_file is not None:
        _load_ca(ctx, cfg)
        ctx.verify_mode = ssl.CERT_REQUIRED if cfg.ssl_require_client_auth else ssl.CERT_OPTIONAL
    return ctx


def client_context(cfg: BrokerConfig) -> ssl.SSLContext:
    """For `ssl:` addresses of other brokers: their certificate is checked against
    --ssl-ca-file (else the system's CAs) and their host name; ours is shown if we have one."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_ca(ctx, cfg)
    if cfg.ssl_cert_file is not None:
        _load_identity(ctx, cfg)
    return ctx


def certificate_identity(cert: dict[str, Any] | None) -> str | None:
    """The user a verified client certificate stands for (EXTERNAL): its subject's common
    name, as qpidd takes it."""
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return str(value)
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
