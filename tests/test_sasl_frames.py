"""SASL frame codec: what we encode proton's codec reads back as the spec's performatives, and
whatever a peer sends is either a performative or a one-line SaslProtocolError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from proton import Data

from qstore.sasl.frames import (
    MAX_SASL_FRAME,
    Challenge,
    Init,
    Mechanisms,
    OutcomeFrame,
    Response,
    SaslProtocolError,
    decode_frame,
    encode_frame,
    split_frame,
)

FRAMES = [
    Mechanisms(("SCRAM-SHA-256", "PLAIN")),
    Mechanisms(("ANONYMOUS",)),
    Init("PLAIN", b"\0bob\0secret", "example.com"),
    Init("ANONYMOUS", None, None),
    Init("EXTERNAL", b"", None),
    Challenge(b"r=abc,s=c2FsdA==,i=4096"),
    Challenge(b""),
    Response(b"c=biws,r=abc,p=xyz"),
    OutcomeFrame(0, b"v=signature"),
    OutcomeFrame(1, None),
    OutcomeFrame(4, None),
]


INIT = b"\x00\x53\x41"  # the descriptor of a sasl-init; its list follows, hand-encoded


def frame_of(body: bytes, *, doff: int = 2, ftype: int = 1) -> bytes:
    return struct.pack(">IBBH", 8 + len(body), doff, ftype, 0) + body


def described(code: int, *fields: tuple[str, object]) -> bytes:
    """A described list built with proton's codec, field by field (type name, value)."""
    d = Data()
    d.put_described()
    d.enter()
    d.put_ulong(code)
    d.put_list()
    d.enter()
    for kind, value in fields:
        if kind == "null":
            d.put_null()
        else:
            getattr(d, f"put_{kind}")(value)
    d.exit()
    d.exit()
    return bytes(d.encode())


@pytest.mark.parametrize("frame", FRAMES, ids=repr)
def test_round_trip(frame) -> None:
    data = encode_frame(frame)
    assert split_frame(data) == len(data)
    assert split_frame(data[:-1]) == 0  # incomplete: wait for more
    assert decode_frame(data) == frame


def test_encoding_is_the_spec_layout() -> None:
    """Header: size, doff 2, type 1 (SASL), channel 0; body: descriptor 0x44, ubyte code."""
    data = encode_frame(OutcomeFrame(1))
    size, doff, ftype, channel = struct.unpack_from(">IBBH", data)
    assert (size, doff, ftype, channel) == (len(data), 2, 1, 0)
    d = Data()
    d.decode(data[8:])
    d.rewind()
    assert d.next() == Data.DESCRIBED
    d.enter()
    d.next()
    assert d.get_ulong() == 0x44
    d.next()
    d.enter()
    d.next()
    assert d.type() == Data.UBYTE and d.get_ubyte() == 1


def test_symbolic_descriptor_and_single_symbol_mechanisms_are_accepted() -> None:
    """The spec allows the symbolic descriptor and a single symbol for a multiple field."""
    d = Data()
    d.put_described()
    d.enter()
    d.put_symbol("amqp:sasl-mechanisms:list")
    d.put_list()
    d.enter()
    d.put_symbol("PLAIN")
    d.exit()
    d.exit()
    assert decode_frame(frame_of(bytes(d.encode()))) == Mechanisms(("PLAIN",))


def test_empty_frame_is_a_heartbeat() -> None:
    data = frame_of(b"")
    assert split_frame(data) == 8
    assert decode_frame(data) is None


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    header = struct.pack(">IBBH", MAX_SASL_FRAME + 1, 2, 1, 0)
    with pytest.raises(SaslProtocolError, match="exceeds the limit 65536"):
        split_frame(header)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack(">IBBH", 4, 2, 1, 0), "smaller than its header"),
        (frame_of(b"\x00", doff=1), "bad data offset"),
        (frame_of(b"\x00", doff=200), "bad data offset"),
        (frame_of(described(0x10), ftype=0), "frame type 0"),
    ],
)
def test_bad_frame_headers(data: bytes, message: str) -> None:
    with pytest.raises(SaslProtocolError, match=message):
        split_frame(data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff\xff\xff", "undecodable"),
        (b"\x40", "not a described type"),  # a null
        (described(0x41, ("symbol", "PLAIN")) + b"\x40", "trailing bytes"),
        (described(0x10, ("symbol", "x")), "unknown SASL performative 0x10"),
        (described(0x41, ("binary", b"PLAIN")), "sasl-init mechanism has the wrong type"),
        (described(0x41), "sasl-init without a mechanism"),
        (described(0x43, ("symbol", "x")), "sasl-response has the wrong type"),
        (described(0x43), "sasl-response without a response"),
        (described(0x44), "sasl-outcome without a code"),
        (described(0x44, ("int", 1)), "unexpected AMQP type int"),
        (described(0x40, ("null", None)), "without mechanisms"),
        # found by tests/test_pump_fuzz.py: these raised UnicodeDecodeError (the broker's
        # "driver failed", with a traceback, and the peer not even answered)
        (INIT + b"\xd0\0\0\0\x0c\0\0\0\x03\xa3\x01P\x40\xa1\x02a\xff", "not valid UTF-8"),
        (INIT + b"\xc0\x04\x01\xa3\x02\xc3\xa9", "not valid ASCII"),  # a mechanism
        (b"\x00\xa3\x02\xc3\xa9\x45", "not valid ASCII"),  # a symbolic descriptor
        (b"\x00\x53\x40\xc0\x07\x01\xe0\x04\x01\xa3\x01\xff", "not valid ASCII"),  # in an array
    ],
)
def test_malformed_bodies(body: bytes, message: str) -> None:
    data = frame_of(body)
    assert split_frame(data) == len(data)
    with pytest.raises(SaslProtocolError, match=message) as info:
        decode_frame(data)
    assert "\n" not in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_body_decodes_or_raises_protocol_error(body: bytes) -> None:
    try:
        decode_frame(frame_of(body))
    except SaslProtocolError as exc:
        assert "\n" not in str(exc)
