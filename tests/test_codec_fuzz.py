"""The message decoder, fuzzed: whatever bytes a peer sends as a message, `codec.extract` (the
per-message scan), `codec.decode` (management requests) and, for what is accepted,
`codec.with_header` (a redelivery) return or raise `BadMessage`, never anything else: anything
else becomes a traceback and amqp:internal-error on the peer's connection.

The inputs are hand-encoded AMQP values of every type code (right and wrong types in every
section, deep nesting, descriptor chains, chars beyond U+10FFFF, broken sizes), and mutations of
what proton itself encodes (flipped, inserted, deleted bytes; truncation).
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proton import Message, symbol

from broker.amqp import codec


def _sized(code8: int, code32: int, payload: bytes, count: int | None) -> bytes:
    """A variable-width value (binary, string, list, map), 8- or 32-bit sized."""
    if count is None:
        if len(payload) <= 255:
            return bytes((code8, len(payload))) + payload
        return bytes((code32,)) + struct.pack(">I", len(payload)) + payload
    if len(payload) + 1 <= 255 and count <= 255:
        return bytes((code8, len(payload) + 1, count)) + payload
    return bytes((code32,)) + struct.pack(">II", len(payload) + 4, count) + payload


def _lst(items: list[bytes]) -> bytes:
    return _sized(0xC0, 0xD0, b"".join(items), len(items))


def _map(items: list[bytes]) -> bytes:
    return _sized(0xC1, 0xD1, b"".join(items), len(items))


def _str(text: bytes) -> bytes:
    return _sized(0xA1, 0xB1, text, None)


_FIXED_WIDTHS = {0x50: 1, 0x51: 1, 0x52: 1, 0x53: 1, 0x54: 1, 0x55: 1, 0x56: 1, 0x60: 2,
                 0x61: 2, 0x70: 4, 0x71: 4, 0x72: 4, 0x73: 4, 0x74: 4, 0x80: 8, 0x81: 8,
                 0x82: 8, 0x83: 8, 0x84: 8, 0x94: 16, 0x98: 16}  # fmt: skip

_scalar = st.one_of(
    st.sampled_from([b"\x40", b"\x41", b"\x42", b"\x43", b"\x44", b"\x45"]),
    st.sampled_from(sorted(_FIXED_WIDTHS)).flatmap(
        lambda c: st.binary(min_size=_FIXED_WIDTHS[c], max_size=_FIXED_WIDTHS[c]).map(
            lambda v: bytes((c,)) + v
        )
    ),
    # chars, in range and not (surrogates, beyond U+10FFFF)
    st.sampled_from([0x41, 0xD800, 0x10FFFF, 0x110000, 0xFFFFFFFF]).map(
        lambda cp: b"\x73" + struct.pack(">I", cp)
    ),
    st.binary(max_size=12).map(_str),  # text, often not UTF-8
    st.binary(max_size=12).map(lambda v: _sized(0xA3, 0xB3, v, None)),  # symbols
    st.binary(max_size=12).map(lambda v: _sized(0xA0, 0xB0, v, None)),  # binaries
    st.binary(max_size=6),  # anything at all, sizes included
)


def _composite(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.lists(children, max_size=4).map(_lst),
        st.lists(children, max_size=4).map(_map),  # often an odd count
        st.tuples(children, children).map(lambda dv: b"\x00" + dv[0] + dv[1]),  # described
        # an array of one constructor, its elements' bytes whatever they are
        st.tuples(st.sampled_from([0x40, 0x41, 0x50, 0x73, 0xA1, 0xC0]), st.binary(max_size=9)).map(
            lambda cv: bytes((0xE0, len(cv[1]) + 2, 1, cv[0])) + cv[1]
        ),
    )


_value = st.recursive(_scalar, _composite, max_leaves=12)


def _deep(depth: int, code: int) -> bytes:
    """`depth` lists (or maps of one key) inside each other, or a chain of descriptors."""
    if code == 0x00:
        return b"\x00" * depth + b"\x45"
    v = b"\x45" if code == 0xD0 else b"\xa1\x01k\x40"
    for _ in range(depth):
        if code == 0xD0:
            v = b"\xd0" + struct.pack(">II", len(v) + 4, 1) + v
        else:
            v = b"\xd1" + struct.pack(">II", len(v) + 6, 2) + b"\xa1\x01k" + v
    return v


_deep_value = st.tuples(st.integers(1, 5000), st.sampled_from([0x00, 0xD0, 0xD1])).map(
    lambda dc: _deep(*dc)
)


def _section_value(code: int) -> st.SearchStrategy[bytes]:
    """Mostly the right shape for the section (a list of fields, a map), with any fields."""
    if code in (0x70, 0x73, 0x76):
        fields = st.lists(st.one_of(_value, _deep_value), max_size=14).map(_lst)
    elif code in (0x71, 0x72, 0x74, 0x78):
        fields = st.lists(st.one_of(_value, _deep_value), max_size=8).map(_map)
    else:
        fields = st.one_of(_value, _deep_value)
    return st.one_of(fields, _value, _deep_value)


_descriptor = st.one_of(
    st.integers(0x6E, 0x79).map(lambda c: b"\x53" + bytes((c,))),
    st.integers(0x6E, 0x79).map(lambda c: b"\x80" + struct.pack(">Q", c)),
    st.sampled_from([b"amqp:header:list", b"amqp:data:binary", b"amqp:properties:list", b"x"]).map(
        lambda s: _sized(0xA3, 0xB3, s, None)
    ),
    _scalar,
)

_section = st.one_of(
    st.sampled_from(range(0x70, 0x79)).flatmap(
        lambda c: _section_value(c).map(lambda v: b"\x00\x53" + bytes((c,)) + v)
    ),
    st.tuples(_descriptor, _value).map(lambda dv: b"\x00" + dv[0] + dv[1]),
)

_message = st.lists(_section, min_size=0, max_size=6).map(b"".join)


def _valid_encodings() -> list[bytes]:
    ms = [
        Message(body="hello", durable=True, priority=7, ttl=1.5, subject="s", address="q"),
        Message(body={"k": [1, 2, 3]}, id=5, annotations={symbol("x-a"): 1}, reply_to="r"),
        Message(body=b"\x00" * 300, properties={"a": 1, "b": [1, 2], "c": {"d": None}}),
        Message(body=[1, "two", 3.0], delivery_count=3, first_acquirer=True, user_id=b"u"),
    ]
    return [bytes(m.encode()) for m in ms]


_mutation = st.tuples(
    st.sampled_from(_valid_encodings()),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]), st.integers(0), st.integers(0, 255)
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(0),
).map(lambda t: _mutate(*t))


def _mutate(base: bytes, edits: list[tuple[str, int, int]], cut: int) -> bytes:
    b = bytearray(base)
    for kind, at, byte in edits:
        at %= len(b) + 1
        if kind == "insert":
            b.insert(at, byte)
        elif at < len(b):
            if kind == "flip":
                b[at] = byte
            else:
                del b[at]
    return bytes(b[: len(b) - cut % 4]) if cut % 3 == 0 else bytes(b)


def _only_bad_message(data: bytes) -> None:
    """Each reader returns or says BadMessage; what extract accepts can also be redelivered."""
    try:
        message, decoded = codec.extract(data, 0.0)
    except codec.BadMessage as exc:
        assert str(exc) and "\n" not in str(exc)  # a one-line description for the sender
        accepted = False
    else:
        accepted = True
        assert message.body == data
        codec.with_header(data, message.delivery_count + 1, False)
        _ = decoded.address
    try:
        codec.decode(data)
    except codec.BadMessage as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert accepted, "management took what the per-message scan refused"


_SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


@_SETTINGS
@given(data=_message)
def test_structured_messages_only_ever_give_bad_message(data: bytes) -> None:
    _only_bad_message(data)


@_SETTINGS
@given(data=_mutation)
def test_mutated_proton_encodings_only_ever_give_bad_message(data: bytes) -> None:
    _only_bad_message(data)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=64))
def test_random_bytes_only_ever_give_bad_message(data: bytes) -> None:
    _only_bad_message(data)


WRONG: dict[str, bytes] = {
    # what issue 11 names, and the other wrong types the scan reads
    "descriptor-chain": b"\x00\x53\x77" + _deep(5000, 0x00),
    "described-descriptor-chain": _deep(5000, 0x00),
    "char-beyond-unicode-in-app-properties": b"\x00\x53\x74"
    + _map([_str(b"k"), b"\x73\x00\x11\x00\x00"]),
    # found by tests/test_pump_fuzz.py: chr() raised OverflowError, not ValueError
    "char-past-int32-in-app-properties": b"\x00\x53\x74"
    + _map([_str(b"k"), b"\x73\x80\x00\x00\x00"]),
    "deep-list-in-app-properties": b"\x00\x53\x74" + _map([_str(b"k"), _deep(3000, 0xD0)]),
    "durable-a-string": b"\x00\x53\x70" + _lst([_str(b"yes")]),
    "priority-a-list": b"\x00\x53\x70" + _lst([b"\x41", _lst([])]),
    "ttl-negative-int": b"\x00\x53\x70" + _lst([b"\x40", b"\x40", b"\x54\xff"]),
    "delivery-count-a-string": b"\x00\x53\x70" + _lst([b"\x40"] * 4 + [_str(b"1")]),
    "first-acquirer-a-char": b"\x00\x53\x70" + _lst([b"\x40"] * 3 + [b"\x73\x00\x00\x00\x41"]),
    "to-an-int": b"\x00\x53\x73" + _lst([b"\x40", b"\x40", b"\x54\x01"]),
    "subject-deep": b"\x00\x53\x73" + _lst([b"\x40"] * 3 + [_deep(3000, 0xD0)]),
    "app-properties-int-key": b"\x00\x53\x74" + _map([b"\x54\x01", b"\x41"]),
    "app-properties-key-without-value": b"\x00\x53\x74" + _map([_str(b"k")]),
    "app-properties-a-list": b"\x00\x53\x74" + _lst([]),
    "truncated-header": (b"\x00\x53\x70" + _lst([b"\x41", b"\x50\x04"]))[:-1],
    "truncated-properties": (b"\x00\x53\x73" + _lst([b"\x40", b"\x40", _str(b"abc")]))[:-2],
    "truncated-app-properties": (b"\x00\x53\x74" + _map([_str(b"k"), _str(b"v")]))[:-1],
}


def test_each_wrong_section_is_a_bad_message() -> None:
    for name, data in WRONG.items():
        try:
            codec.extract(data, 0.0)
        except codec.BadMessage as exc:
            assert str(exc) and "\n" not in str(exc), name
        else:
            raise AssertionError(f"{name}: accepted")
        try:
            codec.decode(data)
        except codec.BadMessage:
            pass
        else:
            raise AssertionError(f"{name}: accepted as a management request")


def test_values_proton_sends_are_still_read() -> None:
    """Being strict about types must not refuse what stock clients send."""
    for data in _valid_encodings():
        codec.extract(data, 0.0)
    m = Message(body=None, properties={"list": [1, 2], "map": {"a": 1}, "none": None})
    _, decoded = codec.extract(bytes(m.encode()), 0.0)
    assert decoded.properties == {"list": [1, 2], "map": {"a": 1}, "none": None}
