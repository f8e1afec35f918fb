"""broker/amqp/flowframe.py on frames proton itself wrote: two proton engines (a client with a
receiver, a server with the sender) connected in memory, the server's output read by our
functions, rewritten, decoded back by proton's `Data`, and fed to the client's engine, which
must take the link flow as the sender's state and nothing more."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from cproton_ffi import lib
from proton import Collector, Connection, Data, Event, Link, Message, Transport

from broker.amqp import flowframe
from broker.amqp.flowframe import ATTACH, FLOW

FLOW_FIELDS = (
    "next_incoming_id",
    "incoming_window",
    "next_outgoing_id",
    "outgoing_window",
    "handle",
    "delivery_count",
    "link_credit",
    "available",
    "drain",
)


class Pair:
    """A client engine and a server engine; `pump()` moves bytes both ways until both are
    quiet and returns what the server wrote."""

    def __init__(self) -> None:
        self.client, self.server = Connection(), Connection()
        self.ct, self.st = Transport(), Transport(Transport.SERVER)
        self.ct.bind(self.client)
        self.st.bind(self.server)
        self.events = Collector()
        self.client.collect(self.events)

    def pump(self) -> bytes:
        out = b""
        moved = True
        while moved:
            moved = False
            for src, dst in ((self.ct, self.st), (self.st, self.ct)):
                n = src.pending()
                if n > 0:
                    data = src.peek(n)
                    src.pop(n)
                    dst.push(data)
                    moved = True
                    if src is self.st:
                        out += data
        return out

    def server_output(self) -> bytes:
        """The server's output, not yet given to the client."""
        n = self.st.pending()
        data = self.st.peek(n) if n > 0 else b""
        if n > 0:
            self.st.pop(n)
        return data

    def client_events(self) -> list[tuple[Any, Any]]:
        seen = []
        while (ev := self.events.peek()) is not None:
            seen.append((ev.type, ev.context))
            self.events.pop()
        return seen


def decode(frame: bytes) -> tuple[int, int, list[Any]]:
    """(channel, descriptor, fields) of one frame, by proton's codec."""
    d = Data()
    d.decode(frame[4 * frame[4] :])
    d.rewind()
    d.next()
    value = d.get_object()
    return int.from_bytes(frame[6:8], "big"), int(value.descriptor), list(value.value)


def flow_fields(frame: bytes) -> dict[str, Any]:
    channel, code, fields = decode(frame)
    assert code == FLOW
    fields += [None] * (len(FLOW_FIELDS) - len(fields))
    return {"channel": channel, **dict(zip(FLOW_FIELDS, fields, strict=False))}


def attached(sessions: int = 1) -> tuple[Pair, Link, Link, bytes]:
    """A receiver on the client's last session (credit 1), its sender at the server; and what
    the server wrote until then (open, begins, attaches)."""
    p = Pair()
    p.client.open()
    for i in range(sessions):
        ssn = p.client.session()
        ssn.open()
        if i < sessions - 1:  # a link before ours, so that ours has handle 1 on its channel
            other = ssn.receiver(f"other-{i}")
            other.open()
    rcv = ssn.receiver("mine")
    rcv.source.address = "q"
    rcv.open()
    rcv.flow(1)
    p.pump()
    p.server.open()
    ssn_s = p.server.session_head(0)
    while ssn_s:
        ssn_s.open()
        ssn_s = ssn_s.next(0)
    link = p.server.link_head(0)
    snd = None
    while link:
        link.source.copy(link.remote_source)
        link.open()
        if link.name == "mine":
            snd = link
        link = link.next(0)
    assert snd is not None
    out = p.pump()
    p.client_events()
    return p, rcv, snd, out


def send_one(p: Pair, snd: Link, body: str = "m") -> bytes:
    snd.delivery(body.encode())
    snd.send(Message(body=body).encode())
    snd.advance()
    return p.server_output()


def session_flow(p: Pair, snd: Link) -> bytes:
    """Has proton write a session flow (as senderflow.py does) and returns that output."""
    ssn = snd.session._impl
    lib.pn_session_set_incoming_capacity(ssn, lib.pn_session_get_incoming_capacity(ssn))
    return p.server_output()


# -- reading ----------------------------------------------------------------------------------


def test_frames_and_attach_fields_of_proton_output() -> None:
    *_, out = attached(sessions=2)
    found = list(flowframe.frames(out))
    assert [f.code for f in found].count(ATTACH) == 2
    assert found[-1].end == len(out)
    attaches = [(*flowframe.attach_fields(out, f), f.channel) for f in found if f.code == ATTACH]
    # (name, handle, role: False = sender, initial-delivery-count, channel)
    assert ("other-0", 0, False, 0, 0) in attaches
    assert ("mine", 0, False, 0, 1) in attaches


def test_attach_handle_past_the_first() -> None:
    p = Pair()
    p.client.open()
    ssn = p.client.session()
    ssn.open()
    for name in ("a", "b", "c"):
        ssn.receiver(name).open()
    p.pump()
    p.server.open()
    p.server.session_head(0).open()
    link = p.server.link_head(0)
    while link:
        link.open()
        link = link.next(0)
    out = p.pump()
    got = {flowframe.attach_fields(out, f)[:3] for f in flowframe.frames(out) if f.code == ATTACH}
    assert got == {("a", 0, False), ("b", 1, False), ("c", 2, False)}


def test_frames_skip_protocol_headers_and_sasl() -> None:
    """proton's own SASL layer writes its header, SASL frames, then the AMQP header."""
    p = Pair()
    p.st.sasl().allowed_mechs("ANONYMOUS")
    p.ct.sasl().allowed_mechs("ANONYMOUS")
    p.client.open()
    p.client.session().open()
    out = p.pump()
    p.server.open()
    p.server.session_head(0).open()
    out += p.pump()
    assert out.startswith(b"AMQP\x03") and b"AMQP\x00" in out
    codes = [f.code for f in flowframe.frames(out)]
    assert codes[-2:] == [0x10, 0x11]  # open, begin
    assert FLOW not in codes and ATTACH not in codes


def test_a_runt_frame_is_an_error_not_a_loop() -> None:
    with pytest.raises(ValueError):
        list(flowframe.frames(b"\x00\x00\x00\x00\x02\x00\x00\x00"))


# -- the link flow ----------------------------------------------------------------------------


def test_session_flow_rewritten_as_the_senders_link_flow() -> None:
    p, rcv, snd, _ = attached(sessions=2)
    sent = send_one(p, snd)
    assert snd.credit == 0
    proton_flow = session_flow(p, snd)
    [f] = flowframe.frames(proton_flow)
    assert f.code == FLOW and f.channel == 1
    before = flow_fields(proton_flow)
    assert before["handle"] is None and before["next_outgoing_id"] == 1

    out = flowframe.add_link_flows(proton_flow, {1: [(0, 1, False)]})

    after = flow_fields(out)
    for name in FLOW_FIELDS[:4]:  # the session fields are exactly proton's
        assert after[name] == before[name], name
    assert after["channel"] == 1
    assert (after["handle"], after["delivery_count"], after["link_credit"]) == (0, 1, 0)
    assert after["available"] is None and after["drain"] is False
    # The client's engine takes it as the sender's state: an event, its credit unchanged,
    # nothing counted as drained (its delivery-count already was ours), no error.
    p.ct.push(sent + out)
    assert rcv.current is not None
    rcv.recv(rcv.current.pending)
    rcv.advance()
    events = p.client_events()
    assert (Event.LINK_FLOW, rcv) in events
    assert rcv.credit == 0 and rcv.drained() == 0
    assert p.ct.condition is None and p.client.remote_condition is None
    rcv.flow(1)  # what proton's prefetch 1 now does on that event
    p.pump()
    assert snd.credit == 1


def test_large_counts_and_drain() -> None:
    p, _, snd, _ = attached()
    proton_flow = session_flow(p, snd)
    out = flowframe.add_link_flows(proton_flow, {0: [(300, 70000, True), (2, 5, False)]})
    [a, b] = flowframe.frames(out)
    first, second = flow_fields(out[a.start : a.end]), flow_fields(out[b.start : b.end])
    assert (first["handle"], first["delivery_count"], first["drain"]) == (300, 70000, True)
    assert (second["handle"], second["delivery_count"], second["drain"]) == (2, 5, False)
    assert first["next_outgoing_id"] == second["next_outgoing_id"] == 0


def test_a_links_flow_is_kept_and_followed() -> None:
    """When the session's flow came as another link's flow, ours follows it with the same
    session fields. The client's receiver flow has a handle: use it as the example."""
    p = Pair()
    p.client.open()
    ssn = p.client.session()
    ssn.open()
    rcv = ssn.receiver("r")
    rcv.open()
    p.ct.pending()  # open, begin, attach
    p.ct.pop(p.ct.pending())
    rcv.flow(3)
    theirs = p.ct.peek(p.ct.pending())
    before = flow_fields(theirs)
    assert before["handle"] == 0 and before["link_credit"] == 3

    empty = b"\x00\x00\x00\x08\x02\x00\x00\x00"  # a heartbeat before it
    out = flowframe.add_link_flows(empty + theirs, {0: [(4, 9, False)]})

    found = list(flowframe.frames(out))
    assert [f.code for f in found] == [None, FLOW, FLOW]  # the empty frame is kept too
    assert out[: found[2].start] == empty + theirs
    ours = flow_fields(out[found[2].start :])
    for name in FLOW_FIELDS[:4]:
        assert ours[name] == before[name], name
    assert (ours["handle"], ours["delivery_count"], ours["link_credit"]) == (4, 9, 0)


def test_other_channels_and_frames_untouched() -> None:
    p, _, snd, _ = attached()
    data = send_one(p, snd) + session_flow(p, snd)
    links = {5: [(0, 1, False)]}
    assert flowframe.add_link_flows(data, links) == data
    assert links == {5: [(0, 1, False)]}  # not served: left for the caller


def test_attach_fields_skip_a_terminus_python_cannot_read() -> None:
    """Found by tests/test_pump_fuzz.py: our attach echoes the peer's source, which may hold
    a string that is not UTF-8 (proton's C codec takes it, its Python cannot decode it); reading
    the whole attach failed the connection's pump ("driver failed", a traceback)."""
    p = Pair()
    p.client.open()
    ssn = p.client.session()
    ssn.open()
    rcv = ssn.receiver("mine")
    rcv.source.address = "q"
    rcv.source.properties.decode(b"\xc1\x07\x02\xa1\x01k\xa1\x01\xff")  # {"k": b"\xff" as text}
    rcv.open()
    p.pump()
    p.server.open()
    p.server.session_head(0).open()
    link = p.server.link_head(0)
    link.source.copy(link.remote_source)
    link.open()
    out = p.pump()
    assert b"\xa1\x01\xff" in out  # echoed as it came
    got = [flowframe.attach_fields(out, f) for f in flowframe.frames(out) if f.code == ATTACH]
    assert got == [("mine", 0, False, 0)]


def test_attach_fields_of_a_name_python_cannot_read() -> None:
    """Found by tests/test_pump_fuzz.py: our attach echoes the peer's link name as it came; a
    name that is not UTF-8 (after a NUL, which is all proton's Python shows of the name) failed
    the connection's driver. It is read as it is, with a replacement character."""
    fields = b"\xa1\x02\x00\xff" + b"\x43\x41\x50\x00\x50\x00\x40\x40\x40\x42\x43"
    body = b"\x00\x53\x12\xc0" + bytes([len(fields) + 1, 10]) + fields
    out = struct.pack(">IBBH", 8 + len(body), 2, 0, 0) + body
    got = [flowframe.attach_fields(out, f) for f in flowframe.frames(out) if f.code == ATTACH]
    assert got == [("\x00\ufffd", 0, True, 0)]
