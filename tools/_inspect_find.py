"""`qstore-journal find`: where is my message? Every queue of one or several data directories,
searched by what the application knows (_inspect_query.py), with what each journal still holds
of the message's life.

One streaming pass per journal, memory bounded: nothing is kept but the hits (at most `limit` per
journal), the queue names and the epochs. Most enqueues are passed over after one look at their
bytes (`Query.prefilter`); only candidates are verified (crc32c) and decoded. Dequeue and
delivery records are parsed only when their msgid is one of a hit's.

A message is followed by its queue, the broker's msgid and its position, which a backup's journal
shares with its primary's (the stream carries them). A journal that holds no record of a message
found in another is explained by its epochs and position: past the message's in the same
history, the message was there and has been compacted away since (consumed, or its queue
deleted); before it, it never got there; in another history (another leader for that epoch, or
a later epoch begun before that position), it was never part of this node's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qstore.journal import (
    CorruptRecord,
    Delivery,
    Dequeue,
    Enqueue,
    JournalReader,
    QueueDeclare,
    QueueDelete,
    RecordType,
    UnsupportedFormat,
)
from qstore.journal.records import FLAG_COMPRESSED, HEADER, KEY, decode, read_header

from ._inspect_message import MessageView, Undecodable, decode_message, message_json
from ._inspect_query import Query

ENQUEUE, DEQUEUE = int(RecordType.ENQUEUE), int(RecordType.DEQUEUE)
DELIVERY = int(RecordType.DELIVERY)
QUEUE_DECLARE, QUEUE_DELETE = int(RecordType.QUEUE_DECLARE), int(RecordType.QUEUE_DELETE)
EPOCH = int(RecordType.EPOCH)
_MSGID = struct.Struct(">Q")  # the first payload field of enqueue, dequeue and delivery records


# -- one journal ------------------------------------------------------------------------------


@dataclass
class Hit:
    """A matching message in one journal, and its life there."""

    queue: str
    msgid: int
    seq: int
    epoch: int
    origin: int
    message: MessageView
    delivery_count: int
    deliveries: int = 0  # delivery records seen
    state: str = "queued"  # queued, dequeued, queue-deleted, replaced, no-queue
    end: tuple[int, int, int] | None = None  # (seq, epoch, origin) of the record that ended it

    def life(self) -> str:
        text = f"enqueued at seq {self.seq}"
        if self.deliveries or self.delivery_count:
            times = "time" if self.delivery_count == 1 else "times"
            text += f", delivered {self.delivery_count} {times}"
        if self.state == "queued":
            return text + ", still queued"
        if self.state == "no-queue":
            return text + ", on a queue this journal does not hold"
        seq, epoch, origin = self.end  # type: ignore[misc]
        at = f"at seq {seq} (epoch {epoch}, origin {origin})"
        return (
            text
            + {
                "dequeued": f", dequeued {at}",
                "queue-deleted": f", gone with its queue {at}",
                "replaced": f", replaced by a new enqueue {at}",
            }[self.state]
        )

    def json(self) -> dict[str, Any]:
        end = None
        if self.end is not None:
            end = dict(zip(("seq", "epoch", "origin"), self.end, strict=True))
        return {
            "queue": self.queue,
            "msgid": self.msgid,
            "seq": self.seq,
            "epoch": self.epoch,
            "origin": self.origin,
            "state": self.state,
            "delivery_count": self.delivery_count,
            "deliveries": self.deliveries,
            "ended_by": end,
            "message": message_json(self.message),
        }


@dataclass
class NodeResult:
    name: str  # how the node is called in the output: its data directory's name
    data_dir: str
    node_id: str
    hits: list[Hit]
    more: int  # matches beyond the limit, not listed
    queues: set[str]  # queues the journal holds at its end
    position: tuple[int, int]
    damaged: int  # damaged records met (skipped)
    epochs: list[tuple[int, str, int]]  # (number, leader's node id, first origin), in order

    def leader(self, epoch: int) -> str | None:
        return next((n for e, n, _ in self.epochs if e == epoch), None)


def search(
    reader: JournalReader,
    name: str,
    data_dir: str,
    q: Query,
    *,
    limit: int,
    progress: Callable[[int], None] | None = None,
) -> NodeResult:
    """One pass over `reader`'s journal (see the module)."""
    hits: list[Hit] = []
    watch: dict[tuple[str, int], Hit] = {}
    ids: set[int] = set()  # msgids being watched, for a cheap first look at a record
    queues: set[str] = set()
    epochs: list[tuple[int, str, int]] = []
    more = damaged = 0
    head, maybe, msgid_at = HEADER.size, q.prefilter(), _MSGID.unpack_from
    short = head + _MSGID.size

    def decoded(seq: int, value: bytes) -> Any:
        nonlocal damaged
        try:
            return decode(seq, value)
        except (CorruptRecord, UnsupportedFormat):
            damaged += 1
            return None

    for key, value in _records(reader, progress):
        if len(value) < short:  # too short for any record naming a message: damaged or unbind
            decoded(KEY.unpack(key)[0], value)
            continue
        t = value[1]
        if t == ENQUEUE:
            compressed = value[3] & FLAG_COMPRESSED
            watched = ids and (compressed or msgid_at(value, head)[0] in ids)
            candidate = compressed or maybe(value)
            if not (watched or candidate):
                continue  # the bulk of a journal: one byte compared and one bytes.find
            e = decoded(KEY.unpack(key)[0], value)
            if e is None or not isinstance(e.record, Enqueue):
                continue
            r = e.record
            if watched and (old := watch.pop((r.queue, r.msgid), None)):
                _end(old, "replaced", e, ids, watch)
            if not candidate or (compressed and not maybe(r.body)):
                continue
            if q.queue is not None and r.queue != q.queue:
                continue
            try:
                v = decode_message(r.body)
            except Undecodable:
                continue
            if not q.matches(v):
                continue
            if len(hits) >= limit:
                more += 1
                continue
            hit = Hit(r.queue, r.msgid, e.seq, e.epoch, e.origin, v, r.delivery_count)
            if r.queue not in queues:
                hit.state = "no-queue"
            else:
                watch[(r.queue, r.msgid)] = hit
                ids.add(r.msgid)
            hits.append(hit)
        elif t in (DEQUEUE, DELIVERY):
            if not ids or msgid_at(value, head)[0] not in ids:
                continue
            e = decoded(KEY.unpack(key)[0], value)
            if e is None:
                continue
            r = e.record
            hit = watch.get((r.queue, r.msgid))
            if hit is None:
                continue
            if isinstance(r, Delivery):
                hit.deliveries += 1
                hit.delivery_count = r.delivery_count
            elif isinstance(r, Dequeue):
                del watch[(r.queue, r.msgid)]
                _end(hit, "dequeued", e, ids, watch)
        elif t in (QUEUE_DECLARE, QUEUE_DELETE):
            e = decoded(KEY.unpack(key)[0], value)
            if e is None:
                continue
            r = e.record
            if isinstance(r, QueueDelete) and r.name not in queues:
                continue  # a delete for another incarnation: the state ignores it too
            for k in [k for k in watch if k[0] == r.name]:  # a re-declare drops the old queue
                _end(watch.pop(k), "queue-deleted", e, ids, watch)
            if isinstance(r, QueueDeclare):
                queues.add(r.name)
            else:
                queues.discard(r.name)
        elif t == EPOCH:
            e = decoded(KEY.unpack(key)[0], value)
            if e is not None:
                epochs.append((e.record.number, str(e.record.node), e.origin))
    node = str(reader.node_id)
    pos = _position(reader)
    return NodeResult(name, data_dir, node, hits, more, queues, pos, damaged, epochs)


def _records(
    reader: JournalReader, progress: Callable[[int], None] | None
) -> Iterator[tuple[bytes, bytes]]:
    for chunk in reader.chunks(progress=progress):
        yield from chunk


def _end(hit: Hit, state: str, e: Any, ids: set[int], watch: dict[tuple[str, int], Hit]) -> None:
    hit.state, hit.end = state, (e.seq, e.epoch, e.origin)
    if not any(k[1] == hit.msgid for k in watch):
        ids.discard(hit.msgid)


def _position(reader: JournalReader) -> tuple[int, int]:
    """(epoch, origin) of the journal's last record that has one: read from the end."""
    with reader.env.begin(db=reader.records) as txn, txn.cursor() as cur:
        if not cur.last():
            return (0, 0)
        for _key, value in cur.iterprev():
            if len(value) >= HEADER.size:
                _v, _t, _f, epoch, origin, _c = read_header(value)
                if origin:
                    return (epoch, origin)
    return (0, 0)


# -- across journals --------------------------------------------------------------------------


@dataclass
class Absent:
    """A message found on another node, of which this node's journal holds nothing."""

    node: NodeResult
    queue: str
    msgid: int
    why: str  # compacted, not-reached, diverged, no-queue, unknown
    detail: str

    def text(self) -> str:
        e, o = self.node.position
        return {
            "compacted": f"not here any more: compacted away ({self.detail})",
            "not-reached": f"not here: never got here ({self.detail})",
            "diverged": f"not here: another history ({self.detail})",
            "no-queue": "not here: this journal has no queue of that name",
            "unknown": f"not here (this journal is at ({e}, {o}))",
        }[self.why]


def placed(other: NodeResult, epoch: int, origin: int, leader: str | None) -> tuple[str, str]:
    """Why `other` holds no record at position (epoch, origin) (of the epoch `leader` led), as
    (why, detail): its journal went past that position in the same history (the record was
    compacted away since), ends before it, or holds another history there."""
    eps = other.epochs
    e, o = other.position
    if not eps:
        return "unknown", ""
    i = next((k for k, ep in enumerate(eps) if ep[0] == epoch), None)
    if i is None:
        if eps[-1][0] < epoch:
            return "not-reached", f"this journal ends at ({e}, {o}), in epoch {eps[-1][0]}"
        return "diverged", f"this journal never was in epoch {epoch}"
    if leader is not None and eps[i][1] != leader:
        return "diverged", f"its epoch {epoch} was led by {eps[i][1]}"
    if i + 1 < len(eps):
        nxt = eps[i + 1]
        if origin < nxt[2]:
            return "compacted", f"this journal went past ({epoch}, {origin})"
        return "diverged", f"this journal left epoch {epoch} at origin {nxt[2]} for epoch {nxt[0]}"
    if o >= origin:
        return "compacted", f"this journal went past ({epoch}, {origin}): it is at ({e}, {o})"
    return "not-reached", f"this journal ends at ({e}, {o}), before ({epoch}, {origin})"


def absences(results: list[NodeResult]) -> list[tuple[Hit, list[Absent]]]:
    """For each message found somewhere, the nodes whose journals hold no record of it, with the
    reason their journals give. A message is its queue, msgid and position: a backup journals
    its primary's enqueue with all three, and a diverged node may have used the msgid for
    another message."""
    out: list[tuple[Hit, list[Absent]]] = []
    seen: set[tuple[str, int, int, int]] = set()
    held = [{(h.queue, h.msgid, h.epoch, h.origin) for h in r.hits} for r in results]
    for r in results:
        for h in r.hits:
            k = (h.queue, h.msgid, h.epoch, h.origin)
            if k in seen:
                continue
            seen.add(k)
            missing = []
            for other, keys in zip(results, held, strict=True):
                if k in keys or other.more:
                    continue  # (a node past its limit may hold it unlisted)
                if h.queue not in other.queues:
                    why, detail = "no-queue", ""
                else:
                    why, detail = placed(other, h.epoch, h.origin, r.leader(h.epoch))
                missing.append(Absent(other, h.queue, h.msgid, why, detail))
            if missing:
                out.append((h, missing))
    return out


def node_names(dirs: list[str]) -> list[str]:
    """Each data directory's name, or its whole path where two share a name."""
    names = [Path(d).name or d for d in dirs]
    return [d if names.count(n) > 1 else n for d, n in zip(dirs, names, strict=True)]
