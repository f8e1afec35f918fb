"""Resource limits of a real qstored (#11): connections, message size (whole and as its
transfers arrive, also for `$management` requests).

Most tests share one broker with small limits (`limited`); each uses its own queue names. Raw
frames (tests/amqp_raw.py) say what no proton client would; stock proton clients show what a
client sees of a refusal.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from amqp_raw import (
    ATTACH,
    CLOSE,
    DETACH,
    DISPOSITION,
    SENDER,
    RawPeer,
)
from amqp_raw import frame as raw_frame
from broker_harness import BrokerProcess, Brokers
from proton import Message, uint
from proton.utils import BlockingConnection, LinkDetached, SyncRequestResponse
from security_support import wait_for_log

T = 10.0
LIMIT = 64 * 1024  # the limited broker's --max-message-size
LINKS = 4  # its --max-links-per-session
SESSIONS = 4  # its --max-sessions
TEMPORARY = 3  # its --max-temporary-queues
SIZE_EXCEEDED = "amqp:link:message-size-exceeded"
RESOURCE_LIMIT = "amqp:resource-limit-exceeded"
FRAMING_ERROR = "amqp:connection:framing-error"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    bs = Brokers(tmp_path_factory.mktemp("limits"))
    try:
        yield bs.start(
            args=[
                "--auto-create", "yes",
                "--max-message-size", "64KiB",
                "--max-sessions", str(SESSIONS),
                "--max-links-per-session", str(LINKS),
                "--max-temporary-queues", str(TEMPORARY),
                "--open-timeout", "1",
            ]
        )  # fmt: skip
    finally:
        bs.stop_all()


def _body(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def _depth(url: str, queue: str) -> int:
    c = BlockingConnection(url, timeout=T)
    try:
        reply = SyncRequestResponse(c, "$management").call(
            Message(properties={"operation": "READ", "type": "queue", "name": queue}, body={})
        )
    finally:
        c.close()
    assert reply.properties["statusCode"] == 200, reply.properties
    return int(reply.body["depth"])


def _served(b: BrokerProcess, queue: str = "limits-ok") -> None:
    """A normal client is served: a durable message goes in and comes out."""
    c = BlockingConnection(b.url, timeout=T)
    try:
        c.create_sender(queue).send(Message(body="ok", durable=True))
        r = c.create_receiver(queue)
        assert r.receive(timeout=T).body == "ok"
        r.accept()
    finally:
        c.close()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- connections ---------------------------------------------------------------------------------


def test_max_connections_refuses_the_next_socket_and_recovers(brokers: Brokers) -> None:
    b = brokers.start(args=["--auto-create", "yes", "--max-connections", "3"])
    held = [socket.create_connection(("127.0.0.1", b.port), timeout=T) for _ in range(3)]
    try:
        time.sleep(0.2)  # the broker has taken all three
        extra = socket.create_connection(("127.0.0.1", b.port), timeout=T)
        with contextlib.closing(extra):
            extra.settimeout(T)
            assert extra.recv(1) == b""  # closed at once, nothing said
        with contextlib.closing(socket.create_connection(("127.0.0.1", b.port), timeout=T)) as s:
            s.settimeout(T)
            assert s.recv(1) == b""
        line = wait_for_log(b, "refusing connections: 3 open")
        assert "--max-connections" in line
        assert b.log().count("refusing connections") == 1  # once per spell, not per socket
    finally:
        for s in held:
            s.close()
    # the idle sockets gone, a real client is served again
    deadline = time.monotonic() + T
    while True:
        try:
            conn = BlockingConnection(b.url, timeout=T)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        conn.create_sender("q").send(Message(body="after", durable=True))
        assert conn.create_receiver("q").receive(timeout=T).body == "after"
    finally:
        conn.close()
    line = wait_for_log(b, "accepting connections again")
    assert "(2 refused meanwhile)" in line


# -- message size ----------------------------------------------------------------------------------


def test_message_size_is_advertised_and_a_bigger_message_ends_only_its_link(
    limited: BrokerProcess,
) -> None:
    conn = BlockingConnection(limited.url, timeout=T)
    try:
        snd = conn.create_sender("size-q")
        assert snd.link.remote_max_message_size == LIMIT  # in the broker's attach
        snd.send(Message(body=_body(LIMIT - 200), durable=True))  # just under: accepted
        with pytest.raises(LinkDetached) as info:
            snd.send(Message(body=_body(4 * LIMIT), durable=True))
        cond = info.value.link.remote_condition
        assert cond.name == SIZE_EXCEEDED, cond
        assert f"exceeds the limit of {LIMIT} bytes (--max-message-size)" in cond.description
        # the connection and its session go on: a new link on them works
        again = conn.create_sender("size-q", name="size-again")  # proton sends its attach
        # before the detach of the link it replaces: the same name would be "already attached"
        again.send(Message(body="small", durable=True))
    finally:
        conn.close()
    assert _depth(limited.url, "size-q") == 2  # the big one is nowhere
    line = wait_for_log(limited, "closed link")
    assert SIZE_EXCEEDED in line and "WARNING" in line


def _attached_sender(p: RawPeer, address: str, handle: int = 0, channel: int = 0) -> list:
    """Attach a sending link; the broker's attach fields."""
    p.attach(f"raw-{address}-{handle}", handle, SENDER, address, channel=channel)
    return p.expect(ATTACH, channel).fields


def test_partial_transfers_are_counted_as_they_arrive(limited: BrokerProcess) -> None:
    """A message sent in frames that never completes: refused once its bytes pass the limit,
    while the sender is still sending; the rest of it is dropped; the session goes on."""
    p = RawPeer(limited.port)
    try:
        p.open()
        p.begin()
        fields = _attached_sender(p, "partial-q")
        assert int(fields[10]) == LIMIT  # max-message-size in the broker's attach
        chunk = b"\0" * 16000
        sent = 0
        detach = None
        p.transfer(0, 0, chunk, more=True)
        sent += len(chunk)
        while detach is None:
            assert sent < 4 * LIMIT, f"no detach after {sent} bytes: {p.frames}"
            p.transfer(0, None, chunk, more=True)
            sent += len(chunk)
            got = p.quiet(0.05)
            detach = next((f for f in got if f.code == DETACH), None)
        assert detach.error() is not None and detach.error()[0] == SIZE_EXCEEDED, p.frames
        assert "or more bytes" in detach.error()[1]
        assert LIMIT < sent <= LIMIT + 3 * len(chunk)  # counted as it came, not at the end
        disposition = next(f for f in p.frames if f.code == DISPOSITION)
        assert disposition.fields[3] is True  # the delivery was settled: proton let it go
        p.transfer(0, None, chunk)  # the rest of it (as the peer had not yet seen the detach)
        p.send(raw_frame(0, DETACH, [uint(0), True]))
        # the session goes on: a new link on it takes a complete message
        _attached_sender(p, "partial-q", handle=1)
        p.transfer(1, 1, bytes(Message(body="fine", durable=True).encode()))
        d = p.expect(DISPOSITION)
        assert d.fields[1] == 1 and not any(f.code == CLOSE for f in p.frames), p.frames
    finally:
        p.close()
    assert _depth(limited.url, "partial-q") == 1


def test_messages_arriving_on_many_links_are_bounded_together(limited: BrokerProcess) -> None:
    """Each link holds a message just under the limit: the connection's total of incomplete
    messages is bounded at twice the limit; the link that passes it is ended."""
    p = RawPeer(limited.port)
    try:
        p.open()
        p.begin()
        part = b"\0" * (LIMIT - 4096)
        for h in range(3):
            _attached_sender(p, "many-q", handle=h)
        p.transfer(0, 0, part, more=True)
        p.transfer(1, 1, part, more=True)
        assert not any(f.code == DETACH for f in p.quiet(0.3)), p.frames
        p.transfer(2, 2, part, more=True)
        detach = p.expect(DETACH)
        assert detach.fields[0] == 2, p.frames
        assert detach.error() is not None and detach.error()[0] == RESOURCE_LIMIT, p.frames
        assert "still arriving on this connection" in detach.error()[1]
        # link 0 completes its message: accepted
        message = bytes(Message(body="whole", durable=True).encode())
        p.transfer(0, None, b"")  # an empty last frame ends a message of only zeros: undecodable
        d = p.expect(DISPOSITION)
        assert d.fields[1] == 0, p.frames  # an outcome (rejected: zeros are no message)
        p.transfer(1, None, b"", aborted=True)  # link 1 gives up on its message
        p.transfer(0, 3, message)
        assert any(f.code == DISPOSITION and f.fields[1] == 3 for f in [p.expect(DISPOSITION)])
    finally:
        p.close()
    assert _depth(limited.url, "many-q") == 1


def test_management_requests_are_bounded_more_tightly(limited: BrokerProcess) -> None:
    conn = BlockingConnection(limited.url, timeout=T)
    try:
        rr = SyncRequestResponse(conn, "$management")
        props = {"operation": "QUERY", "type": "queue"}
        reply = rr.call(Message(properties=props, body="x" * (LIMIT - 500)))
        assert reply.properties["statusCode"] == 400  # read whole: a string is no request
        with pytest.raises(LinkDetached) as info:
            rr.call(Message(properties=props, body="x" * (LIMIT + 1)))
        assert info.value.link.remote_condition.name == SIZE_EXCEEDED
    finally:
        conn.close()
    _served(limited)
