"""`codec.outgoing`: the header a consumer gets. A first delivery says first-acquirer true, a
redelivery its delivery-count and first-acquirer false; durable, priority, ttl and every byte
after the header stay as the sender made them. Each case is decoded back by proton."""

from __future__ import annotations

import struct

import pytest
from proton import Message

from broker.amqp import codec
from broker.model import QueuedMessage

BODY_AND_AFTER = b"\x00\x53\x73\x45\x00\x53\x77\xa1\x02hi"  # empty properties, a "hi" body


def queued(data: bytes | bytearray, count: int = 0, redelivered: bool = False) -> QueuedMessage:
    message, _ = codec.extract(data, 0.0)
    qm = QueuedMessage("q", 1, message)
    qm.delivery_count = count
    qm.redelivered = redelivered
    return qm


def sent(qm: QueuedMessage) -> bytes:
    head, body, start = codec.outgoing(qm)
    return head + bytes(body[start:])


def header(fields: bytes, count: int, list32: bool = False) -> bytes:
    if list32:
        return b"\x00\x53\x70\xd0" + struct.pack(">II", len(fields) + 4, count) + fields
    return b"\x00\x53\x70\xc0" + bytes((len(fields) + 1, count)) + fields


# kind -> (message, its durable, priority, ttl)
HEADERS = {
    "durable (proton)": (Message(body="hi", durable=True).encode(), (True, 4, 0)),
    "priority and ttl": (
        Message(body="hi", durable=True, priority=7, ttl=60).encode(),
        (True, 7, 60),
    ),
    "none": (Message(body="hi").encode(), (False, 4, 0)),
    "empty list": (b"\x00\x53\x70\x45" + BODY_AND_AFTER, (False, 4, 0)),
    "first-acquirer false, count 0": (
        header(b"\x41\x50\x02\x40\x42\x43", 5) + BODY_AND_AFTER,
        (True, 2, 0),
    ),
    "list32": (header(b"\x42\x50\x09\x40", 3, list32=True) + BODY_AND_AFTER, (False, 9, 0)),
    "symbolic descriptor": (  # proton's Message.decode ignores such a header: checked by hand
        b"\x00\xa3\x10amqp:header:list\xc0\x02\x01\x41" + BODY_AND_AFTER,
        (True, 4, 0),
    ),
}


@pytest.mark.parametrize("kind", list(HEADERS))
@pytest.mark.parametrize("as_bytearray", [False, True])
def test_first_delivery_says_first_acquirer(kind: str, as_bytearray: bool) -> None:
    data, (durable, priority, ttl) = HEADERS[kind]
    raw = bytearray(data) if as_bytearray else data
    for _ in range(2):  # the second time from what it remembered of the header
        out = sent(queued(raw))
        m = Message()
        m.decode(out)
        assert (m.first_acquirer, m.delivery_count) == (True, 0)
        assert (m.durable, m.priority, m.ttl, m.body) == (durable, priority, ttl, "hi")
        message, _ = codec.extract(out, 0.0)  # our own reading agrees
        assert (message.durable, message.priority) == (durable, priority)
        tail = len(BODY_AND_AFTER)
        assert out[-tail:] == data[-tail:]  # what follows the header: the sender's bytes


def test_alternating_headers_each_get_their_own() -> None:
    a = Message(body="a", durable=True, priority=1).encode()
    b = Message(body="b", durable=False, priority=9).encode()
    for _ in range(3):
        for data, (durable, priority) in ((a, (True, 1)), (b, (False, 9))):
            m = Message()
            m.decode(sent(queued(data)))
            assert (m.first_acquirer, m.durable, m.priority) == (True, durable, priority)


def test_first_delivery_sends_the_stored_bytes_after_the_header() -> None:
    data = bytearray(Message(body="x" * 1000, durable=True).encode())
    qm = queued(data)
    head, body, start = codec.outgoing(qm)
    assert body is qm.message.body  # not a copy of the message
    assert start == 7  # proton's durable header, replaced by the same with first-acquirer
    assert head == codec.with_header(bytes(data[:7]), 0, True)


@pytest.mark.parametrize(("count", "redelivered"), [(0, True), (1, True), (300, True)])
def test_redelivery_says_count_and_not_first(count: int, redelivered: bool) -> None:
    data = Message(body="hi", durable=True, priority=7).encode()
    m = Message()
    m.decode(sent(queued(data, count, redelivered)))
    assert (m.first_acquirer, m.delivery_count) == (False, count)
    assert (m.durable, m.priority, m.body) == (True, 7, "hi")
