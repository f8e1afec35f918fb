"""Resource limits of a real qstored (#11): connections, message size (whole and as its
transfers arrive), sessions, links, temporary queues, the open deadline, and the read side (a
frame header announcing hundreds of MiB is refused without buffering them).

Most tests share one broker with small limits (`limited`); each uses its own queue names. Raw
frames (tests/amqp_raw.py) say what no proton client would; stock proton clients show what a
client sees of a refusal.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from amqp_raw import (
    ACCEPTED,
    ATTACH,
    BEGIN,
    CLOSE,
    DETACH,
    DISPOSITION,
    OPEN,
    SENDER,
    RawPeer,
    attach_frame,
)
from amqp_raw import frame as raw_frame
from broker_harness import BrokerProcess, Brokers
from proton import ConnectionException, Message, symbol, uint
from proton.utils import BlockingConnection, LinkDetached, SyncRequestResponse
from security_support import wait_for_log

from qstore.sasl.frames import Init, encode_frame

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


def _closed_at_once(port: int) -> bool:
    """A new socket is closed by the broker without a word."""
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=T)) as s:
        s.settimeout(T)
        return s.recv(1) == b""


def _still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False


def _connect_until_served(url: str) -> BlockingConnection:
    """Retries only a refusal (the broker closing the socket: proton's "disconnected"); any
    other error fails the test at once."""
    deadline = time.monotonic() + T
    while True:
        try:
            return BlockingConnection(url, timeout=T)
        except ConnectionException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_max_connections_refuses_the_next_socket_and_recovers(brokers: Brokers) -> None:
    b = brokers.start(args=["--auto-create", "yes", "--max-connections", "3"])
    held = [BlockingConnection(b.url, timeout=T) for _ in range(3)]  # opened: never dropped
    try:
        assert _closed_at_once(b.port)
        time.sleep(1.2)  # past the grace: an opened connection is still never dropped
        assert _closed_at_once(b.port)
        line = wait_for_log(b, "at --max-connections: 3 sockets, 3 connections open")
        assert "WARNING" in line
        assert b.log().count("at --max-connections: ") == 1  # once per spell, not per socket
        for conn in held:  # the held connections were not disturbed
            conn.create_sender("q").send(Message(body="held", durable=True))
    finally:
        for conn in held:
            conn.close()
    conn = _connect_until_served(b.url)  # the held connections gone, a client is served again
    try:
        conn.create_sender("q2").send(Message(body="after", durable=True))
        assert conn.create_receiver("q2").receive(timeout=T).body == "after"
    finally:
        conn.close()
    line = wait_for_log(b, "accepting connections again")
    assert "(2 refused, 0 unopened sockets dropped for newer ones meanwhile)" in line


def test_idle_sockets_give_their_slots_to_a_client(brokers: Brokers) -> None:
    """Sockets that never open fill --max-connections; they are closed only at --open-timeout
    (60 s here), but a client arriving after the first has waited past the grace (1 s) takes
    its slot, and the next one the next oldest's."""
    b = brokers.start(
        args=["--auto-create", "yes", "--max-connections", "5", "--open-timeout", "60"]
    )
    idle = [socket.create_connection(("127.0.0.1", b.port), timeout=T) for _ in range(5)]
    try:
        assert _closed_at_once(b.port)  # the idle ones are young: the newcomer is refused
        time.sleep(1.2)
        t0 = time.monotonic()
        clients = [BlockingConnection(b.url, timeout=T)]  # the oldest idle socket makes room
        clients.append(BlockingConnection(b.url, timeout=T))  # and the next oldest
        try:
            assert time.monotonic() - t0 < 5.0
            for i, c in enumerate(clients):
                c.create_sender("limits-idle").send(Message(body=f"m{i}", durable=True))
        finally:
            for c in clients:
                c.close()
        for s in idle[:2]:
            s.settimeout(T)
            assert s.recv(1) == b""
        assert all(_still_open(s) for s in idle[2:])  # only as many as needed were dropped
    finally:
        for s in idle:
            s.close()
    line = wait_for_log(b, "dropped before its AMQP open for a newer socket")
    assert "INFO" in line
    assert b.log().count("at --max-connections: ") == 1
    assert "first peer=127.0.0.1:" in wait_for_log(b, "at --max-connections: 5 sockets")


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
        p.transfer(0, 0, chunk, more=True)
        sent = len(chunk)
        while sent <= LIMIT:  # up to one chunk past the limit, and the message never ends
            p.transfer(0, None, chunk, more=True)
            sent += len(chunk)
        # counted as it came, not at the end: the refusal comes although the message is unfinished
        detach = p.expect(DETACH)
        assert detach.error() is not None and detach.error()[0] == SIZE_EXCEEDED, p.frames
        assert "or more bytes" in detach.error()[1]
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
        p.transfer(2, 2, part, more=True)
        # the broker reads the frames in order: had links 0 or 1 been ended by their own parts,
        # their detach would come first
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


# -- sessions, links, temporary queues -------------------------------------------------------------


def test_sessions_past_channel_max_close_the_connection(limited: BrokerProcess) -> None:
    p = RawPeer(limited.port)
    try:
        opened = p.open()
        assert int(opened.fields[3]) == SESSIONS - 1  # channel-max in the broker's open
        for ch in range(SESSIONS):
            p.begin(ch)
        p.send(raw_frame(SESSIONS, BEGIN, [None, uint(0), uint(2048), uint(2048)]))
        close = p.expect(CLOSE)
        assert close.error() is not None and close.error()[0] == FRAMING_ERROR, p.frames
        p.wait_eof()
    finally:
        p.close()
    _served(limited)


def test_a_begin_on_a_channel_in_use_at_the_limit_closes_the_connection(
    limited: BrokerProcess,
) -> None:
    """Proton takes a second begin on a live channel silently (a new session; the first is
    orphaned). Below the limit that is invisible; past it, it is the only explanation."""
    p = RawPeer(limited.port)
    try:
        p.open()
        for ch in range(SESSIONS):
            p.begin(ch)
        p.send(raw_frame(0, BEGIN, [None, uint(0), uint(2048), uint(2048)]))  # channel 0 again
        close = p.expect(CLOSE)
        assert close.error() is not None and close.error()[0] == "amqp:not-allowed", p.frames
        assert "already in use" in close.error()[1]
        p.wait_eof()
    finally:
        p.close()
    _served(limited)


def test_links_past_the_limit_are_refused_and_the_session_goes_on(
    limited: BrokerProcess,
) -> None:
    conn = BlockingConnection(limited.url, timeout=T)
    try:
        receivers = [conn.create_receiver(f"links-q{i}") for i in range(LINKS)]
        with pytest.raises(LinkDetached) as info:
            conn.create_receiver("links-extra")
        cond = info.value.link.remote_condition
        assert cond.name == RESOURCE_LIMIT and "--max-links-per-session" in cond.description
        receivers.pop().close()  # one fewer: the next attach is taken
        snd = conn.create_sender("links-q0")
        snd.send(Message(body="still served", durable=True))
        assert receivers[0].receive(timeout=T).body == "still served"
        receivers[0].accept()
    finally:
        conn.close()
    line = wait_for_log(limited, "--max-links-per-session")
    assert "WARNING" in line


def test_a_peer_that_keeps_refused_links_attached_is_closed(limited: BrokerProcess) -> None:
    """Refused links count until the peer detaches them; at twice the limit the connection
    goes. Reusing one live handle for every attach (which proton takes silently) is bounded
    the same way."""
    p = RawPeer(limited.port)
    try:
        p.open()
        p.begin()
        for i in range(2 * LINKS):
            p.attach(f"keep-{i}", 0, SENDER, "keep-q")  # handle 0 every time
        p.attach("one-too-many", 0, SENDER, "keep-q")
        close = p.expect(CLOSE)
        assert close.error() is not None and close.error()[0] == RESOURCE_LIMIT, p.frames
        refused = [f for f in p.frames if f.code == DETACH and f.error()]
        assert len(refused) == LINKS, p.frames
        p.wait_eof()
    finally:
        p.close()
    _served(limited)


def test_temporary_queues_per_connection_are_bounded(limited: BrokerProcess) -> None:
    conn = BlockingConnection(limited.url, timeout=T)
    other = BlockingConnection(limited.url, timeout=T)
    try:
        for _ in range(TEMPORARY):
            conn.create_receiver(None, dynamic=True)
        with pytest.raises(LinkDetached) as info:
            conn.create_receiver(None, dynamic=True)
        cond = info.value.link.remote_condition
        assert cond.name == RESOURCE_LIMIT and "--max-temporary-queues" in cond.description
        other.create_receiver(None, dynamic=True)  # another connection has its own budget
    finally:
        conn.close()
        other.close()


# -- the open deadline -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first_bytes",
    [b"", AMQP_HEADER, SASL_HEADER, AMQP_HEADER + b"\0\0\0\x40"],
    ids=["nothing", "amqp-header", "sasl-header", "half-a-frame"],
)
def test_a_socket_that_does_not_open_in_time_is_closed(
    limited: BrokerProcess, first_bytes: bytes
) -> None:
    s = socket.create_connection(("127.0.0.1", limited.port), timeout=T)
    try:
        port = s.getsockname()[1]
        t0 = time.monotonic()
        s.sendall(first_bytes)
        with contextlib.suppress(ConnectionResetError):
            while s.recv(65536):
                pass
        took = time.monotonic() - t0
    finally:
        s.close()
    assert 0.8 < took < 1 + 5 + 2, took  # the deadline, then at most the close timeout
    if first_bytes:  # a port probe that never said a word closes quietly
        line = wait_for_log(limited, f"127.0.0.1:{port}: no AMQP open within 1.0 s")
        assert "WARNING" in line
    _served(limited)


# -- the read side ---------------------------------------------------------------------------------


def _flood_after(port: int, first: bytes, extra: int) -> tuple[bytes, int]:
    """Send `first`, then up to `extra` bytes as fast as the broker takes them; return what the
    broker said until it closed, and how much of `extra` it took before."""
    s = socket.create_connection(("127.0.0.1", port), timeout=T)
    out = b""
    sent = 0
    try:
        s.sendall(first)
        s.setblocking(False)
        chunk = b"\0" * 65536
        deadline = time.monotonic() + 20
        closed = False
        while not closed and time.monotonic() < deadline:
            if sent < extra:
                with contextlib.suppress(BlockingIOError):
                    sent += s.send(chunk)
            try:
                got = s.recv(65536)
                if not got:
                    closed = True
                out += got
            except BlockingIOError:
                if sent >= extra:
                    time.sleep(0.01)
            except (ConnectionResetError, BrokenPipeError):
                closed = True
        assert closed, f"the broker kept the connection open: {out!r}"
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return out, sent


@pytest.mark.parametrize(
    "first",
    [
        AMQP_HEADER + bytes(RawPeer.hello()) + struct.pack(">IBBH", 300 << 20, 2, 0, 0),
        SASL_HEADER + struct.pack(">IBBH", 300 << 20, 2, 1, 0),
    ],
    ids=["amqp-frame", "sasl-frame"],
)
def test_a_frame_header_announcing_300_mib_is_refused_without_buffering(
    limited: BrokerProcess, first: bytes
) -> None:
    rss0 = _rss_kib(limited.pid)
    out, sent = _flood_after(limited.port, first, 64 << 20)
    grew = _rss_kib(limited.pid) - rss0
    assert grew < 16 << 10, f"broker RSS grew by {grew} KiB after {sent} bytes"
    if first.startswith(AMQP_HEADER):
        assert FRAMING_ERROR.encode() in out, out[:300]
    else:
        assert out.startswith(SASL_HEADER), out[:300]
        line = wait_for_log(limited, f"SASL frame of {300 << 20} bytes exceeds the limit")
        assert "WARNING" in line
    _served(limited)


def test_broker_says_open_within_the_deadline(limited: BrokerProcess) -> None:
    """The raw peer's open is answered (the deadline is for peers that do not open)."""
    p = RawPeer(limited.port)
    try:
        assert p.open().code == OPEN
        time.sleep(1.5)  # past the open deadline: an open connection stays
        p.begin()
    finally:
        p.close()


def test_what_follows_the_sasl_exchange_in_the_same_read_is_all_taken(
    limited: BrokerProcess,
) -> None:
    """A client that pipelines its SASL init, the AMQP header, open, begin and an attach with
    30 KB of link properties into one write. The SASL layer is fed what the engine could take
    (its first input buffer is 8 KiB), so what follows the outcome fits the engine: no byte is
    dropped, none is buffered beyond it."""
    attach = attach_frame("pipelined", 0, SENDER, "pipe-q")
    fields = [*RawPeer.decode(attach).fields, None, None, {symbol("big"): "b" * 30_000}]
    stream = SASL_HEADER + encode_frame(Init("ANONYMOUS", b"")) + AMQP_HEADER + RawPeer.hello()
    stream += RawPeer.begin_frame() + raw_frame(0, ATTACH, fields)
    assert 30_000 < len(stream) < 60_000  # one read (64 KiB) of the broker's
    p = RawPeer(limited.port)
    try:
        p.send(stream)
        assert p.expect(ATTACH).fields[0] == "pipelined", p.frames
        p.transfer(0, 0, bytes(Message(body="after", durable=True).encode()))
        d = p.expect(DISPOSITION)
        assert int(d.fields[4].descriptor) == ACCEPTED, p.frames
    finally:
        p.close()
