"""Well-framed but wrong conversations, and malformed `$management` requests, against a real
broker: each ends that link, session or connection with an AMQP error (or, for management, an
error status), never amqp:internal-error; the broker log has no traceback; and a good client on
another connection is served throughout (`GoodClient` from test_broker_malformed).

The wrong frames are hand-made (tests/amqp_raw.py: proton's `Data` encodes the performatives) so
that the test can say what no proton `Transport` would. Most conditions are proton's engine's
(it checks handles and channels before the broker sees an event): a connection error in each
case, `amqp:invalid-field` for unknown handles and duplicate link names, `amqp:not-allowed` for
frames on a channel never begun, `amqp:connection:framing-error` past channel-max. The broker's
own: `amqp:not-allowed` for a transfer on a link where the broker sends (proton would file it
as a delivery of the broker's sending link), `amqp:link:message-size-exceeded` for a management
request over its bound, `amqp:decode-error` for fields proton keeps unread (a container-id, link
name or address that is not UTF-8, open properties that are no map or cannot be read): the
connection for an open or a link name, only that link for an address.

Two wrong conversations proton takes silently and the broker cannot see: an attach that reuses
a live handle (proton maps the handle to the new link and orphans the old one) and a begin on a
channel in use (likewise for the session). Proton 0.40 exposes neither a link's remote handle
nor a session's remote channel, and finding them ourselves means walking every incoming frame
header in Python (about 0.3 us a frame, on every transfer). Both are bounded instead by the
counted limits (tests/test_broker_limits.py): orphans count against --max-links-per-session and
--max-sessions, and the channel reuse is caught outright once the sessions pass the limit.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from amqp_raw import (
    ACCEPTED,
    AMQP_HEADER,
    ATTACH,
    BEGIN,
    CLOSE,
    DETACH,
    DISPOSITION,
    END,
    FLOW,
    OPEN,
    RECEIVER,
    SENDER,
    TRANSFER,
    Raw,
    RawPeer,
)
from amqp_raw import frame as raw_frame
from broker_clients import drain
from broker_harness import BrokerProcess, Brokers
from proton import Described, Message, char, symbol, ubyte, uint, ulong, ushort
from proton.utils import BlockingConnection, LinkDetached, SyncRequestResponse
from test_broker_malformed import GoodClient, _after

from qstore.ha import REPLICATION

VALID = bytes(Message(body="ok").encode())
REJECTED = 0x25


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    bs = Brokers(tmp_path_factory.mktemp("conversations"))
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


def _no_traceback(broker: BrokerProcess) -> None:
    log = broker.log()
    assert "Traceback" not in log and "internal-error" not in log, log[-3000:]


def _transfer_unattached(p: RawPeer) -> None:
    p.begin()
    p.transfer(7, 0, VALID)


def _flow_unknown_link(p: RawPeer) -> None:
    p.begin()
    p.flow(9, 10)


def _detach_unattached(p: RawPeer) -> None:
    p.begin()
    p.send(raw_frame(0, DETACH, [uint(5), True]))


def _two_links_one_name(p: RawPeer) -> None:
    p.begin()
    p.attach("dup", 0, SENDER, "conv-q")
    p.expect(ATTACH)
    p.attach("dup", 1, SENDER, "conv-q")


def _two_receivers_one_name(p: RawPeer) -> None:
    p.begin()
    p.attach("dup", 0, RECEIVER, "conv-q")
    p.expect(ATTACH)
    p.attach("dup", 1, RECEIVER, "conv-q")


def _begin_past_channel_max(p: RawPeer) -> None:
    p.send(raw_frame(65535, BEGIN, [None, uint(0), uint(2048), uint(2048)]))


def _attach_without_begin(p: RawPeer) -> None:
    p.attach("x", 0, SENDER, "conv-q", channel=4)


def _end_without_begin(p: RawPeer) -> None:
    p.send(raw_frame(3, END, []))


def _begin_answering_nothing(p: RawPeer) -> None:
    p.send(raw_frame(0, BEGIN, [ushort(77), uint(0), uint(2048), uint(2048)]))


CLOSING: dict[str, tuple[Callable[[RawPeer], None], str]] = {
    "transfer-on-a-handle-never-attached": (_transfer_unattached, "amqp:invalid-field"),
    "flow-for-an-unknown-link": (_flow_unknown_link, "amqp:invalid-field"),
    "detach-of-a-handle-not-attached": (_detach_unattached, "amqp:invalid-field"),
    "two-senders-with-one-name": (_two_links_one_name, "amqp:invalid-field"),
    "two-receivers-with-one-name": (_two_receivers_one_name, "amqp:invalid-field"),
    "begin-past-channel-max": (_begin_past_channel_max, "amqp:connection:framing-error"),
    "attach-on-a-channel-never-begun": (_attach_without_begin, "amqp:not-allowed"),
    "end-of-a-channel-never-begun": (_end_without_begin, "amqp:not-allowed"),
    "begin-answering-an-unknown-channel": (_begin_answering_nothing, "amqp:invalid-field"),
}


@pytest.mark.parametrize("name", list(CLOSING))
def test_wrong_conversation_closes_the_connection(
    broker: BrokerProcess, good: GoodClient, name: str
) -> None:
    wrong, condition = CLOSING[name]
    p = RawPeer(broker.port)
    try:
        p.open()
        wrong(p)
        close = p.expect(0x18)  # close
        assert close.error() is not None and close.error()[0] == condition, p.frames
        p.wait_eof()
    finally:
        p.close()
    _after(broker, good, p.addr)
    _no_traceback(broker)


def test_disposition_for_unknown_deliveries_changes_nothing(
    broker: BrokerProcess, good: GoodClient
) -> None:
    """Outcomes for deliveries that never were (either role): ignored; the link goes on."""
    p = RawPeer(broker.port)
    try:
        p.open()
        p.begin()
        p.attach("s", 0, SENDER, "conv-d")
        p.expect(ATTACH)
        accepted = Described(ulong(ACCEPTED), [])
        p.send(raw_frame(0, DISPOSITION, [RECEIVER, uint(5), uint(9), True, accepted]))
        p.send(raw_frame(0, DISPOSITION, [SENDER, uint(0), uint(1000), True, accepted]))
        p.transfer(0, 0, VALID)
        d = p.expect(DISPOSITION)
        assert d.fields[1] == 0 and int(d.fields[4].descriptor) == ACCEPTED, p.frames
        assert not any(f.error() for f in p.frames), p.frames
    finally:
        p.close()
    good.roundtrip()
    c = BlockingConnection(broker.url, timeout=10)  # exactly the one message went in
    try:
        r = c.create_receiver("conv-d")
        assert r.receive(timeout=10).body == "ok"
        r.accept()
    finally:
        c.close()
    _no_traceback(broker)


# -- $management ------------------------------------------------------------------------------


MGMT: dict[str, tuple[dict[str, Any] | None, Any, int]] = {
    # name: (application properties, body, status)
    "no-properties": (None, {}, 501),
    "no-operation": ({"type": "queue", "name": "m"}, {}, 501),
    "no-type": ({"operation": "READ", "name": "m"}, {}, 501),
    "operation-an-int": ({"operation": 5, "type": "queue"}, {}, 400),
    "operation-a-list": ({"operation": [1], "type": "queue"}, {}, 400),
    "operation-binary": ({"operation": b"\xff", "type": "queue"}, {}, 400),
    "operation-a-char": ({"operation": char("R"), "type": "queue"}, {}, 501),
    "type-a-map": ({"operation": "READ", "type": {"a": 1}}, {}, 400),
    "name-an-int": ({"operation": "READ", "type": "queue", "name": 5}, {}, 400),
    "name-a-list": ({"operation": "CREATE", "type": "queue", "name": [1, 2]}, {}, 400),
    "name-too-long": ({"operation": "CREATE", "type": "queue", "name": "n" * 70000}, {}, 400),
    "body-a-string": ({"operation": "CREATE", "type": "queue", "name": "m1"}, "x", 400),
    "body-a-list": ({"operation": "CREATE", "type": "queue", "name": "m2"}, [1], 400),
    "body-described": (
        {"operation": "CREATE", "type": "queue", "name": "m3"},
        Described(ulong(5), {"a": 1}),
        400,
    ),
    "arguments-a-string": (
        {"operation": "CREATE", "type": "queue", "name": "m4"},
        {"arguments": "x"},
        400,
    ),
    "arguments-wrong-values": (
        {"operation": "CREATE", "type": "queue", "name": "m5"},
        {"arguments": {"qpid.max_count": "lots"}},
        400,
    ),
    "exchange-type-a-list": (
        {"operation": "CREATE", "type": "exchange", "name": "mx"},
        {"type": [1]},
        400,
    ),
    "binding-fields-wrong": (
        {"operation": "CREATE", "type": "binding"},
        {"exchange": 5, "queue": [1], "key": {"a": 1}, "arguments": "x"},
        400,
    ),
    "large-string-body": ({"operation": "QUERY", "type": "queue"}, "x" * 500_000, 400),
    "large-map-body": (
        {"operation": "CREATE", "type": "queue", "name": "m6"},
        {"arguments": "x", **{f"k{i}": "v" * 100 for i in range(5000)}},
        400,
    ),
    "symbols-are-strings": ({"operation": symbol("QUERY"), "type": symbol("queue")}, {}, 200),
}


def test_malformed_management_requests_get_an_error_status(
    broker: BrokerProcess, good: GoodClient
) -> None:
    conn = BlockingConnection(broker.url, timeout=15)
    try:
        rr = SyncRequestResponse(conn, "$management")
        got = {}
        for name, (props, body, _) in MGMT.items():
            reply = rr.call(Message(properties=props, body=body))
            p = reply.properties or {}
            got[name] = (p.get("statusCode"), p.get("statusDescription"))
            assert "\n" not in str(p.get("statusDescription")), name
        assert {n: code for n, (code, _) in got.items()} == {
            n: status for n, (_, _, status) in MGMT.items()
        }, got
    finally:
        conn.close()
    c = BlockingConnection(broker.url, timeout=10)  # nothing wrongly made was created
    try:
        reply = SyncRequestResponse(c, "$management").call(
            Message(properties={"operation": "QUERY", "type": "queue"}, body={})
        )
    finally:
        c.close()
    names = {q["name"] for q in reply.body}
    assert not names & {"m1", "m2", "m3", "m4", "m5", "m6", "[1, 2]", "5"}, names
    good.roundtrip()
    _no_traceback(broker)


HUGE: dict[str, tuple[dict[str, Any], Any]] = {
    "huge-string-body": ({"operation": "QUERY", "type": "queue"}, "x" * 4_000_000),
    "huge-map-body": (
        {"operation": "CREATE", "type": "queue", "name": "m7"},
        {"arguments": "x", **{f"k{i}": "v" * 100 for i in range(20000)}},
    ),
}


@pytest.mark.parametrize("name", list(HUGE))
def test_a_huge_management_request_ends_its_link(
    broker: BrokerProcess, good: GoodClient, name: str
) -> None:
    """Over the management bound (1 MiB): refused as it arrives, never decoded whole."""
    props, body = HUGE[name]
    conn = BlockingConnection(broker.url, timeout=15)
    try:
        with pytest.raises(LinkDetached) as info:
            SyncRequestResponse(conn, "$management").call(Message(properties=props, body=body))
        cond = info.value.link.remote_condition
        assert cond.name == "amqp:link:message-size-exceeded", cond
        assert "(of a management request)" in cond.description
    finally:
        conn.close()
    good.roundtrip()
    _no_traceback(broker)


def test_transfer_on_a_link_where_the_broker_sends_closes_the_connection(
    broker: BrokerProcess, good: GoodClient
) -> None:
    """A receiver that sends: proton would make it a delivery of the broker's own sending link
    (the next message to the client would be written into it), so the connection goes; the
    message is not taken, and messages the link held go back to the queue."""
    c = BlockingConnection(broker.url, timeout=10)
    try:
        c.create_sender("conv-w").send(Message(body="held", durable=True))
    finally:
        c.close()
    p = RawPeer(broker.port)
    try:
        p.open()
        p.begin()
        p.attach("r", 0, RECEIVER, "conv-w")
        p.expect(ATTACH)
        p.flow(0, 10)
        p.expect(TRANSFER)  # "held" is out to us, unsettled
        p.transfer(0, 0, VALID)  # on our receiving link
        close = p.expect(CLOSE)
        assert close.error() is not None and close.error()[0] == "amqp:not-allowed", p.frames
        assert "where the broker is the sender" in close.error()[1]
        p.transfer(0, 1, VALID * 100)  # what comes after our close is not looked at
        p.wait_eof()
    finally:
        p.close()
    _after(broker, good, p.addr)
    c = BlockingConnection(broker.url, timeout=10)
    try:
        r = c.create_receiver("conv-w")
        assert r.receive(timeout=10).body == "held"  # back on the queue, nothing else
        r.accept()
        assert [m.body for m in drain(r)] == []  # the broker's word: nothing else
    finally:
        c.close()
    said = [line for line in broker.log().splitlines() if "where the broker is" in line]
    said = [line for line in said if f"peer={p.addr}" in line]
    assert ["WARNING" in line for line in said] == [True, False], said  # ours, the pump's
    _no_traceback(broker)


def test_transfer_on_a_refused_link_where_the_broker_sends_closes_the_connection(
    broker: BrokerProcess, good: GoodClient
) -> None:
    """Likewise on a sending link the broker has refused (and so no longer serves)."""
    p = RawPeer(broker.port)
    try:
        p.open()
        p.begin()
        p.attach("r", 0, RECEIVER, REPLICATION)  # not a cluster broker: refused
        assert p.expect(DETACH).error()[0] == "amqp:not-allowed", p.frames
        p.transfer(0, 0, VALID)
        close = p.expect(CLOSE)
        assert close.error() is not None and close.error()[0] == "amqp:not-allowed", p.frames
        assert "where the broker is the sender" in close.error()[1]
        p.wait_eof()
    finally:
        p.close()
    _after(broker, good, p.addr)
    _no_traceback(broker)


def test_an_aborted_transfer_is_forgotten_and_the_link_goes_on(
    broker: BrokerProcess, good: GoodClient
) -> None:
    p = RawPeer(broker.port)
    try:
        p.open()
        p.begin()
        p.attach("s", 0, SENDER, "conv-a")
        p.expect(ATTACH)
        p.transfer(0, 0, VALID[:10], more=True)
        p.transfer(0, None, b"", aborted=True)  # the sender gives up on it (AMQP 2.6.12)
        p.transfer(0, 1, VALID)
        d = p.expect(DISPOSITION)
        assert d.fields[1] == 1 and int(d.fields[4].descriptor) == ACCEPTED, p.frames
        assert not any(f.error() for f in p.frames), p.frames
    finally:
        p.close()
    c = BlockingConnection(broker.url, timeout=10)
    try:
        r = c.create_receiver("conv-a")
        assert r.receive(timeout=10).body == "ok"
        r.accept()
        assert [m.body for m in drain(r)] == []  # the broker's word: nothing else
    finally:
        c.close()
    _no_traceback(broker)


def test_a_detach_without_close_ends_the_link(broker: BrokerProcess, good: GoodClient) -> None:
    """The broker does not resume links: a suspended link (detach, closed false) is ended, and
    its consumer with it, so the queue's messages go to whoever else consumes."""
    p = RawPeer(broker.port)
    try:
        p.open()
        p.begin()
        p.attach("r", 0, RECEIVER, "conv-s")
        p.expect(ATTACH)
        p.flow(0, 10)
        p.send(raw_frame(0, DETACH, [uint(0), False]))
        assert p.expect(DETACH).error() is None, p.frames
        c = BlockingConnection(broker.url, timeout=10)
        try:
            c.create_sender("conv-s").send(Message(body="to the other", durable=True))
            r = c.create_receiver("conv-s")
            assert r.receive(timeout=10).body == "to the other"
            r.accept()
        finally:
            c.close()
        # a round trip on our connection, not a silence: a transfer sent to the ended link
        # (when the message was routed, before the other took it) comes before this attach's
        p.attach("r2", 1, RECEIVER, "conv-s")  # no credit: nothing is sent to it
        p.expect(ATTACH)
        assert not any(f.code == TRANSFER for f in p.frames), p.frames
    finally:
        p.close()
    _no_traceback(broker)


# -- fields proton keeps without looking at them (found by tests/test_pump_fuzz.py) -----------

NOT_UTF8 = Raw(b"\xa1\x03ab\xff")  # a str8 that is not UTF-8


def _nested_lists(depth: int) -> Raw:
    out = b"\x45"
    for _ in range(depth):
        out = b"\xd0" + struct.pack(">II", len(out) + 4, 1) + out
    return Raw(out)


ILL_FORMED_OPENS: dict[str, list[Any]] = {
    # open: container-id, hostname, max-frame-size, channel-max, ..., properties (the 10th)
    "container-id-not-utf8": [NOT_UTF8],
    "properties-not-a-map": ["c", *[None] * 8, "props"],
    "property-key-not-utf8": ["c", *[None] * 8, Raw(b"\xc1\x07\x02" + NOT_UTF8 + b"\x40")],
    "property-a-char-past-unicode": ["c", *[None] * 8, Raw(b"\xc1\x09\x02\xa1\x01k\x73\0\x11\0\0")],
    "property-a-char-past-a-c-int": ["c", *[None] * 8, Raw(b"\xc1\x09\x02\xa1\x01k\x73\xff\0\0\0")],
    "property-nested-2000-deep": ["c", *[None] * 8, {"k": _nested_lists(2000)}],
}


@pytest.mark.parametrize("name", list(ILL_FORMED_OPENS))
def test_an_ill_formed_open_is_a_decode_error(
    broker: BrokerProcess, good: GoodClient, name: str
) -> None:
    """These were amqp:internal-error, with a traceback (proton's Python binding raised)."""
    p = RawPeer(broker.port)
    try:
        p.send(AMQP_HEADER, raw_frame(0, OPEN, ILL_FORMED_OPENS[name]))
        close = p.expect(CLOSE)
        assert close.error() is not None and close.error()[0] == "amqp:decode-error", p.frames
        assert "the open's" in close.error()[1], close.error()
        p.wait_eof()
    finally:
        p.close()
    _after(broker, good, p.addr)
    _no_traceback(broker)


def test_a_link_name_not_utf8_is_a_decode_error(broker: BrokerProcess, good: GoodClient) -> None:
    p = RawPeer(broker.port)
    try:
        p.open()
        p.begin()
        fields = [NOT_UTF8, uint(0), SENDER, ubyte(0), ubyte(0)]
        fields += [Described(ulong(0x28), [None]), Described(ulong(0x29), ["conv-n"])]
        p.send(raw_frame(0, ATTACH, [*fields, None, None, uint(0)]))
        close = p.expect(CLOSE)
        assert close.error() == ("amqp:decode-error", "attach: a link name is not valid UTF-8")
        p.wait_eof()
    finally:
        p.close()
    _after(broker, good, p.addr)
    _no_traceback(broker)


@pytest.mark.parametrize("role", [SENDER, RECEIVER])
def test_an_address_not_utf8_refuses_only_that_link(
    broker: BrokerProcess, good: GoodClient, role: bool
) -> None:
    """The link is refused with amqp:decode-error; the session and the connection go on."""
    p = RawPeer(broker.port)
    try:
        p.open()
        p.begin()
        src, tgt = (None, NOT_UTF8) if role == SENDER else (NOT_UTF8, None)
        fields = ["bad", uint(0), role, ubyte(0), ubyte(0)]
        fields += [Described(ulong(0x28), [src]), Described(ulong(0x29), [tgt])]
        p.send(raw_frame(0, ATTACH, [*fields, None, None, uint(0)]))
        detach = p.expect(DETACH)
        assert detach.error() is not None and detach.error()[0] == "amqp:decode-error", p.frames
        assert "address is not valid UTF-8" in detach.error()[1]
        p.send(raw_frame(0, DETACH, [uint(0), True]))
        p.attach("good", 1, SENDER, "conv-u")
        p.expect(ATTACH)
        p.transfer(1, 0, VALID)
        d = p.expect(DISPOSITION)
        assert int(d.fields[4].descriptor) == ACCEPTED, p.frames
        assert not any(f.code == CLOSE for f in p.frames), p.frames
    finally:
        p.close()
    c = BlockingConnection(broker.url, timeout=10)
    try:
        r = c.create_receiver("conv-u")
        assert r.receive(timeout=10).body == "ok"
        r.accept()
    finally:
        c.close()
    good.roundtrip()
    _no_traceback(broker)


@pytest.mark.parametrize("address", ["conv-t", "$management"])
def test_a_sender_past_its_credit_ends_only_that_link(
    broker: BrokerProcess, good: GoodClient, address: str
) -> None:
    """Found by tests/test_pump_fuzz.py: a flow moving the sender's delivery-count far past the
    credit it was given took proton's link-credit below zero, and granting credit back then
    overflowed proton's int (amqp:internal-error, a traceback). Now the link ends with
    amqp:link:transfer-limit-exceeded and the session goes on. The message that came is routed
    (credit is looked at after routing, for flow control); a management request is refused."""
    p = RawPeer(broker.port)
    try:
        p.open()
        p.begin()
        p.attach("s", 0, SENDER, address)
        p.expect(ATTACH)
        p.expect(FLOW)
        p.flow(0, 1000, count=2**31 - 1)  # "I have sent 2^31 - 1 messages"
        p.transfer(0, 0, VALID)
        detach = p.expect(DETACH)
        assert detach.error() is not None, p.frames
        assert detach.error()[0] == "amqp:link:transfer-limit-exceeded", p.frames
        p.send(raw_frame(0, DETACH, [uint(0), True]))
        p.attach("s2", 1, SENDER, "conv-t")
        p.expect(ATTACH)
        p.transfer(1, 1, VALID)
        while (d := p.expect(DISPOSITION)).fields[1] != 1:
            if address == "$management":  # delivery 0: the request is refused
                assert int(d.fields[4].descriptor) == REJECTED, p.frames
        assert int(d.fields[4].descriptor) == ACCEPTED, p.frames
        assert not any(f.code == CLOSE for f in p.frames), p.frames
    finally:
        p.close()
    c = BlockingConnection(broker.url, timeout=10)
    try:
        r = c.create_receiver("conv-t")
        for _ in range(1 if address == "$management" else 2):
            assert r.receive(timeout=10).body == "ok"
            r.accept()
        assert [m.body for m in drain(r)] == []  # the broker's word: nothing else
    finally:
        c.close()
    good.roundtrip()
    _no_traceback(broker)


def test_a_source_holding_text_that_is_not_utf8_is_echoed_and_served(
    broker: BrokerProcess, good: GoodClient
) -> None:
    """Found by tests/test_pump_fuzz.py: the broker's attach echoes the receiver's source
    (here dynamic-node-properties holding a string that is not UTF-8), and reading that attach
    back to learn the link's handle (for prefetch-1 flows) failed the pump. Now the link is
    served with credit 1 like any other."""
    p = RawPeer(broker.port)
    try:
        p.open()
        p.begin()
        source = Described(ulong(0x28), ["conv-e", None, None, None, None, {"k": NOT_UTF8}])
        fields = ["r", uint(0), RECEIVER, ubyte(0), ubyte(0), source, Described(ulong(0x29), [])]
        p.send(raw_frame(0, ATTACH, fields))
        p.expect(ATTACH)
        p.flow(0, 1)
        c = BlockingConnection(broker.url, timeout=10)
        try:
            c.create_sender("conv-e").send(Message(body="to r", durable=True))
        finally:
            c.close()
        assert p.expect(TRANSFER).fields[0] == 0, p.frames
        assert not any(f.code == CLOSE for f in p.frames), p.frames
    finally:
        p.close()
    _after(broker, good, p.addr)
    _no_traceback(broker)


def test_a_link_name_with_a_nul_then_not_utf8_is_served(
    broker: BrokerProcess, good: GoodClient
) -> None:
    """Found by tests/test_pump_fuzz.py: proton's Python shows a link name only up to a NUL
    (here "" of "\\x00\\xff"), so the name passes for text; our attach echoes it whole, and
    reading that back (for prefetch-1 flows) failed the pump. The link is served."""
    p = RawPeer(broker.port)
    try:
        p.open()
        p.begin()
        source = Described(ulong(0x28), ["conv-z"])
        fields = [Raw(b"\xa1\x02\x00\xff"), uint(0), RECEIVER, ubyte(0), ubyte(0), source]
        p.send(raw_frame(0, ATTACH, [*fields, Described(ulong(0x29), [])]))
        p.expect(ATTACH)
        p.flow(0, 1)
        c = BlockingConnection(broker.url, timeout=10)
        try:
            c.create_sender("conv-z").send(Message(body="to z", durable=True))
        finally:
            c.close()
        assert p.expect(TRANSFER).fields[0] == 0, p.frames
        assert not any(f.code == CLOSE for f in p.frames), p.frames
    finally:
        p.close()
    _after(broker, good, p.addr)
    _no_traceback(broker)
