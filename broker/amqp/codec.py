"""What the broker reads from a message it receives, and what it changes when delivering it.

The model keeps each message's AMQP encoding exactly as received and never decodes it; this module
reads it once, at the door, to learn what routing and queueing need (durable, priority, TTL,
subject, application properties, and `to` for the anonymous relay). On the way out only the header
changes (first-acquirer true on a first delivery; on a redelivery the new delivery-count and
first-acquirer false), the rest byte for byte as the sender made it (`outgoing`).

Reading is a scan of the encoded sections, not a proton `Message.decode`: that decode costs about
three times as much (it builds Python objects for every section, body included), and it is
lenient: it takes `b"garbage"` for an empty message. The scan is strict about what makes a
message: a sequence of described sections with section descriptors, in the order the spec gives
(header, delivery-annotations, message-annotations, properties, application-properties, body,
footer), each value complete and its sizes consistent, text valid UTF-8; anything else is
`BadMessage` (the sender gets amqp:decode-error). So is a header or properties field the scan
reads (durable, priority, ttl, first-acquirer, delivery-count, to, subject) of a type the spec
does not allow there, and application properties that are not a map of string keys: proton's
own decode takes these leniently, and proton never sends them. Composite values the scan does not
read (annotations, a structured body) are checked by proton's own decoder. Application property
values that are lists, maps, described or decimals go to proton, so the values are exactly proton's.
`extract` raises nothing but `BadMessage` for any bytes (tests/test_codec_fuzz.py): a peer's
bytes must never become the broker's traceback.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

from cproton import ffi, lib
from proton import (
    Data,
    byte,
    char,
    float32,
    int32,
    short,
    symbol,
    timestamp,
    ubyte,
    uint,
    ulong,
    ushort,
)
from proton import Message as AmqpMessage

from broker.model import Message, QueuedMessage


class BadMessage(Exception):
    """The bytes of a delivery are not an AMQP message (the sender gets `rejected`)."""


_U16, _I16, _U32, _I32 = (struct.Struct(f) for f in (">H", ">h", ">I", ">i"))
_U64, _I64, _F32, _F64 = (struct.Struct(f) for f in (">Q", ">q", ">f", ">d"))

# fixed-width type codes -> bytes after the code
_FIXED = {
    0x40: 0, 0x41: 0, 0x42: 0, 0x43: 0, 0x44: 0, 0x45: 0,
    0x50: 1, 0x51: 1, 0x52: 1, 0x53: 1, 0x54: 1, 0x55: 1, 0x56: 1, 0x60: 2, 0x61: 2,
    0x70: 4, 0x71: 4, 0x72: 4, 0x73: 4, 0x74: 4, 0x80: 8, 0x81: 8, 0x82: 8, 0x83: 8, 0x84: 8,
    0x94: 16, 0x98: 16,
}  # fmt: skip
_SIZE8 = frozenset((0xA0, 0xA1, 0xA3, 0xC0, 0xC1, 0xE0))  # a 1-byte size follows the code
_SIZE32 = frozenset((0xB0, 0xB1, 0xB3, 0xD0, 0xD1, 0xF0))  # a 4-byte size follows
_TEXT = frozenset((0xA1, 0xB1, 0xA3, 0xB3))  # string or symbol

HEADER, PROPERTIES, APP_PROPERTIES, DATA, SEQUENCE, VALUE = 0x70, 0x73, 0x74, 0x75, 0x76, 0x77
# descriptor (numeric or symbolic) -> section code
_SECTIONS: dict[int | bytes, int] = {code: code for code in range(0x70, 0x79)}
_SECTIONS.update(
    {
        b"amqp:header:list": 0x70,
        b"amqp:delivery-annotations:map": 0x71,
        b"amqp:message-annotations:map": 0x72,
        b"amqp:properties:list": 0x73,
        b"amqp:application-properties:map": 0x74,
        b"amqp:data:binary": 0x75,
        b"amqp:amqp-sequence:list": 0x76,
        b"amqp:amqp-value:*": 0x77,
        b"amqp:footer:map": 0x78,
    }
)
# section code -> rank: sections come in rising rank; body sections (5) repeat only as data or
# sequence, never mixed
_RANK = {0x70: 0, 0x71: 1, 0x72: 2, 0x73: 3, 0x74: 4, 0x75: 5, 0x76: 5, 0x77: 5, 0x78: 6}
_MAP_OR_NULL = frozenset((0x40, 0xC1, 0xD1))


def _end(b: bytes, i: int, n: int) -> int:
    """Where the value at `i` ends (sizes checked against `n`; the content is not walked)."""
    c = b[i]
    w = _FIXED.get(c)
    if w is not None:
        e = i + 1 + w
    elif c in _SIZE8:
        e = i + 2 + b[i + 1]
    elif c in _SIZE32:
        e = i + 5 + _U32.unpack_from(b, i + 1)[0]
    elif c == 0:  # described: a descriptor, then the value
        return _end(b, _end(b, i + 1, n), n)
    else:
        raise BadMessage(f"invalid type code 0x{c:02x} at byte {i}")
    if e > n:
        raise BadMessage(f"the value at byte {i} runs past its end")
    return e


def _elements(b: bytes, i: int, end: int, what: str, is_map: bool = False) -> tuple[list[int], int]:
    """Where each element of the list (or map) at `i` starts, and how many it declares; walked,
    so that the declared size must be exactly what the elements take. Null is empty."""
    c = b[i]
    if c == 0x40 or (c == 0x45 and not is_map):
        return [], 0
    if c == (0xC1 if is_map else 0xC0):
        count, j = b[i + 2], i + 3
    elif c == (0xD1 if is_map else 0xD0):
        count, j = _U32.unpack_from(b, i + 5)[0], i + 9
    else:
        raise BadMessage(f"byte {i}: the {what} is not a {'map' if is_map else 'list'}")
    starts = []
    for _ in range(count):
        if j >= end:
            raise BadMessage(f"byte {i}: the {what} holds fewer elements than it declares")
        starts.append(j)
        j = _end(b, j, end)
    if j != end:
        raise BadMessage(f"byte {i}: the {what} is larger than its elements")
    return starts, count


def _wrong(b: bytes, i: int, what: str) -> BadMessage:
    return BadMessage(f"byte {i}: {what} was expected, not a value of type 0x{b[i]:02x}")


def _uint(b: bytes, i: int) -> int:
    c = b[i]
    if c == 0x70:
        return _U32.unpack_from(b, i + 1)[0]
    if c == 0x52:
        return b[i + 1]
    if c == 0x43 or c == 0x40:
        return 0
    raise _wrong(b, i, "a uint")


def _bool(b: bytes, i: int) -> bool:
    c = b[i]
    if c == 0x41:
        return True
    if c == 0x42 or c == 0x40:
        return False
    if c == 0x56 and b[i + 1] < 2:
        return b[i + 1] == 1
    raise _wrong(b, i, "a boolean")


def _text(b: bytes, i: int) -> str | None:
    c = b[i]
    if c == 0xA1 or c == 0xA3:
        return b[i + 2 : i + 2 + b[i + 1]].decode()
    if c == 0xB1 or c == 0xB3:
        return b[i + 5 : i + 5 + _U32.unpack_from(b, i + 1)[0]].decode()
    if c == 0x40:
        return None
    raise _wrong(b, i, "a string")


def _signed8(v: int) -> int:
    return v - 256 if v > 127 else v


# application property value readers: type code -> (bytes, offset after the code) -> value, the
# very types proton's Data.get_object returns
_VALUES: dict[int, Any] = {
    0x40: lambda b, j: None,
    0x41: lambda b, j: True,
    0x42: lambda b, j: False,
    0x56: lambda b, j: b[j] != 0,
    0xA1: lambda b, j: b[j + 1 : j + 1 + b[j]].decode(),
    0xB1: lambda b, j: b[j + 4 : j + 4 + _U32.unpack_from(b, j)[0]].decode(),
    0xA3: lambda b, j: symbol(b[j + 1 : j + 1 + b[j]].decode("ascii")),
    0xB3: lambda b, j: symbol(b[j + 4 : j + 4 + _U32.unpack_from(b, j)[0]].decode("ascii")),
    0xA0: lambda b, j: bytes(b[j + 1 : j + 1 + b[j]]),
    0xB0: lambda b, j: bytes(b[j + 4 : j + 4 + _U32.unpack_from(b, j)[0]]),
    0x50: lambda b, j: ubyte(b[j]),
    0x51: lambda b, j: byte(_signed8(b[j])),
    0x60: lambda b, j: ushort(_U16.unpack_from(b, j)[0]),
    0x61: lambda b, j: short(_I16.unpack_from(b, j)[0]),
    0x70: lambda b, j: uint(_U32.unpack_from(b, j)[0]),
    0x52: lambda b, j: uint(b[j]),
    0x43: lambda b, j: uint(0),
    0x71: lambda b, j: int32(_I32.unpack_from(b, j)[0]),
    0x54: lambda b, j: int32(_signed8(b[j])),
    0x80: lambda b, j: ulong(_U64.unpack_from(b, j)[0]),
    0x53: lambda b, j: ulong(b[j]),
    0x44: lambda b, j: ulong(0),
    0x81: lambda b, j: _I64.unpack_from(b, j)[0],
    0x55: lambda b, j: _signed8(b[j]),
    0x83: lambda b, j: timestamp(_I64.unpack_from(b, j)[0]),
    0x72: lambda b, j: float32(_F32.unpack_from(b, j)[0]),
    0x82: lambda b, j: _F64.unpack_from(b, j)[0],
    0x73: lambda b, j: char(chr(_U32.unpack_from(b, j)[0])),
    0x98: lambda b, j: uuid.UUID(bytes=bytes(b[j : j + 16])),
}


def _app_properties(b: bytes, i: int, end: int) -> dict[str, Any]:
    c = b[i]
    if c == 0xC1:
        count, j = b[i + 2], i + 3
    elif c == 0xD1:
        count, j = _U32.unpack_from(b, i + 5)[0], i + 9
    elif c == 0x40:
        return {}
    else:
        raise BadMessage(f"byte {i}: the application-properties are not a map")
    if count % 2:
        raise BadMessage(f"byte {i}: the application-properties map has a key without a value")
    props: dict[str, Any] = {}
    for _ in range(count // 2):
        if j >= end:
            raise BadMessage(f"byte {i}: the application-properties hold fewer entries")
        k = _end(b, j, end)
        if b[j] == 0xA1:
            key = b[j + 2 : k].decode()
        elif b[j] in _TEXT:
            key = _text(b, j)  # type: ignore[assignment]
        else:
            raise _wrong(b, j, "an application property key (a string)")
        read = _VALUES.get(b[k])
        j = _end(b, k, end)
        if read is None:
            return _proton_map(b, i, end)  # composite values: proton's reading
        props[key] = read(b, k + 1)
    if j != end:
        raise BadMessage(f"byte {i}: the application-properties are larger than their entries")
    return props


def _proton_map(b: bytes, i: int, end: int) -> dict[str, Any]:
    """The map at `b[i:end]` as proton reads it (keys as plain str, binaries owned)."""
    _elements(b, i, end, "application-properties", is_map=True)  # sizes consistent, at least
    d = Data()
    try:
        d.decode(bytes(b[i:end]))
        d.rewind()
        d.next()
        value = d.get_object()
        return {str(k): owned(v) for k, v in value.items()} if value else {}
    except Exception as exc:  # proton raises its own errors for each kind of bad encoding
        raise BadMessage(f"application-properties do not decode: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    """An exception as one short line for a peer's error description."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


_checker = lib.pn_data(0)  # proton's decoder, for composite values the scan does not read


def _check_composite(b: bytes, i: int, end: int) -> None:
    lib.pn_data_clear(_checker)
    if lib.pn_data_decode(_checker, ffi.from_buffer(b) + i, end - i) != end - i:
        raise BadMessage(f"byte {i}: a section's value does not decode")


def _descriptor(b: bytes, i: int, n: int) -> tuple[int | None, int]:
    """The section code of the described value at `i` (None: not a section), and where its
    value starts; for descriptors other than the usual small ulong."""
    v = _end(b, i + 1, n)
    d = b[i + 1]
    if d == 0x80:
        return _SECTIONS.get(_U64.unpack_from(b, i + 2)[0]), v
    if d == 0xA3 or d == 0xB3:
        return _SECTIONS.get(bytes(b[i + (3 if d == 0xA3 else 6) : v])), v
    return None, v


class Decoded:
    """The message's `to` (the anonymous relay routes by it); any other attribute comes from a
    full proton decode, made on first use."""

    __slots__ = ("_data", "_full", "address")

    def __init__(self, data: bytes, address: str | None, full: AmqpMessage | None = None) -> None:
        self._data = data
        self._full = full
        self.address = address

    def __getattr__(self, name: str) -> Any:
        if self._full is None:
            self._full = decode(self._data)
        return getattr(self._full, name)


def extract(data: bytes, now: float) -> tuple[Message, Decoded]:
    """The model's view of received bytes, and what else routing may need; BadMessage if the
    bytes are not an AMQP message."""
    b = data
    n = len(b) if b else 0
    if n == 0:
        raise BadMessage("the message is empty")
    durable = False
    priority = 4
    ttl = delivery_count = 0
    subject = address = message_id = None
    props: dict[str, Any] = {}
    rank = -1
    last = i = 0
    try:
        while i < n:
            if b[i] != 0:
                raise BadMessage(f"byte {i}: a message section was expected, not a 0x{b[i]:02x}")
            if b[i + 1] == 0x53:
                code, v = _SECTIONS.get(b[i + 2]), i + 3
            else:
                code, v = _descriptor(b, i, n)
            if code is None:
                raise BadMessage(f"byte {i}: not a message section")
            r = _RANK[code]
            if r < rank or (r == rank and (code != last or code not in (DATA, SEQUENCE))):
                raise BadMessage(f"byte {i}: a message section out of order")
            rank, last = r, code
            end = _end(b, v, n)
            c = b[v]
            if code == HEADER:
                f, k = _elements(b, v, end, "header")
                if k:
                    durable = _bool(b, f[0])
                if k > 1 and b[f[1]] != 0x40:
                    if b[f[1]] != 0x50:
                        raise _wrong(b, f[1], "a ubyte priority")
                    priority = b[f[1] + 1]
                if k > 2:
                    ttl = _uint(b, f[2])
                if k > 3:
                    _bool(b, f[3])
                if k > 4:
                    delivery_count = _uint(b, f[4])
            elif code == PROPERTIES:
                f, k = _elements(b, v, end, "properties")
                if k and b[f[0]] != 0x40:  # the message-id as encoded: the dedup window's key
                    message_id = bytes(b[f[0] : f[1] if k > 1 else end])
                if k > 2:
                    address = _text(b, f[2])
                if k > 3:
                    subject = _text(b, f[3])
            elif code == APP_PROPERTIES:
                props = _app_properties(b, v, end)
            elif code == DATA:
                if c != 0xA0 and c != 0xB0:
                    raise BadMessage(f"byte {i}: a data section holds no binary")
            elif code == SEQUENCE:
                if c != 0xC0 and c != 0xD0 and c != 0x45:
                    raise BadMessage(f"byte {i}: an amqp-sequence section holds no list")
                _check_composite(b, v, end)
            else:  # annotations, footer, amqp-value
                if code != VALUE and c not in _MAP_OR_NULL:
                    raise BadMessage(f"byte {i}: an annotations or footer section holds no map")
                if c == 0xA1:
                    b[v + 2 : end].decode()  # a text body must be text
                elif c == 0xB1:
                    b[v + 5 : end].decode()
                elif c == 0 or c >= 0xC0:
                    _check_composite(b, v, end)
            i = end
    except (IndexError, struct.error):
        raise BadMessage("the message ends in the middle of a value") from None
    except UnicodeDecodeError as exc:
        raise BadMessage(f"text that is not UTF-8 at byte {exc.start}") from None
    except (ValueError, OverflowError) as exc:  # a char beyond U+10FFFF (or beyond a C int)
        raise BadMessage(f"a value out of range: {_short(exc)}") from None
    except RecursionError:  # descriptors of descriptors of ...
        raise BadMessage("values nested too deeply") from None
    message = Message(
        body=data,
        durable=durable,
        priority=priority,
        expiry=(now + ttl / 1000) if ttl else None,
        subject=subject,
        properties=props,
        delivery_count=delivery_count,
        message_id=message_id,
    )
    return message, Decoded(data, address)


def message_id(data: bytes) -> bytes | None:
    """The message-id of a message the broker stored (its encoding as sent, as `extract` gives
    it), None if it has none: a replica or a restored message, whose bytes `extract` checked
    when they first came in, on a queue with a dedup window. Only the sections before the
    properties are walked, and only their sizes."""
    b = data
    n = len(b)
    i = 0
    try:
        while i < n and b[i] == 0:
            if b[i + 1] == 0x53:
                code, v = _SECTIONS.get(b[i + 2]), i + 3
            else:
                code, v = _descriptor(b, i, n)
            if code is None or code > PROPERTIES:
                return None
            end = _end(b, v, n)
            if code == PROPERTIES:
                f, k = _elements(b, v, end, "properties")
                if not k or b[f[0]] == 0x40:
                    return None
                return bytes(b[f[0] : f[1] if k > 1 else end])
            i = end
    except (IndexError, struct.error, BadMessage, RecursionError):
        return None
    return None


def id_only(message_id: bytes) -> bytes:
    """A message of nothing but a properties section with `message_id` (as `extract` gives it):
    what a snapshot sends a backup for a consumed message whose id is still in a dedup window,
    so that the backup's window, and its journal's, hold it too."""
    n = len(message_id) + 1
    if n <= 255:
        return b"\x00\x53\x73\xc0" + bytes((n, 1)) + message_id
    return b"\x00\x53\x73\xd0" + _U32.pack(n + 3) + _U32.pack(1) + message_id


def decode(data: bytes, check: bool = True) -> AmqpMessage:
    """A full proton decode (management requests), after the same checks as `extract`."""
    if check:
        extract(data, 0.0)
    m = AmqpMessage()
    try:
        m.decode(data)
    except Exception as exc:  # proton raises its own errors for each kind of bad encoding
        raise BadMessage(f"message does not decode: {_short(exc)}") from None
    return m


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


_FIRST_ONLY = b"\x00\x53\x70\xc0\x05\x04\x40\x40\x40\x41"  # a header: first-acquirer true
_first_heads: dict[bytes, bytes] = {}  # a received header -> the same with first-acquirer true
_FIRST_HEADS_MAX = 1024  # distinct headers remembered (a message's header is a few bytes)
_DURABLE = b"\x00\x53\x70\xc0\x02\x01\x41"  # proton's header of a durable message
# The header last seen (the whole section, so a body that starts with it has that very header),
# its first-delivery form, and where the rest of the message starts.
_last_first = (_DURABLE, b"\x00\x53\x70\xc0\x06\x05\x41\x40\x40\x41\x43", len(_DURABLE))


def outgoing(qm: QueuedMessage) -> tuple[bytes, bytes | bytearray, int]:
    """What to send for a queued message: `head + body[start:]`, so that a first delivery goes
    without copying the message. The stored bytes are as received, and a sender's header rarely
    says first-acquirer (proton leaves out trailing defaults): a first delivery's header is
    replaced by the same with first-acquirer true; a redelivery's also gets its delivery-count
    (and first-acquirer false: someone acquired it before). This runs for every message sent:
    the usual case (the same header as the message before) costs one `startswith`."""
    body = qm.message.body
    if qm.delivery_count or qm.redelivered:  # i.e. not first_acquirer (a property: slower)
        return b"", with_header(body, qm.delivery_count, qm.first_acquirer), 0
    key, head, start = _last_first
    if body.startswith(key):
        return head, body, start
    return _first_header(body)


def _first_header(body: bytes | bytearray) -> tuple[bytes, bytes | bytearray, int]:
    """`outgoing` for a first delivery whose header differs from the last one's."""
    global _last_first
    if body[0] == 0 and body[1] == 0x53:
        code = body[2]
        if code == HEADER:
            c = body[3]
            end = 5 + body[4] if c == 0xC0 else 4 if c == 0x45 else _end(body, 3, len(body))
            key = bytes(body[:end])
            head = _first_heads.get(key)
            if head is None:
                head = with_header(key, 0, True)
                if len(_first_heads) >= _FIRST_HEADS_MAX:
                    _first_heads.clear()
                _first_heads[key] = head
            _last_first = (key, head, end)
            return head, body, end
        if code in _RANK:  # another section first: no header at all
            return _FIRST_ONLY, body, 0
    return b"", with_header(body, 0, True), 0  # a header with a symbolic descriptor


def with_header(data: bytes, delivery_count: int, first_acquirer: bool) -> bytes:
    """The message with its header's first-acquirer and delivery-count replaced (a header is
    added if it has none); durable, priority and ttl, and every other byte, stay as they were."""
    b = data
    kept: list[bytes] = []  # the encoded durable, priority, ttl
    rest = 0
    if b[1] == 0x53:
        code, v = _SECTIONS.get(b[2]), 3
    else:
        code, v = _descriptor(b, 0, len(b))
    if code == HEADER:
        rest = _end(b, v, len(b))
        starts, count = _elements(b, v, rest, "header")
        bounds = [*starts, rest]
        kept = [bytes(b[bounds[k] : bounds[k + 1]]) for k in range(min(count, 3))]
    kept += [b"\x40"] * (3 - len(kept))
    kept.append(b"\x41" if first_acquirer else b"\x42")
    kept.append(b"\x70" + _U32.pack(delivery_count) if delivery_count else b"\x43")
    fields = b"".join(kept)
    if len(fields) + 1 <= 255:
        header = b"\x00\x53\x70\xc0" + bytes((len(fields) + 1, 5)) + fields
    else:
        header = b"\x00\x53\x70\xd0" + _U32.pack(len(fields) + 4) + _U32.pack(5) + fields
    return header + bytes(b[rest:])


def encode(message: AmqpMessage) -> bytes:
    return message.encode()
