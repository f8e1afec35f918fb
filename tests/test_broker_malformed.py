"""Malformed input never takes the broker down.

One broker for the module, and one well-behaved client (a `BlockingConnection`) connected from
the start: after every bad connection, the good client still sends and receives, the broker
process is alive, and the bad connection is gone from the broker's own list of connections
(`$management` connection QUERY). Bad connections send: random bytes; a valid AMQP or SASL
protocol header followed by garbage; a frame header announcing a frame larger than the
max-frame-size (before and after a proper `open`); a truncated frame, then EOF or a close.

Bad messages on a good connection: a delivery whose payload is not an AMQP message is rejected
with amqp:decode-error, and the link and connection go on working. At the codec level: random and
mutated bytes give `BadMessage` and nothing else, and every message proton encodes is read
exactly as proton reads it (the strict scan must not reject what stock clients send).
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from broker_clients import drain
from broker_harness import BrokerProcess, Brokers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proton import Connection, Data, Delivery, Message, Transport, symbol, ulong
from proton.utils import BlockingConnection

from broker.amqp import codec

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
FRAMING_ERROR = b"amqp:connection:framing-error"
MAX_FRAME = 65536  # the broker's default --max-frame-size
CLOSE_WAIT = 15.0  # the broker drops a connection within its close timeout (5 s) of an error


def _frame_header(size: int, kind: int = 0) -> bytes:
    """size, data offset 2 (words), type (0 AMQP, 1 SASL), channel 0."""
    return struct.pack(">IBBH", size, 2, kind, 0)


def _client_hello() -> bytes:
    """What a proton client sends first: the AMQP header and an `open` frame."""
    t = Transport()
    c = Connection()
    c.container = "malformed-test"
    t.bind(c)
    c.open()
    return bytes(t.peek(t.pending()))


def _garbage(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# -- the module's broker and good client --------------------------------------------------------


class GoodClient:
    """Sends and receives on its own queue; asks `$management` for the open connections."""

    def __init__(self, url: str) -> None:
        self.conn = BlockingConnection(url, timeout=10)
        self.sender = self.conn.create_sender("good")
        self.receiver = self.conn.create_receiver("good")
        self.replies = self.conn.create_receiver(None, dynamic=True)
        self.mgmt = self.conn.create_sender("$management")
        self.roundtrips = 0

    def roundtrip(self, n: int = 3) -> None:
        bodies = [f"good-{uuid.uuid4()}" for _ in range(n)]
        for body in bodies:
            self.sender.send(Message(body=body, durable=True))
        got = []
        for _ in bodies:
            got.append(self.receiver.receive(timeout=10).body)
            self.receiver.accept()
        assert got == bodies
        self.roundtrips += 1

    def peers(self) -> set[str]:
        self.mgmt.send(
            Message(
                reply_to=self.replies.link.remote_source.address,
                properties={"operation": "QUERY", "type": "connection"},
                body={},
            )
        )
        reply = self.replies.receive(timeout=10)
        self.replies.accept()
        assert reply.properties["statusCode"] == 200, reply.properties
        return {c["peer"] for c in reply.body}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    bs = Brokers(tmp_path_factory.mktemp("malformed"))
    try:
        yield bs.start(args=["--auto-create", "yes"])
    finally:
        bs.stop_all()


@pytest.fixture(scope="module")
def good(broker: BrokerProcess) -> Iterator[GoodClient]:
    client = GoodClient(broker.url)
    client.roundtrip()
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.conn.close()


def _after(broker: BrokerProcess, good: GoodClient, bad_peer: str) -> None:
    """The broker is up, the good client works, and the bad connection is gone."""
    assert broker.alive(), broker.log()
    good.roundtrip()
    deadline = time.monotonic() + CLOSE_WAIT
    while bad_peer in good.peers():
        assert time.monotonic() < deadline, f"{bad_peer} still connected"
        time.sleep(0.05)


# -- bad connections ----------------------------------------------------------------------------


def _port(broker: BrokerProcess) -> int:
    return int(broker.url.rsplit(":", 1)[1])


def _send_and_read_to_eof(
    broker: BrokerProcess, data: bytes, hello: bytes | None = None
) -> tuple[bytes, str]:
    """Send `data` on a raw socket (after `hello` and the broker's answer to it, if given) and
    read until the broker closes the connection (bounded). Returns what the broker said, and
    our address as the broker names its peer."""
    s = socket.create_connection(("127.0.0.1", _port(broker)), timeout=CLOSE_WAIT)
    peer = "{}:{}".format(*s.getsockname())
    out = b""
    try:
        if hello is not None:
            s.sendall(hello)
            out += s.recv(65536)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)  # the broker may hang up before it has read everything
        deadline = time.monotonic() + CLOSE_WAIT
        while True:
            assert time.monotonic() < deadline, f"the broker kept the connection open: {out!r}"
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    return out, peer


BAD_STREAMS: dict[str, Callable[[], bytes]] = {
    "random-bytes": lambda: _garbage(1, 1000),
    "random-bytes-short": lambda: _garbage(2, 7),
    "random-bytes-large": lambda: _garbage(3, 300_000),
    "amqp-header-then-garbage": lambda: AMQP_HEADER + _garbage(4, 1000),
    "sasl-header-then-garbage": lambda: SASL_HEADER + _garbage(5, 1000),
    "frame-over-max-before-open": lambda: AMQP_HEADER + _frame_header(0x7FFFFFFF),
    "sasl-frame-over-max": lambda: SASL_HEADER + _frame_header(0x7FFFFFFF, kind=1),
    "wrong-protocol-version": lambda: b"AMQP\x00\x02\x00\x00" + _client_hello()[8:],
    "http-request": lambda: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_STREAMS))
def test_bad_stream_is_closed(broker: BrokerProcess, good: GoodClient, name: str) -> None:
    data = BAD_STREAMS[name]()
    reply, peer = _send_and_read_to_eof(broker, data)
    assert reply == b"" or reply.startswith(b"AMQP"), reply[:100]
    if data.startswith(AMQP_HEADER):
        assert FRAMING_ERROR in reply, reply
    _after(broker, good, peer)


def test_frame_over_max_frame_size_after_open(broker: BrokerProcess, good: GoodClient) -> None:
    oversized = _frame_header(MAX_FRAME + 100) + b"\x00" * 200
    reply, peer = _send_and_read_to_eof(broker, oversized, hello=_client_hello())
    assert reply.startswith(AMQP_HEADER), reply[:100]
    assert FRAMING_ERROR in reply, reply
    _after(broker, good, peer)


def test_truncated_frame_then_eof(broker: BrokerProcess, good: GoodClient) -> None:
    """Half the client's `open`, then EOF: the broker gives up on the connection (within its
    close timeout) while the good client goes on sending and receiving."""
    hello = _client_hello()
    s = socket.create_connection(("127.0.0.1", _port(broker)), timeout=CLOSE_WAIT)
    peer = "{}:{}".format(*s.getsockname())
    try:
        s.sendall(hello[: len(hello) - 5])
        s.shutdown(socket.SHUT_WR)
        s.settimeout(0.2)
        deadline = time.monotonic() + CLOSE_WAIT
        while True:
            assert time.monotonic() < deadline, "the broker kept the half-closed connection"
            try:
                if not s.recv(65536):
                    break
            except TimeoutError:
                good.roundtrip(1)  # meanwhile the broker serves everyone else
            except ConnectionResetError:
                break
    finally:
        s.close()
    _after(broker, good, peer)


def test_truncated_frame_then_close(broker: BrokerProcess, good: GoodClient) -> None:
    hello = _client_hello()
    s = socket.create_connection(("127.0.0.1", _port(broker)), timeout=CLOSE_WAIT)
    peer = "{}:{}".format(*s.getsockname())
    s.sendall(hello + _frame_header(100)[:5])
    s.close()
    _after(broker, good, peer)


def test_many_bad_connections_at_once(broker: BrokerProcess, good: GoodClient) -> None:
    socks: list[socket.socket] = []
    try:
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", _port(broker)), timeout=CLOSE_WAIT)
            socks.append(s)
            s.sendall(AMQP_HEADER + _garbage(100 + i, 64))
        good.roundtrip()
        peers = {"{}:{}".format(*s.getsockname()) for s in socks}
        deadline = time.monotonic() + CLOSE_WAIT
        while peers & good.peers():
            assert time.monotonic() < deadline, "bad connections still open"
            time.sleep(0.05)
    finally:
        for s in socks:
            s.close()
    assert broker.alive()
    good.roundtrip()


# -- bad messages on a good connection --------------------------------------------------------

_VALID = bytes(Message(body="ok", durable=True, subject="s").encode())

BAD_PAYLOADS: dict[str, bytes] = {
    "garbage": b"garbage",
    "empty": b"",
    "random": _garbage(6, 200),
    "truncated-message": _VALID[:-3],
    "value-not-a-section": b"\xa1\x03abc",
    "unknown-descriptor": b"\x00\x53\x99\x45",
    "sections-out-of-order": b"\x00\x53\x77\xa1\x02ok\x00\x53\x70\x45",
    "two-amqp-values": b"\x00\x53\x77\x41\x00\x53\x77\x41",
    "header-not-a-list": b"\x00\x53\x70\xa1\x02ok",
    "list-size-lies": b"\x00\x53\x70\xc0\x05\x01\x41",
    "body-not-utf8": b"\x00\x53\x77\xa1\x02\xff\xfe",
    "data-not-binary": b"\x00\x53\x75\xa1\x02ok",
    # issue 11: these were amqp:internal-error, a traceback, and the connection closed
    "descriptor-chain": b"\x00\x53\x77" + b"\x00" * 5000 + b"\x45",
    "char-beyond-unicode": b"\x00\x53\x74\xc1\x09\x02\xa1\x01k\x73\x00\x11\x00\x00",
    "char-beyond-a-c-int": b"\x00\x53\x74\xc1\x09\x02\xa1\x01k\x73\xff\xff\xff\xff",
    "durable-a-string": b"\x00\x53\x70\xc0\x05\x01\xa1\x02no",
    "to-an-int": b"\x00\x53\x73\xc0\x05\x03\x40\x40\x54\x01",
}


@pytest.fixture
def raw_sender(broker: BrokerProcess) -> Iterator[tuple[BlockingConnection, Any]]:
    conn = BlockingConnection(broker.url, timeout=10)
    try:
        yield conn, conn.create_sender("bad-messages")
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _send_raw(conn: BlockingConnection, sender: Any, payload: bytes, tag: str) -> Delivery:
    """A delivery with exactly these bytes as the message (what Message.send does, unencoded)."""
    link = sender.link
    dlv = link.delivery(tag)
    link.stream(payload)
    link.advance()
    conn.wait(lambda: dlv.remote_state != 0 or dlv.settled, timeout=10, msg="no outcome")
    return dlv


def test_bad_messages_are_rejected_with_decode_error(
    broker: BrokerProcess, good: GoodClient, raw_sender: tuple[BlockingConnection, Any]
) -> None:
    conn, sender = raw_sender
    for name, payload in BAD_PAYLOADS.items():
        dlv = _send_raw(conn, sender, payload, name)
        assert dlv.remote_state == Delivery.REJECTED, name
        cond = dlv.remote.condition
        assert cond is not None and cond.name == "amqp:decode-error", (name, cond)
        assert cond.description, name
    # The link and the connection go on: a real message after all that is accepted.
    assert _send_raw(conn, sender, _VALID, "valid").remote_state == Delivery.ACCEPTED
    receiver = conn.create_receiver("bad-messages")
    m = receiver.receive(timeout=10)
    receiver.accept()
    assert (m.body, m.subject) == ("ok", "s")
    assert [m.body for m in drain(receiver)] == []  # nothing else was queued
    assert broker.alive()
    assert "Traceback" not in broker.log()
    good.roundtrip()


# -- the codec on its own -----------------------------------------------------------------------


def test_random_and_mutated_bytes_only_ever_give_bad_message() -> None:
    rnd = random.Random(7)
    bases = [
        bytes(Message(body="hello", durable=True, properties={"a": 1, "b": [1, 2]}).encode()),
        bytes(Message(body={"k": [1, 2, 3]}, id=5, annotations={symbol("x-a"): 1}).encode()),
    ]
    rejected = 0
    for k in range(20_000):
        if k % 2:
            data = rnd.randbytes(rnd.randint(0, 40))
        else:
            m = bytearray(rnd.choice(bases))
            for _ in range(rnd.randint(1, 3)):
                m[rnd.randrange(len(m))] = rnd.getrandbits(8)
            data = bytes(m[: rnd.randrange(1, len(m) + 1)])
        try:
            codec.extract(data, 0.0)
        except codec.BadMessage:
            rejected += 1
    assert rejected > 15_000  # most damage is seen; none of it raised anything else


def _proton_view(data: bytes, now: float) -> tuple[Any, ...]:
    """What the broker used to read through proton's full decode."""
    m = Message()
    m.decode(data)
    props = {str(k): codec.owned(v) for k, v in (m.properties or {}).items()}
    ttl = m.ttl
    expiry = (now + ttl) if ttl else None
    types = [type(v) for v in props.values()]
    return (m.durable, m.priority, expiry, m.subject, props, types, m.delivery_count, m.address)


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    _text,
    st.binary(max_size=8),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**64 - 1).map(ulong),
    st.floats(allow_nan=False),
    st.uuids(),
    _text.map(lambda s: symbol(s.encode("ascii", "ignore").decode())),
)
_value = st.one_of(
    _scalar, st.lists(_scalar, max_size=3), st.dictionaries(_text, _scalar, max_size=3)
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    durable=st.booleans(),
    priority=st.integers(0, 255),
    ttl=st.integers(0, 2**31).map(lambda ms: ms / 1000),
    count=st.integers(0, 2**32 - 2),
    subject=st.none() | _text,
    address=st.none() | _text,
    props=st.none() | st.dictionaries(_text, _value, max_size=4),
    body=_value,
)
def test_what_proton_encodes_is_read_as_proton_reads_it(
    durable: bool,
    priority: int,
    ttl: float,
    count: int,
    subject: str | None,
    address: str | None,
    props: dict[str, Any] | None,
    body: Any,
) -> None:
    m = Message(
        body=body,
        durable=durable,
        priority=priority,
        ttl=ttl,
        delivery_count=count,
        subject=subject,
        address=address,
        properties=props,
        id=uuid.uuid4(),
    )
    data = bytes(m.encode())
    msg, decoded = codec.extract(data, 10.0)
    ours = (
        msg.durable,
        msg.priority,
        msg.expiry,
        msg.subject,
        msg.properties,
        [type(v) for v in msg.properties.values()],
        msg.delivery_count,
        decoded.address,
    )
    assert ours == _proton_view(data, 10.0)
    # A redelivery rewrites only the header: the rest is byte for byte what was sent.
    again = codec.with_header(data, count + 1, False)
    r = Message()
    r.decode(again)
    assert (r.delivery_count, r.first_acquirer) == (count + 1, False)
    assert (r.durable, r.priority, r.ttl, r.subject, r.address) == (
        m.durable,
        m.priority,
        m.ttl,
        m.subject,
        m.address,
    )
    header_size = Data().decode(data)  # proton's decoder: the first value is the header
    assert again.endswith(data[header_size:])
