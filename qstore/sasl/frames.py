"""AMQP 1.0 SASL frames (spec part 5.3): split a byte stream into frames, encode and decode the
five SASL performatives.

The performatives are AMQP-encoded described lists; proton's `Data` codec reads and writes
them, so nothing here hand-encodes AMQP types. Everything a peer sends is bounded: a frame
larger than MAX_SASL_FRAME, or one that does not decode to exactly one known performative,
raises `SaslProtocolError` with a one-line message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from proton import Data

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
HEADER_SIZE = 8
MAX_SASL_FRAME = 64 * 1024  # bytes, frame header included

FRAME_HEADER = struct.Struct(">IBBH")  # size, doff, type, channel
SASL_FRAME_TYPE = 1
MIN_DOFF = 2

SASL_MECHANISMS = 0x40
SASL_INIT = 0x41
SASL_CHALLENGE = 0x42
SASL_RESPONSE = 0x43
SASL_OUTCOME = 0x44

_NAMES = {
    SASL_MECHANISMS: "sasl-mechanisms",
    SASL_INIT: "sasl-init",
    SASL_CHALLENGE: "sasl-challenge",
    SASL_RESPONSE: "sasl-response",
    SASL_OUTCOME: "sasl-outcome",
}
_CODES_BY_SYMBOL = {f"amqp:{name}:list": code for code, name in _NAMES.items()}


class Outcome(IntEnum):
    """sasl-outcome codes (spec 5.3.3.6)."""

    OK = 0
    AUTH = 1
    SYS = 2
    SYS_PERM = 3
    SYS_TEMP = 4


class SaslProtocolError(Exception):
    """The peer broke the SASL framing or encoding; the message is one line."""


@dataclass(frozen=True)
class Mechanisms:
    mechanisms: tuple[str, ...]


@dataclass(frozen=True)
class Init:
    mechanism: str
    initial_response: bytes | None = None
    hostname: str | None = None


@dataclass(frozen=True)
class Challenge:
    challenge: bytes


@dataclass(frozen=True)
class Response:
    response: bytes


@dataclass(frozen=True)
class OutcomeFrame:
    code: int
    additional_data: bytes | None = None


SaslFrame = Mechanisms | Init | Challenge | Response | OutcomeFrame


def frame_name(frame: SaslFrame) -> str:
    """The spec's name of a performative, for error messages."""
    return {
        Mechanisms: "sasl-mechanisms",
        Init: "sasl-init",
        Challenge: "sasl-challenge",
        Response: "sasl-response",
        OutcomeFrame: "sasl-outcome",
    }[type(frame)]


# --- encoding ----------------------------------------------------------------------------------


def _put_binary_or_null(d: Data, value: bytes | None) -> None:
    if value is None:
        d.put_null()
    else:
        d.put_binary(bytes(value))


def encode_frame(frame: SaslFrame) -> bytes:
    """One SASL frame (header and body) holding `frame`."""
    d = Data()
    d.put_described()
    d.enter()
    if isinstance(frame, Mechanisms):
        d.put_ulong(SASL_MECHANISMS)
        d.put_list()
        d.enter()
        d.put_array(False, Data.SYMBOL)
        d.enter()
        for mech in frame.mechanisms:
            d.put_symbol(mech)
        d.exit()
    elif isinstance(frame, Init):
        d.put_ulong(SASL_INIT)
        d.put_list()
        d.enter()
        d.put_symbol(frame.mechanism)
        _put_binary_or_null(d, frame.initial_response)
        if frame.hostname is None:
            d.put_null()
        else:
            d.put_string(frame.hostname)
    elif isinstance(frame, Challenge):
        d.put_ulong(SASL_CHALLENGE)
        d.put_list()
        d.enter()
        d.put_binary(bytes(frame.challenge))
    elif isinstance(frame, Response):
        d.put_ulong(SASL_RESPONSE)
        d.put_list()
        d.enter()
        d.put_binary(bytes(frame.response))
    elif isinstance(frame, OutcomeFrame):
        d.put_ulong(SASL_OUTCOME)
        d.put_list()
        d.enter()
        d.put_ubyte(int(frame.code))
        if frame.additional_data is not None:
            d.put_binary(bytes(frame.additional_data))
    else:  # pragma: no cover - the type union is closed
        raise TypeError(f"not a SASL performative: {frame!r}")
    d.exit()
    d.exit()
    body = bytes(d.encode())
    size = FRAME_HEADER.size + len(body)
    if size > MAX_SASL_FRAME:
        raise ValueError(f"SASL frame of {size} bytes exceeds {MAX_SASL_FRAME}")
    return FRAME_HEADER.pack(size, MIN_DOFF, SASL_FRAME_TYPE, 0) + body


# --- decoding ----------------------------------------------------------------------------------


def split_frame(buf: bytes | bytearray | memoryview) -> int:
    """The length of the complete frame at the start of `buf`, or 0 if more bytes are needed.

    Raises SaslProtocolError as soon as the frame header is wrong, before its body arrives, so
    a peer cannot make us wait for (or buffer) a frame we would refuse anyway."""
    if len(buf) < FRAME_HEADER.size:
        return 0
    size, doff, ftype, _channel = FRAME_HEADER.unpack_from(buf)
    if size < FRAME_HEADER.size:
        raise SaslProtocolError(f"SASL frame size {size} is smaller than its header")
    if size > MAX_SASL_FRAME:
        raise SaslProtocolError(f"SASL frame of {size} bytes exceeds the limit {MAX_SASL_FRAME}")
    if doff < MIN_DOFF or doff * 4 > size:
        raise SaslProtocolError(f"SASL frame has a bad data offset {doff}")
    if ftype != SASL_FRAME_TYPE:
        raise SaslProtocolError(f"expected a SASL frame (type 1), got frame type {ftype}")
    return size if len(buf) >= size else 0


def _read_value(d: Data, ty: Any) -> Any:
    """The current value of `d` as a plain Python value, for the few types SASL uses."""
    if ty == Data.NULL:
        return None
    if ty == Data.SYMBOL:
        return str(d.get_symbol())
    if ty == Data.STRING:
        return d.get_string()
    if ty == Data.BINARY:
        return bytes(d.get_binary())
    if ty == Data.UBYTE:
        return int(d.get_ubyte())
    if ty == Data.ARRAY:
        _count, described, elem_type = d.get_array()
        if described or elem_type != Data.SYMBOL:
            raise SaslProtocolError("expected an array of symbols")
        values = []
        d.enter()
        while d.next() is not None:
            values.append(str(d.get_symbol()))
        d.exit()
        return values
    raise SaslProtocolError(f"unexpected AMQP type {Data.type_names.get(ty, ty)} in a SASL frame")


def _decode_body(body: bytes) -> tuple[int, list[Any]]:
    """(performative code, its fields) of a frame body."""
    d = Data()
    try:
        used = d.decode(body)
    except Exception as exc:
        raise SaslProtocolError(f"undecodable SASL frame body ({type(exc).__name__})") from None
    if used != len(body):
        raise SaslProtocolError("trailing bytes after the SASL performative")
    try:
        return _read_performative(d)
    except UnicodeDecodeError as exc:
        # proton's codec checks neither: its Python binding raises when it reads them
        text = "ASCII" if exc.encoding == "ascii" else "UTF-8"
        raise SaslProtocolError(f"a symbol or string in a SASL frame is not valid {text}") from None


def _read_performative(d: Data) -> tuple[int, list[Any]]:
    d.rewind()
    if d.next() != Data.DESCRIBED:
        raise SaslProtocolError("SASL frame body is not a described type")
    d.enter()
    kind = d.next()
    if kind == Data.ULONG:
        code = int(d.get_ulong())
    elif kind == Data.SYMBOL:
        code = _CODES_BY_SYMBOL.get(str(d.get_symbol()), -1)
    else:
        raise SaslProtocolError("SASL performative has a bad descriptor")
    if code not in _NAMES:
        raise SaslProtocolError(f"unknown SASL performative {code:#x}")
    if d.next() != Data.LIST:
        raise SaslProtocolError(f"{_NAMES[code]} is not a list")
    fields: list[Any] = []
    d.enter()
    while (ty := d.next()) is not None:
        fields.append(_read_value(d, ty))
    return code, fields


def _field(fields: list[Any], index: int, kind: type | tuple[type, ...], name: str) -> Any:
    """Field `index` (None if absent), checked to be of `kind` when present."""
    value = fields[index] if index < len(fields) else None
    if value is not None and not isinstance(value, kind):
        raise SaslProtocolError(f"{name} has the wrong type")
    return value


def decode_frame(frame: bytes | bytearray | memoryview) -> SaslFrame | None:
    """The performative in one complete frame (as split_frame measured it); None for an empty
    frame (a heartbeat)."""
    frame = bytes(frame)
    _size, doff, _type, _channel = FRAME_HEADER.unpack_from(frame)
    body = frame[doff * 4 :]
    if not body:
        return None
    code, fields = _decode_body(body)
    if code == SASL_MECHANISMS:
        mechs = _field(fields, 0, (list, str), "sasl-server-mechanisms")
        if mechs is None:
            raise SaslProtocolError("sasl-mechanisms without mechanisms")
        return Mechanisms(tuple([mechs] if isinstance(mechs, str) else mechs))
    if code == SASL_INIT:
        mech = _field(fields, 0, str, "sasl-init mechanism")
        if mech is None:
            raise SaslProtocolError("sasl-init without a mechanism")
        return Init(
            mech,
            _field(fields, 1, bytes, "sasl-init initial-response"),
            _field(fields, 2, str, "sasl-init hostname"),
        )
    if code == SASL_CHALLENGE:
        challenge = _field(fields, 0, bytes, "sasl-challenge")
        if challenge is None:
            raise SaslProtocolError("sasl-challenge without a challenge")
        return Challenge(challenge)
    if code == SASL_RESPONSE:
        response = _field(fields, 0, bytes, "sasl-response")
        if response is None:
            raise SaslProtocolError("sasl-response without a response")
        return Response(response)
    outcome = _field(fields, 0, int, "sasl-outcome code")
    if outcome is None:
        raise SaslProtocolError("sasl-outcome without a code")
    return OutcomeFrame(outcome, _field(fields, 1, bytes, "sasl-outcome additional-data"))
