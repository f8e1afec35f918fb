"""Broker URLs in the seed's grammar (`--ha-brokers-url`, `--ha-public-url`, the tools' `-b`).

    url  = ["amqp:"] [user ["/" password] "@"] addr ("," addr)*
    addr = ["tcp:" | "ssl:"] host [":" port]

`rdma:` is part of the seed's grammar; it is recognised so that the error can say it is not
supported instead of mistaking "rdma" for a host name. An IPv6 host is written in brackets
(`[::1]:5672`). The user info ends at the last "@" (addresses never contain one) and the user name
at the first "/", so a password may hold any character.

A password never appears in an error message or a repr; `BrokerUrl.masked()` renders a URL for logs.

Clients and tools also take the usual URL form (`parse_client_url`):
`amqp://[user[:password]@]host[:port]` and `amqps://...`, the latter meaning TLS (the `ssl`
transport, port 5671 by default); user and password are percent-decoded there.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
TRANSPORTS = ("tcp", "ssl")
UNSUPPORTED_TRANSPORTS = ("rdma",)
MASK = "****"

_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_PREFIX = re.compile(r"(?i)(tcp|ssl|rdma):")
_AMQP = "amqp:"
_DIGITS = re.compile(r"[0-9]{1,5}")
_CRED_PREFIX = re.compile(r"(?i)amqps?:(?://)?")
_SCHEME = re.compile(r"(?i)(amqps?)://")


class UrlError(ValueError):
    """A URL or address that does not follow the grammar; the message is one line."""


def parse_host(text: str) -> str:
    """A host name, IPv4 address or IPv6 address (bracketed or not), returned without brackets."""
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ipv6(host):
            raise UrlError(f"bad IPv6 address '[{host}]'")
        return host
    if ":" in host:
        if _is_ipv6(host):
            return host
        raise UrlError(f"bad host '{host}'")
    if not _HOST_NAME.fullmatch(host):
        raise UrlError(f"bad host '{host}'" if host else "empty host")
    return host


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class Address:
    """One broker address: transport ("tcp" or "ssl"), host (no brackets) and port."""

    transport: str
    host: str
    port: int = DEFAULT_PORT

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise UrlError(f"unknown transport '{self.transport}'")
        if not 0 < self.port < 65536:
            raise UrlError(f"bad port {self.port} (expected 1..65535)")
        parse_host(self.host)

    @property
    def hostport(self) -> str:
        """`host:port`, IPv6 in brackets: what a socket-level tool prints or connects to."""
        return f"{_bracketed(self.host)}:{self.port}"

    def __str__(self) -> str:
        # A tcp host that looks like a prefix keeps an explicit "tcp:" so that it parses back.
        if self.transport != "tcp" or self.host.lower() in (*TRANSPORTS, *UNSUPPORTED_TRANSPORTS):
            return f"{self.transport}:{self.hostport}"
        return self.hostport


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed URL: optional credentials and one or more addresses, in the order given."""

    user: str | None
    password: str | None = field(repr=False)
    addresses: tuple[Address, ...]

    def __post_init__(self) -> None:
        if not self.addresses:
            raise UrlError("no address in URL")
        if self.user is not None and (not self.user or "/" in self.user):
            raise UrlError("user name must be non-empty and contain no '/'")
        if self.password is not None and (self.user is None or not self.password):
            raise UrlError("a password needs a user name and must be non-empty")

    def __str__(self) -> str:
        return self._render(self.password)

    def masked(self) -> str:
        """The URL with the password replaced by ****: safe for logs and status output."""
        return self._render(None if self.password is None else MASK)

    def _render(self, password: str | None) -> str:
        cred = ""
        if self.user is not None:
            cred = self.user + ("" if password is None else "/" + password) + "@"
        return _AMQP + cred + ",".join(str(a) for a in self.addresses)


def parse_url(text: str) -> BrokerUrl:
    """Parse the seed's URL grammar; raise `UrlError` naming the bad part."""
    body = text.strip()
    if not body:
        raise UrlError("empty URL")
    if body[: len(_AMQP)].lower() == _AMQP:
        body = body[len(_AMQP) :]
    if body.startswith("//"):
        raise UrlError(
            "'amqp://' is not in this grammar: "
            "write amqp:[user[/password]@]host[:port][,host[:port]...]"
        )
    user = password = None
    cred, at, rest = body.rpartition("@")
    if at:
        user, slash, pw = cred.partition("/")
        if not user:
            raise UrlError("empty user name before '@'")
        if slash:
            if not pw:
                raise UrlError(f"empty password after '{user}/'")
            password = pw
        body = rest
    return BrokerUrl(user, password, parse_address_list(body))


def parse_address_list(text: str, default_port: int = DEFAULT_PORT) -> tuple[Address, ...]:
    """`addr ("," addr)*` without credentials or the "amqp:" prefix."""
    if not text.strip():
        raise UrlError("no address in URL")
    return tuple(parse_address(part, default_port) for part in text.split(","))


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """One `["tcp:"|"ssl:"]host[":"port]`."""
    addr = text.strip()
    if not addr:
        raise UrlError("empty address (stray ',')")
    transport = "tcp"
    prefix = _PREFIX.match(addr)
    if prefix:
        transport = prefix.group(1).lower()
        if transport in UNSUPPORTED_TRANSPORTS:
            raise UrlError(f"'{addr}': the {transport} transport is not supported (use tcp or ssl)")
        addr = addr[prefix.end() :]
    host, port_text = _split_host_port(addr, text.strip())
    port = default_port
    if port_text is not None:
        if not _DIGITS.fullmatch(port_text) or not 0 < int(port_text) < 65536:
            raise UrlError(f"bad port '{port_text}' in '{text.strip()}' (expected 1..65535)")
        port = int(port_text)
    try:
        host = parse_host(host)
    except UrlError as e:
        raise UrlError(f"{e} in '{text.strip()}'" if host != text.strip() else str(e)) from None
    return Address(transport, host, port)


def _split_host_port(addr: str, whole: str) -> tuple[str, str | None]:
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise UrlError(f"missing ']' in '{whole}'")
        host, rest = addr[: end + 1], addr[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise UrlError(f"unexpected '{rest}' after ']' in '{whole}'")
        return host, rest[1:]
    colons = addr.count(":")
    if colons == 0:
        return addr, None
    if colons == 1:
        host, _, port = addr.partition(":")
        return host, port
    head = addr.split(":", 1)[0]
    if head.isalpha() and colons == 2:
        raise UrlError(f"unknown transport '{head}:' in '{whole}' (use tcp: or ssl:)")
    raise UrlError(f"IPv6 address must be in brackets in '{whole}', e.g. [::1]:5672")


def parse_addresses(text: str, default_port: int = DEFAULT_PORT) -> tuple[Address, ...]:
    """A tool's `-b BROKER`: "host[:port][,host[:port]...]", optional "amqp:" and transports.

    Credentials are refused rather than silently dropped; a caller that takes them uses parse_url.
    """
    body = text.strip()
    if body[: len(_AMQP)].lower() == _AMQP:
        body = body[len(_AMQP) :]
    if "@" in body:
        raise UrlError("expected host[:port] addresses here, without user/password@")
    if body.startswith("//"):
        raise UrlError("'//' is not in this grammar: write host[:port][,host[:port]...]")
    return parse_address_list(body, default_port)


def format_addresses(addresses: tuple[Address, ...] | list[Address]) -> str:
    """The inverse of parse_addresses: "host:port,ssl:host:port"."""
    return ",".join(str(a) for a in addresses)


def mask_password(text: str) -> str:
    """Hide the password in URL text that may not parse (for an error message or a log line).

    Knows this grammar's user/password and also the user:password of "amqp://" URLs.
    """
    cred, at, rest = text.rpartition("@")
    if not at:
        return text
    prefix = _CRED_PREFIX.match(cred)
    head = prefix.group(0) if prefix else ""
    cred = cred[len(head) :]
    cut = min((i for i in (cred.find("/"), cred.find(":")) if i >= 0), default=-1)
    if cut < 0:
        return text
    return f"{head}{cred[: cut + 1]}{MASK}@{rest}"


def parse_client_url(text: str) -> BrokerUrl:
    """A URL as a client or tool takes it: the seed's grammar (`parse_url`) or the usual
    `amqp://[user[:password]@]host[:port][,host[:port]...]`, where `amqps://` means TLS on
    every address (default port 5671). Never falls back: `amqps://` addresses are all `ssl`."""
    body = text.strip()
    scheme = _SCHEME.match(body)
    if scheme is None:
        return parse_url(body)
    tls = scheme.group(1).lower() == "amqps"
    body = body[scheme.end() :]
    user = password = None
    cred, at, rest = body.rpartition("@")
    if at:
        name, colon, pw = cred.partition(":")
        user = unquote(name)
        if not user:
            raise UrlError("empty user name before '@'")
        if colon:
            if not pw:
                raise UrlError(f"empty password after '{user}:'")
            password = unquote(pw)
        body = rest
    body = body.rstrip("/")
    for part in body.split(","):
        if _PREFIX.match(part.strip()):
            raise UrlError(
                f"'{part.strip()}': no transport prefix in an {scheme.group(1).lower()}:// URL"
            )
    addresses = parse_address_list(body, DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
    if tls:
        addresses = tuple(Address("ssl", a.host, a.port) for a in addresses)
    return BrokerUrl(user, password, addresses)
