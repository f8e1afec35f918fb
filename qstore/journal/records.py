"""The journal's record types and their byte codec (format version 1, see docs/journal-format.md).

A record is what changed; an `Entry` is a record as stored: its local sequence number (the LMDB
key), the epoch and origin sequence number of the event in the cluster's ordered stream, and flags.
Encoding is split in two so that the expensive part (payload packing, zstd) runs in the appender's
thread and only the header and crc32c are computed by the single writer thread.
"""

from __future__ import annotations

import enum
import json
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import crc32c
import zstandard

from qstore.zstd import compressor, decompressor

from .errors import CorruptRecord, UnsupportedFormat

FORMAT_VERSION = 2  # the newest record version this code reads and writes
# A record is written with the version that introduced its type, so that a journal holding only
# version-1 types stays readable by version-1 code (the history record came with version 2).
FIRST_VERSION = 1
HISTORY_VERSION = 2
# version u8, type u8, flags u16, epoch u32, origin seq u64, crc32c u32
HEADER = struct.Struct(">BBHIQI")
_HEAD16 = struct.Struct(">BBHIQ")  # the header up to the crc, which covers key + these + payload
KEY = struct.Struct(">Q")
COMPRESS_THRESHOLD = 4096

FLAG_COMPRESSED = 0x1
FLAG_REPLICA = 0x2  # applied from a primary's stream (origin seq is the primary's)
KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_REPLICA


class RecordType(enum.IntEnum):
    QUEUE_DECLARE = 1
    QUEUE_DELETE = 2
    EXCHANGE_DECLARE = 3
    EXCHANGE_DELETE = 4
    BIND = 5
    UNBIND = 6
    ENQUEUE = 7
    DEQUEUE = 8
    DELIVERY = 9
    EPOCH = 10
    HISTORY = 11

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> RecordType:
        """Accept `enqueue`, `queue-declare` or `QUEUE_DECLARE`."""
        try:
            return cls[text.upper().replace("-", "_")]
        except KeyError:
            names = ", ".join(t.label for t in cls)
            raise ValueError(f"unknown record type {text!r} (one of: {names})") from None


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def _pack_str(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"name longer than 65535 bytes: {text[:40]!r}...")
    return _U16.pack(len(raw)) + raw


def _unpack_str(buf: bytes, off: int) -> tuple[str, int]:
    (n,) = _U16.unpack_from(buf, off)
    off += 2
    return str(buf[off : off + n], "utf-8"), off + n


def _pack_args(args: dict[str, Any]) -> bytes:
    raw = json.dumps(args, sort_keys=True, separators=(",", ":")).encode() if args else b""
    return _U32.pack(len(raw)) + raw


def _unpack_args(buf: bytes, off: int) -> tuple[dict[str, Any], int]:
    (n,) = _U32.unpack_from(buf, off)
    off += 4
    return (json.loads(bytes(buf[off : off + n])) if n else {}), off + n


@dataclass(slots=True)
class QueueDeclare:
    name: str
    uuid: uuid.UUID
    arguments: dict[str, Any] = field(default_factory=dict)
    TYPE: ClassVar[RecordType] = RecordType.QUEUE_DECLARE

    def pack(self) -> bytes:
        return self.uuid.bytes + _pack_str(self.name) + _pack_args(self.arguments)

    @classmethod
    def unpack(cls, buf: bytes) -> QueueDeclare:
        name, off = _unpack_str(buf, 16)
        args, _ = _unpack_args(buf, off)
        return cls(name, uuid.UUID(bytes=bytes(buf[:16])), args)


@dataclass(slots=True)
class QueueDelete:
    name: str
    uuid: uuid.UUID
    TYPE: ClassVar[RecordType] = RecordType.QUEUE_DELETE

    def pack(self) -> bytes:
        return self.uuid.bytes + _pack_str(self.name)

    @classmethod
    def unpack(cls, buf: bytes) -> QueueDelete:
        return cls(_unpack_str(buf, 16)[0], uuid.UUID(bytes=bytes(buf[:16])))


@dataclass(slots=True)
class ExchangeDeclare:
    name: str
    uuid: uuid.UUID
    type: str
    arguments: dict[str, Any] = field(default_factory=dict)
    TYPE: ClassVar[RecordType] = RecordType.EXCHANGE_DECLARE

    def pack(self) -> bytes:
        return (
            self.uuid.bytes
            + _pack_str(self.name)
            + _pack_str(self.type)
            + _pack_args(self.arguments)
        )

    @classmethod
    def unpack(cls, buf: bytes) -> ExchangeDeclare:
        name, off = _unpack_str(buf, 16)
        kind, off = _unpack_str(buf, off)
        args, _ = _unpack_args(buf, off)
        return cls(name, uuid.UUID(bytes=bytes(buf[:16])), kind, args)


@dataclass(slots=True)
class ExchangeDelete:
    name: str
    uuid: uuid.UUID
    TYPE: ClassVar[RecordType] = RecordType.EXCHANGE_DELETE

    def pack(self) -> bytes:
        return self.uuid.bytes + _pack_str(self.name)

    @classmethod
    def unpack(cls, buf: bytes) -> ExchangeDelete:
        return cls(_unpack_str(buf, 16)[0], uuid.UUID(bytes=bytes(buf[:16])))


@dataclass(slots=True)
class Bind:
    exchange: str
    queue: str
    key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    TYPE: ClassVar[RecordType] = RecordType.BIND

    def pack(self) -> bytes:
        return (
            _pack_str(self.exchange)
            + _pack_str(self.queue)
            + _pack_str(self.key)
            + _pack_args(self.arguments)
        )

    @classmethod
    def unpack(cls, buf: bytes) -> Bind:
        exchange, off = _unpack_str(buf, 0)
        queue, off = _unpack_str(buf, off)
        key, off = _unpack_str(buf, off)
        args, _ = _unpack_args(buf, off)
        return cls(exchange, queue, key, args)


@dataclass(slots=True)
class Unbind:
    exchange: str
    queue: str
    key: str = ""
    TYPE: ClassVar[RecordType] = RecordType.UNBIND

    def pack(self) -> bytes:
        return _pack_str(self.exchange) + _pack_str(self.queue) + _pack_str(self.key)

    @classmethod
    def unpack(cls, buf: bytes) -> Unbind:
        exchange, off = _unpack_str(buf, 0)
        queue, off = _unpack_str(buf, off)
        return cls(exchange, queue, _unpack_str(buf, off)[0])


# msgid u64, priority u8, expiry ms u64 (0: never), delivery count u32, queue name length u16
_ENQ = ENQ_FIELDS = struct.Struct(">QBQIH")


@dataclass(slots=True)
class Enqueue:
    """A durable message put on a queue; `body` is the message's AMQP encoding as received."""

    queue: str
    msgid: int
    body: bytes
    priority: int = 4
    expiry: int = 0
    delivery_count: int = 0
    TYPE: ClassVar[RecordType] = RecordType.ENQUEUE

    def pack(self) -> bytes:
        q = self.queue.encode()
        head = _ENQ.pack(self.msgid, self.priority, self.expiry, self.delivery_count, len(q))
        return b"".join((head, q, self.body))

    @classmethod
    def unpack(cls, buf: bytes) -> Enqueue:
        msgid, prio, expiry, count, n = _ENQ.unpack_from(buf, 0)
        off = _ENQ.size + n
        return cls(str(buf[_ENQ.size : off], "utf-8"), msgid, bytes(buf[off:]), prio, expiry, count)


_MSG = struct.Struct(">QH")


@dataclass(slots=True)
class Dequeue:
    queue: str
    msgid: int
    TYPE: ClassVar[RecordType] = RecordType.DEQUEUE

    def pack(self) -> bytes:
        q = self.queue.encode()
        return _MSG.pack(self.msgid, len(q)) + q

    @classmethod
    def unpack(cls, buf: bytes) -> Dequeue:
        msgid, n = _MSG.unpack_from(buf, 0)
        return cls(str(buf[_MSG.size : _MSG.size + n], "utf-8"), msgid)


_DLV = struct.Struct(">QIH")


@dataclass(slots=True)
class Delivery:
    """A message's delivery count changed (it was released or its consumer died)."""

    queue: str
    msgid: int
    delivery_count: int
    TYPE: ClassVar[RecordType] = RecordType.DELIVERY

    def pack(self) -> bytes:
        q = self.queue.encode()
        return _DLV.pack(self.msgid, self.delivery_count, len(q)) + q

    @classmethod
    def unpack(cls, buf: bytes) -> Delivery:
        msgid, count, n = _DLV.unpack_from(buf, 0)
        return cls(str(buf[_DLV.size : _DLV.size + n], "utf-8"), msgid, count)


@dataclass(slots=True)
class Epoch:
    """A promotion: epoch `number`, led by the broker whose node id is `node`."""

    number: int
    node: uuid.UUID
    TYPE: ClassVar[RecordType] = RecordType.EPOCH

    def pack(self) -> bytes:
        return _U32.pack(self.number) + self.node.bytes

    @classmethod
    def unpack(cls, buf: bytes) -> Epoch:
        return cls(_U32.unpack_from(buf, 0)[0], uuid.UUID(bytes=bytes(buf[4:20])))


_EPOCH_ID = struct.Struct(">I16sQ")  # number, node id, first origin seq


@dataclass(slots=True)
class History:
    """A backup's stream history replaced by a snapshot: from this record on, its epochs are
    `epochs` (number, node id, first origin seq) and its position is the record's own
    (epoch, origin). A snapshot starts with an empty one at (0, 0), so that a backup stopped
    halfway through asks for a snapshot again, and ends with the primary's at its position."""

    epochs: list[tuple[int, uuid.UUID, int]] = field(default_factory=list)
    TYPE: ClassVar[RecordType] = RecordType.HISTORY

    def pack(self) -> bytes:
        return _U32.pack(len(self.epochs)) + b"".join(
            _EPOCH_ID.pack(n, node.bytes, origin) for n, node, origin in self.epochs
        )

    @classmethod
    def unpack(cls, buf: bytes) -> History:
        (count,) = _U32.unpack_from(buf, 0)
        if len(buf) != 4 + count * _EPOCH_ID.size:
            raise ValueError(f"{len(buf)} bytes for {count} epochs")
        epochs = []
        for i in range(count):
            n, node, origin = _EPOCH_ID.unpack_from(buf, 4 + i * _EPOCH_ID.size)
            epochs.append((n, uuid.UUID(bytes=node), origin))
        return cls(epochs)


Record = (
    QueueDeclare
    | QueueDelete
    | ExchangeDeclare
    | ExchangeDelete
    | Bind
    | Unbind
    | Enqueue
    | Dequeue
    | Delivery
    | Epoch
    | History
)
RECORD_CLASSES: dict[RecordType, Any] = {
    cls.TYPE: cls
    for cls in (
        QueueDeclare,
        QueueDelete,
        ExchangeDeclare,
        ExchangeDelete,
        Bind,
        Unbind,
        Enqueue,
        Dequeue,
        Delivery,
        Epoch,
        History,
    )
}


def record_version(rtype: int) -> int:
    """The format version a record of this type is written with (see FORMAT_VERSION)."""
    return HISTORY_VERSION if rtype == RecordType.HISTORY else FIRST_VERSION


@dataclass(slots=True)
class Entry:
    """A record as the journal holds it."""

    seq: int  # local LMDB key
    epoch: int  # epoch number of the event
    origin: int  # sequence number of the event in its primary's stream
    flags: int
    record: Record
    size: int = 0  # bytes stored (header + payload)

    @property
    def type(self) -> RecordType:
        return self.record.TYPE

    @property
    def position(self) -> tuple[int, int]:
        return (self.epoch, self.origin)


@dataclass(slots=True)
class Prepared:
    """A record packed (and maybe compressed) by its appender, waiting for the writer's header."""

    type: int
    flags: int
    payload: bytes | memoryview  # a view: a backup's record as its primary's batch holds it
    record: Record
    epoch: int | None
    origin: int | None


def prepare(
    record: Record,
    epoch: int | None = None,
    origin: int | None = None,
    replica: bool = False,
    threshold: int = COMPRESS_THRESHOLD,
    payload: bytes | memoryview | None = None,
) -> Prepared:
    """Pack a record's payload; zstd it when it is over `threshold` and compression pays.

    `payload`: `record.pack()` already made by the caller (a broker packs each event once for
    the journal and the replication stream; a backup has the primary's bytes).
    """
    if payload is None:
        payload = record.pack()
    flags = FLAG_REPLICA if replica else 0
    if len(payload) > threshold:  # zstd only where it can pay (level 1: about 5 us per KiB)
        packed = compressor().compress(payload)
        if len(packed) < len(payload):
            payload, flags = packed, flags | FLAG_COMPRESSED
    return Prepared(record.TYPE, flags, payload, record, epoch, origin)


def seal(seq: int, p: Prepared, epoch: int, origin: int) -> tuple[bytes, bytes]:
    """Return (key, value) for a prepared record: the header with its crc32c, then the payload."""
    key = KEY.pack(seq)
    head = _HEAD16.pack(record_version(p.type), p.type, p.flags, epoch, origin)
    crc = crc32c.crc32c(p.payload, crc32c.crc32c(key + head))
    return key, b"".join((head, _U32.pack(crc), p.payload))


def read_header(value: bytes) -> tuple[int, int, int, int, int, int]:
    """(version, type, flags, epoch, origin, crc) without checking anything."""
    return HEADER.unpack_from(value, 0)


def check(seq: int, value: bytes) -> tuple[int, int, int, int, bytes | memoryview]:
    """Verify one stored value; return (type, flags, epoch, origin, payload) or raise.

    The payload comes back as a memoryview of `value` (no copy) unless it was decompressed.
    """
    if len(value) < HEADER.size:
        raise CorruptRecord(seq, f"value is {len(value)} bytes, shorter than the header")
    version, rtype, flags, epoch, origin, crc = HEADER.unpack_from(value, 0)
    mv = memoryview(value)
    stored = mv[HEADER.size :]
    want = crc32c.crc32c(stored, crc32c.crc32c(mv[:16], crc32c.crc32c(KEY.pack(seq))))
    if want != crc:
        raise CorruptRecord(seq, f"crc32c mismatch (stored {crc:#010x}, computed {want:#010x})")
    if version > FORMAT_VERSION:
        raise UnsupportedFormat(
            f"record seq={seq} has format version {version}, newer than this code"
        )
    if rtype not in RECORD_CLASSES:
        raise CorruptRecord(seq, f"unknown record type {rtype}")
    if flags & ~KNOWN_FLAGS:
        raise CorruptRecord(seq, f"unknown flags {flags:#x}")
    if flags & FLAG_COMPRESSED:
        try:
            return rtype, flags, epoch, origin, decompressor().decompress(stored)
        except zstandard.ZstdError as exc:
            raise CorruptRecord(seq, f"zstd payload does not decompress: {exc}") from None
    return rtype, flags, epoch, origin, stored


def decode(seq: int, value: bytes) -> Entry:
    """Verify and decode one stored value into an `Entry`; damage raises `CorruptRecord`."""
    rtype, flags, epoch, origin, payload = check(seq, value)
    try:
        record = RECORD_CLASSES[rtype].unpack(payload)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise CorruptRecord(
            seq, f"{RecordType(rtype).label} payload does not decode: {exc}"
        ) from None
    return Entry(seq, epoch, origin, flags, record, len(value))


# An enqueue's header and fixed fields, read in one call (the bulk of a journal)
_ENQ_HEAD = struct.Struct(">" + HEADER.format.lstrip(">") + _ENQ.format.lstrip(">"))
_ENQUEUE = int(RecordType.ENQUEUE)


def damage(key: bytes, value: bytes) -> str | None:
    """Why the value stored under `key` does not verify, or None: exactly what `decode` checks,
    without building the record for the bulk of a journal (an uncompressed enqueue whose fields
    fit), so that scanning a whole journal costs little more than reading it."""
    if len(value) >= _ENQ_HEAD.size and value[1] == _ENQUEUE:
        version, _t, flags, _e, _o, crc, _m, _p, _x, _c, qn = _ENQ_HEAD.unpack_from(value, 0)
        start = _ENQ_HEAD.size
        if not flags and version <= FORMAT_VERSION and len(value) >= start + qn:
            mv = memoryview(value)
            if crc == crc32c.crc32c(mv[HEADER.size :], crc32c.crc32c(mv[:16], crc32c.crc32c(key))):
                try:
                    str(mv[start : start + qn], "utf-8")
                except UnicodeDecodeError:
                    pass  # decode() names it
                else:
                    return None
    try:
        decode(KEY.unpack(key)[0], value)
    except CorruptRecord as exc:
        return exc.reason
    except UnsupportedFormat as exc:
        return str(exc)
    return None
