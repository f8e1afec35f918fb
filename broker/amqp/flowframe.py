"""Reading and writing the few AMQP frames the broker looks at in proton's own output.

proton-C never sends a `flow` for a sender link on its own, except to answer a drain, so a
receiver that only refills its credit when a flow arrives (proton python's `prefetch=1`) waits
forever once it has used its last credit (senderflow.py). We make proton write a session flow
(its session fields are right by construction) and append the link's fields to it here. To know
a link's handle and channel, which proton's API does not give, we read them from our own
`attach` frame.

The input is always proton's output as it left the transport: whole frames (proton frames
everything before `pending()` shows it), and protocol headers between them. Performative
descriptors are proton's small ulongs (0x53); anything else is not one of ours and is skipped.
Plain functions on bytes, no state.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from cproton_ffi import ffi, lib
from proton import Data

from .codec import _FIXED, _SIZE8, _SIZE32  # the type-code tables of the message decoder

_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")
ATTACH, FLOW = 0x12, 0x13
_PROTOCOL_HEADER = b"AMQP"
_SESSION_FIELDS = 4  # next-incoming-id, incoming-window, next-outgoing-id, outgoing-window
_NULL = b"\x40"


class Frame:
    """Where one frame is in a buffer: `data[start:end]`, on `channel`, performative `code`
    (None for an empty frame or one whose descriptor is not a small ulong)."""

    __slots__ = ("body", "channel", "code", "end", "start")

    def __init__(self, start: int, end: int, channel: int, body: int, code: int | None) -> None:
        self.start, self.end, self.channel, self.body, self.code = start, end, channel, body, code


def frames(data: bytes) -> Iterator[Frame]:
    """The frames of `data`, which starts at a frame boundary. Protocol headers between frames
    (proton's own SASL layer writes its header, frames, then the AMQP header) are skipped; a
    frame never starts with "AMQP" (it would be over 1 GiB)."""
    i, n = 0, len(data)
    while i + 8 <= n:
        if data[i : i + 4] == _PROTOCOL_HEADER:
            i += 8
            continue
        size = _U32.unpack_from(data, i)[0]
        if size < 8:
            raise ValueError(f"byte {i}: a frame of {size} bytes")
        end = i + size
        body = i + 4 * data[i + 4]
        code = None
        amqp = data[i + 5] == 0  # not a SASL frame (type 1)
        if amqp and body + 3 <= end and data[body] == 0 and data[body + 1] == 0x53:
            code = data[body + 2]
        yield Frame(i, end, _U16.unpack_from(data, i + 6)[0], body, code)
        i = end


def _end(b: bytes, i: int) -> int:
    """Where the encoded value at `i` ends."""
    c = b[i]
    w = _FIXED.get(c)
    if w is not None:
        return i + 1 + w
    if c in _SIZE8:
        return i + 2 + b[i + 1]
    if c in _SIZE32:
        return i + 5 + _U32.unpack_from(b, i + 1)[0]
    if c == 0:  # described: descriptor, then value
        return _end(b, _end(b, i + 1))
    raise ValueError(f"type code 0x{c:02x} at byte {i}")


def _fields(b: bytes, i: int) -> list[bytes]:
    """The encoded elements of the list at `i`."""
    c = b[i]
    if c == 0x45:
        return []
    if c == 0xC0:
        count, j = b[i + 2], i + 3
    elif c == 0xD0:
        count, j = _U32.unpack_from(b, i + 5)[0], i + 9
    else:
        raise ValueError(f"byte {i}: not a list (0x{c:02x})")
    out = []
    for _ in range(count):
        k = _end(b, j)
        out.append(bytes(b[j:k]))
        j = k
    return out


def session_fields(data: bytes, frame: Frame) -> tuple[bytes, bool]:
    """A flow frame's four session fields as encoded, and whether it names a link (a handle)."""
    i = frame.body + 3
    if data[i] == 0xC0 and data[i + 2] == _SESSION_FIELDS:  # proton's session flow: as it is
        return bytes(data[i + 3 : i + 2 + data[i + 1]]), False
    fields = _fields(data, i)
    session = fields[:_SESSION_FIELDS]
    session += [_NULL] * (_SESSION_FIELDS - len(session))
    has_handle = len(fields) > _SESSION_FIELDS and fields[_SESSION_FIELDS] != _NULL
    return b"".join(session), has_handle


def _uint(v: int) -> bytes:
    if v == 0:
        return b"\x43"
    if v < 256:
        return bytes((0x52, v))
    return b"\x70" + _U32.pack(v & 0xFFFFFFFF)


def link_flow(
    channel: int, session: bytes, handle: int, delivery_count: int, credit: int, drain: bool
) -> bytes:
    """A whole flow frame: `session` (as `session_fields` gives them) then the link's handle,
    delivery-count, link-credit, available (left null, as proton does) and drain. At most 37
    bytes of fields: always a list8."""
    fields = b"".join(
        (
            session,
            _uint(handle),
            _uint(delivery_count),
            _uint(credit),
            _NULL,
            b"\x41" if drain else b"\x42",
        )
    )
    performative = b"\x00\x53\x13\xc0" + bytes((len(fields) + 1, _SESSION_FIELDS + 5)) + fields
    return _U32.pack(8 + len(performative)) + b"\x02\x00" + _U16.pack(channel) + performative


def add_link_flows(data: bytes, links: dict[int, list[tuple[int, int, bool]]]) -> bytes:
    """`data` with a link flow (link-credit 0) for each (handle, delivery-count, drain) of
    `links` (by channel) where that channel's first flow frame is: a session flow is replaced
    by them, a link's flow is kept and they follow it. Either way they carry its session
    fields, which are exact at that point of the stream. The channels served leave `links`."""
    parts: list[bytes] = []
    last = 0
    for f in frames(data):
        if f.code != FLOW or f.channel not in links:
            continue
        session, has_handle = session_fields(data, f)
        parts.append(data[last : f.end if has_handle else f.start])
        for handle, count, drain in links.pop(f.channel):
            parts.append(link_flow(f.channel, session, handle, count, 0, drain))
        last = f.end
        if not links:
            break
    if not parts:
        return data
    parts.append(data[last:])
    return b"".join(parts)


def attach_fields(data: bytes, frame: Frame) -> tuple[str, int, bool, int]:
    """An attach frame's name, handle, role (True: receiver) and initial-delivery-count.
    Decoded by proton (attaches are rare), field by field: our attach echoes the peer's name,
    source and target, which may hold what proton's Python cannot read (text that is not UTF-8,
    which its C codec takes). The termini are skipped; the name is read whatever its bytes (a
    name proton's Python cannot give back as it is never matches a link's: such a link is not
    learned, and so gets no prefetch-1 flows)."""
    d = Data()
    d.decode(bytes(data[frame.body : frame.end]))
    d.rewind()
    d.next()
    d.enter()  # the described performative: its descriptor, then the list of fields
    d.next()
    d.next()
    d.enter()
    fields: list[Any] = []
    for i in range(10):
        kind = d.next()
        if kind is None:
            break
        if i == 0 and kind in (Data.STRING, Data.SYMBOL):
            get = lib.pn_data_get_string if kind == Data.STRING else lib.pn_data_get_symbol
            raw = get(d._data)
            fields.append(ffi.unpack(raw.start, raw.size).decode("utf-8", "replace"))
        else:
            fields.append(d.get_object() if i in (0, 1, 2, 9) else None)
    fields += [None] * (10 - len(fields))
    return str(fields[0]), int(fields[1]), bool(fields[2]), int(fields[9] or 0)
