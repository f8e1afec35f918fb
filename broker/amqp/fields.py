"""Fields of a peer's performatives that proton keeps for us without looking at them.

Proton's engine checks a frame's encoding and the fields it acts on itself, but a container-id,
link name or address that is not UTF-8, or open properties that are not a map (or hold a char
beyond Unicode, or lists nested thousands deep) are stored as they came, and proton's Python
binding raises when asked for them (UnicodeDecodeError, ValueError, RecursionError). Read
through these functions they raise `BadField` instead, which the connection answers with
amqp:decode-error, as it does a message section that cannot be decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proton import Link

from broker.model import ModelError

from . import codec

DECODE_ERROR = "amqp:decode-error"
_FAILURES = (UnicodeError, ValueError, RecursionError)


class BadField(ModelError):
    condition = DECODE_ERROR


def text(what: str, read: Callable[[], str | None]) -> str | None:
    """A string field (`read` is e.g. `lambda: conn.remote_container`)."""
    try:
        return read()
    except _FAILURES:
        raise BadField(f"{what} is not valid UTF-8") from None


def properties(what: str, read: Callable[[], Any]) -> dict[str, Any]:
    """A `fields` map (e.g. the open's properties) with string keys, binaries owned; {} if
    absent."""
    try:
        props = read()
        if props is None:
            return {}
        if not isinstance(props, dict):
            raise BadField(f"{what} is not a map")
        return {str(k): codec.owned(v) for k, v in props.items()}
    except _FAILURES as exc:
        raise BadField(f"{what} cannot be decoded ({type(exc).__name__})") from None


def check_addresses(link: Link) -> None:
    """The addresses of the peer's source and target (read again later, as proton has them)."""
    text("the source address", lambda: link.remote_source.address)
    text("the target address", lambda: link.remote_target.address)
