"""The replication stream's wire format: batches of items, each an event at a position.

An event item carries a journal record (the same payload codec as the journal, see
docs/journal-format.md) with the event's (epoch, seq) and flags the journal does not need
(durable, auto-delete, exclusive). Control items carry a small JSON map: the start and end of a
snapshot, `ready`, `catch-up`, and the cluster's membership.

A batch is one AMQP message on the replication link: a one-byte marker (`P` plain, `Z` zstd), then
items back to back, each `kind u8, flags u8, epoch u32, seq u64, length u32, payload`. The backup
settles the message once it has applied the batch and journaled what is durable in it; that
settlement is its acknowledgement of the batch's last seq.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import zstandard

from qstore.journal.records import ENQ_FIELDS, RECORD_CLASSES, Enqueue, Record, RecordType
from qstore.zstd import compressor, decompressor

ITEM = struct.Struct(">BBIQI")
COMPRESS_OVER = 16 << 10

DURABLE, AUTO_DELETE, EXCLUSIVE = 0x1, 0x2, 0x4

RT_ENQUEUE, RT_DEQUEUE, RT_DELIVERY = RecordType.ENQUEUE, RecordType.DEQUEUE, RecordType.DELIVERY

# control kinds (event kinds are the journal's record types, 1..10)
SNAPSHOT_BEGIN = 100  # {"position": [epoch, seq]}: replicated state follows, replacing the backup's
SNAPSHOT_END = 101  # the snapshot is complete; the live tail follows
TAIL = 102  # {"from": seq}: the backup's history is kept; events after `from` follow
READY = 103  # the backup holds everything the primary had when it connected
CATCH_UP = 104  # a recovering primary timed this backup out
MEMBERSHIP = 105  # {"members": [{"name", "address", "state"}...]}
TRUNCATE = 106  # {"after": seq}: drop journaled stream records after seq (diverged history)


class StreamError(Exception):
    """A batch that does not decode: the replication link is closed and re-established."""


@dataclass(slots=True)
class Item:
    """One event or control item. `payload` is an event's record packed once (`record.pack()`):
    the journal, every backup's batches and the recent log share it instead of packing again;
    None until first needed where nobody packed it yet (snapshots); a view of its batch where
    a backup decoded an enqueue (see `decode`)."""

    kind: int
    epoch: int
    seq: int
    flags: int = 0
    record: Record | None = None
    data: dict[str, Any] | None = None
    payload: bytes | memoryview | None = None

    @property
    def is_event(self) -> bool:
        return self.record is not None

    @property
    def durable(self) -> bool:
        return bool(self.flags & DURABLE)


def event(
    record: Record, epoch: int, seq: int, flags: int = 0, payload: bytes | None = None
) -> Item:
    return Item(int(record.TYPE), epoch, seq, flags, record, None, payload)


def control(kind: int, epoch: int = 0, seq: int = 0, **data: Any) -> Item:
    return Item(kind, epoch, seq, 0, None, data)


class Squeeze:
    """Whether a sender's batches are worth compressing: one that zstd shrinks by less than
    `1 - WORTH` goes plain (its receiver copies it instead of decompressing it), and the next
    `SKIP` large batches go plain without a try, then one is tried again. Incompressible
    messages (already compressed, encrypted, random) so cost no zstd pass per batch: 0.7 s per
    GiB of catch-up on the primary's event loop, and the backup's decompression."""

    WORTH = 0.9
    SKIP = 15

    def __init__(self) -> None:
        self.skip = 0  # large batches still to send plain without a try

    def compress(self, raw: bytes) -> bytes:
        """`raw` (marker `P`, then the items) as it is sent: `Z` and its zstd, or itself."""
        if self.skip:
            self.skip -= 1
            return raw
        packed = compressor().compress(memoryview(raw)[1:])
        if len(packed) < len(raw) * self.WORTH:
            return b"Z" + packed
        self.skip = self.SKIP
        return raw


def encode(items: list[Item], squeeze: Squeeze | None = None) -> bytes:
    """A batch's bytes: compressed when over COMPRESS_OVER (and, with `squeeze`, when that
    pays: see Squeeze)."""
    parts: list[bytes] = [b"P"]
    add, head = parts.append, ITEM.pack
    for it in items:
        payload = it.payload
        if payload is None:  # a control item, or an event no longer carrying its payload
            r = it.record
            payload = r.pack() if r is not None else json.dumps(it.data).encode()
        add(head(it.kind, it.flags, it.epoch, it.seq, len(payload)))
        add(payload)
    raw = b"".join(parts)
    if len(raw) > COMPRESS_OVER + 1:
        if squeeze is not None:
            return squeeze.compress(raw)
        return b"Z" + compressor().compress(memoryview(raw)[1:])
    return raw


def decode(data: bytes) -> list[Item]:
    """The batch's items; an event item keeps its payload bytes, which a backup journals as
    they are (they are what the primary journaled) instead of packing the record again.

    An enqueue's payload is a view of the batch, not a copy: only its message body is copied
    (the model keeps it), and the journal writes the payload from the view (the batch stays in
    memory until then). A snapshot is nearly all enqueues: one copy of 2 KiB less per message."""
    if not data:
        raise StreamError("empty batch")
    marker, rest = data[:1], memoryview(data)[1:]
    try:
        if marker == b"Z":
            body = decompressor().decompress(rest)
        elif marker == b"P":
            body = bytes(rest)  # the link gives a bytearray: records and bodies are bytes
        else:
            raise StreamError(f"unknown batch marker {marker!r}")
        items: list[Item] = []
        add = items.append
        classes = RECORD_CLASSES
        unpack_from, size = ITEM.unpack_from, ITEM.size
        enq_from, enq_size = ENQ_FIELDS.unpack_from, ENQ_FIELDS.size
        names: dict[bytes, str] = {}  # queue names, decoded once per batch
        view = memoryview(body)
        off, end = 0, len(body)
        while off < end:
            kind, flags, epoch, seq, n = unpack_from(body, off)
            off += size
            last = off + n
            if last > end:
                raise ValueError(f"item at seq {seq} is cut short")
            if kind == RT_ENQUEUE:  # the bulk (a snapshot is nearly all enqueues): Enqueue.unpack
                msgid, prio, expiry, count, qn = enq_from(body, off)  # inlined
                start = off + enq_size
                qb = body[start : start + qn]
                queue = names.get(qb)
                if queue is None:
                    queue = names[qb] = str(qb, "utf-8")
                start += qn
                if start > last:
                    raise ValueError(f"enqueue at seq {seq} is cut short")
                rec = Enqueue(queue, msgid, body[start:last], prio, expiry, count)
                add(Item(kind, epoch, seq, flags, rec, None, view[off:last]))
                off = last
                continue
            payload = body[off:last]
            off = last
            cls = classes.get(kind)
            if cls is not None:
                add(Item(kind, epoch, seq, flags, cls.unpack(payload), None, payload))
            else:
                add(Item(kind, epoch, seq, flags, None, json.loads(payload)))
        return items
    except (struct.error, ValueError, UnicodeDecodeError, zstandard.ZstdError) as exc:
        raise StreamError(f"replication batch does not decode: {exc}") from None
