"""What an enqueue record holds for the application: its AMQP message, decoded with proton.

The broker journals each message's AMQP encoding exactly as received and never decodes it; an
operator looking for "order-1" knows the message by the message-id, subject, properties and body
the application set, so the journal tools decode it here. The bytes go through the broker's own
strict check first (`codec.decode`): proton on its own takes garbage for an empty message, and a
record whose body is not a message must be shown as such, not as an empty one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cproton import pn_message_get_content_type
from proton import Array, Described

from broker.amqp.codec import BadMessage
from broker.amqp.codec import decode as strict_decode

TEXT_PREVIEW = 64  # characters of a text body shown unless --body
HEX_PREVIEW = 32  # bytes of a binary body shown unless --body


class Undecodable(Exception):
    """The stored bytes are not an AMQP message; the text says why (one line)."""


@dataclass(slots=True)
class MessageView:
    """The fields of a message that an application sets and an operator searches by.

    Values are plain Python (str, int, float, bool, bytes, lists, dicts): times in ms since the
    epoch, `ttl` in ms, None for what the message does not carry.
    """

    message_id: Any
    correlation_id: Any
    subject: str | None
    to: str | None
    reply_to: str | None
    content_type: str | None
    durable: bool
    priority: int
    ttl: int | None
    expiry_time: int | None
    creation_time: int | None
    properties: dict[str, Any]
    body_type: str  # text, binary, value (any other AMQP value or sequence), none
    body: Any

    @property
    def body_size(self) -> int:
        """Characters of a text body, bytes of a binary one, 0 otherwise."""
        return len(self.body) if isinstance(self.body, str | bytes) else 0


def decode_message(data: bytes | memoryview) -> MessageView:
    """Decode a stored message; `Undecodable` (with a one-line reason) when it is not one."""
    try:
        m = strict_decode(bytes(data))
    except BadMessage as exc:
        raise Undecodable(str(exc)) from None
    body = m.body
    if body is None:
        kind = "none"
    elif isinstance(body, str):
        kind = "text"
    elif isinstance(body, bytes | memoryview):
        kind = "binary"
    else:
        kind = "value"
    return MessageView(
        message_id=plain(m.id),
        correlation_id=plain(m.correlation_id),
        subject=m.subject,
        to=m.address,
        reply_to=m.reply_to,
        # (proton's own property turns "not set" into the symbol 'None')
        content_type=pn_message_get_content_type(m._msg),
        durable=bool(m.durable),
        priority=int(m.priority),
        ttl=_ms(m.ttl),
        expiry_time=_ms(m.expiry_time),
        creation_time=_ms(m.creation_time),
        properties={str(k): plain(v) for k, v in (m.properties or {}).items()},
        body_type=kind,
        body=plain(body),
    )


def _ms(seconds: float | None) -> int | None:
    """proton gives times and the ttl in seconds, 0 for "not set"."""
    return round(seconds * 1000) if seconds else None


def plain(value: Any) -> Any:
    """A decoded AMQP value as plain Python, owning its bytes (proton's binaries are views into
    its C objects, gone with them); proton's int and str subclasses become int and str."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, dict):
        return {_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, Array):
        return [plain(v) for v in value.elements]
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Described):
        return {"descriptor": plain(value.descriptor), "value": plain(value.value)}
    return str(value)  # decimals, and whatever else proton may grow


def _key(key: Any) -> str:
    k = plain(key)
    return k if isinstance(k, str) else json.dumps(jsonable(k))


def jsonable(value: Any) -> Any:
    """`plain` values for JSON: bytes as lowercase hex, uuids as text."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def message_json(v: MessageView, full_body: bool = False) -> dict[str, Any]:
    """The message's fields for --json (body: text, hex for binary, the value otherwise)."""
    body, cut = _body(v, full_body)
    return {
        "message_id": jsonable(v.message_id),
        "correlation_id": jsonable(v.correlation_id),
        "subject": v.subject,
        "to": v.to,
        "reply_to": v.reply_to,
        "content_type": v.content_type,
        "durable": v.durable,
        "priority": v.priority,
        "ttl": v.ttl,
        "expiry_time": v.expiry_time,
        "creation_time": v.creation_time,
        "properties": jsonable(v.properties),
        "body_type": v.body_type,
        "body_size": v.body_size,
        "body": jsonable(body) if v.body_type != "binary" else body,
        "body_truncated": cut,
    }


def _body(v: MessageView, full: bool) -> tuple[Any, bool]:
    """The body as shown: text (cut to TEXT_PREVIEW), binary as hex (cut to HEX_PREVIEW)."""
    b = v.body
    if v.body_type == "text":
        return (b, False) if full or len(b) <= TEXT_PREVIEW else (b[:TEXT_PREVIEW], True)
    if v.body_type == "binary":
        cut = not full and len(b) > HEX_PREVIEW
        return (b[:HEX_PREVIEW] if cut else b).hex(), cut
    return b, False


def message_pairs(
    v: MessageView, full_body: bool = False, record_priority: int | None = None
) -> list[tuple[str, str]]:
    """(name, text) for a one-line rendering; fields the message does not carry are left out,
    and the header priority too when it is the record's own."""
    out: list[tuple[str, str]] = []

    def add(name: str, value: Any) -> None:
        if value is not None:
            out.append((name, value_text(value)))

    add("message-id", v.message_id)
    add("correlation-id", v.correlation_id)
    add("subject", v.subject)
    add("to", v.to)
    add("reply-to", v.reply_to)
    add("content-type", v.content_type)
    out.append(("durable", "true" if v.durable else "false"))
    if v.priority != record_priority:
        add("amqp-priority", v.priority)
    add("ttl", None if v.ttl is None else f"{v.ttl}ms")
    add("expiry-time", None if v.expiry_time is None else time_text(v.expiry_time))
    add("creation-time", None if v.creation_time is None else time_text(v.creation_time))
    if v.properties:
        out.append(("properties", _compact(jsonable(v.properties))))
    out.append(("body", body_text(v, full_body)))
    return out


def body_text(v: MessageView, full: bool = False) -> str:
    """text -> "quoted", binary -> hex:..., other values -> JSON, none -> none; "..." if cut."""
    shown, cut = _body(v, full)
    more = "..." if cut else ""
    if v.body_type == "text":
        return json.dumps(shown) + more
    if v.body_type == "binary":
        return f"hex:{shown}{more}"
    if v.body_type == "none":
        return "none"
    return _compact(jsonable(shown))


def value_text(value: Any) -> str:
    """One value of `key=value`: bare when unambiguous, JSON-quoted otherwise."""
    if isinstance(value, bytes):
        return f"hex:{value.hex()}"
    if isinstance(value, dict | list):
        return _compact(jsonable(value))
    text = str(value)
    if not text or any(c.isspace() or c in "\"'=\\" for c in text) or not text.isprintable():
        return json.dumps(text)
    return text


def time_text(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)
