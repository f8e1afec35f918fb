"""What the broker reads from a message it receives, and what it changes when redelivering.

The model keeps each message's AMQP encoding exactly as received and never decodes it; this module
decodes once, at the door, to learn what routing and queueing need (durable, priority, TTL,
subject, application properties), and re-encodes only for a redelivery, whose header must carry
the new delivery count and first-acquirer false.
"""

from __future__ import annotations

from typing import Any

from proton import Message as AmqpMessage

from broker.model import Message, QueuedMessage


class BadMessage(Exception):
    """The bytes of a delivery are not an AMQP message (the sender gets `rejected`)."""


def decode(data: bytes) -> AmqpMessage:
    m = AmqpMessage()
    try:
        m.decode(data)
    except Exception as exc:  # proton raises its own errors for each kind of bad encoding
        raise BadMessage(f"message does not decode: {exc}") from None
    return m


def extract(data: bytes, now: float) -> tuple[Message, AmqpMessage]:
    """The model's view of received bytes, and the decoded message (for management)."""
    m = decode(data)
    ttl = m.ttl
    props = m.properties
    return (
        Message(
            body=data,
            durable=bool(m.durable),
            priority=min(max(int(m.priority), 0), 255),
            expiry=(now + ttl) if ttl else None,
            subject=m.subject,
            properties=_plain(props) if props else {},
            delivery_count=int(m.delivery_count or 0),
        ),
        m,
    )


def _plain(props: dict[Any, Any]) -> dict[str, Any]:
    """Application property keys as plain str (proton may hand back its symbol type)."""
    return {str(k): owned(v) for k, v in props.items()}


def owned(value: Any) -> Any:
    """`value` with every binary turned into `bytes`, maps and lists copied.

    proton 0.40 decodes a binary as a memoryview into the C message or data object, which is
    reused or freed once that object goes: anything kept beyond the decode (properties, binding
    and queue arguments) must hold its own copy, or it later reads garbage (or crashes).
    """
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, dict):
        return {owned(k): owned(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(owned(v) for v in value)
    return value


def outgoing_bytes(qm: QueuedMessage) -> bytes:
    """The bytes to send for a queued message: as received unless redelivered, when the header's
    delivery-count and first-acquirer must tell the consumer."""
    if qm.delivery_count == qm.message.delivery_count and qm.first_acquirer:
        return qm.message.body
    m = decode(qm.message.body)
    m.delivery_count = qm.delivery_count
    m.first_acquirer = qm.first_acquirer
    return m.encode()


def encode(message: AmqpMessage) -> bytes:
    return message.encode()
