"""`qstore-journal diff`: where two nodes' histories part, or how their replicated state differs.

Records are matched by position (epoch, origin seq), never by local seq: a backup keys its journal
with its own seqs but keeps the primary's origin seq with each replicated record. Both journals
are walked in origin order, skipping positions only one side still holds (compaction removes
cancelled records on each node on its own schedule). Epoch records are never compacted, so the
epoch boundaries are also compared directly: a divergence is found at the seq where one node
started a new epoch even when the other node's record at that seq has since been compacted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from qstore.journal import Entry, JournalReader
from qstore.journal.records import RecordType, check, decode

from ._inspect_common import Progress, damage_is_a_finding, entry_text

MAX_REASONS = 5


@dataclass(slots=True)
class Outline:
    """What one cheap pass over a journal tells: its epochs and whether origins only grow."""

    epochs: list[tuple[int, int, uuid.UUID]] = field(default_factory=list)  # (origin, number, node)
    nodes: dict[int, uuid.UUID] = field(default_factory=dict)
    last_origin: int = 0
    ordered: bool = True

    def cover(self, origin: int) -> tuple[int, uuid.UUID] | None:
        """The epoch (number, node) whose record is the last at or before `origin`."""
        found = None
        for o, number, node in self.epochs:
            if o > origin:
                break
            found = (number, node)
        return found


def outline(reader: JournalReader, progress: Progress) -> Outline:
    """Epochs and origin order, from verified headers (a damaged record ends the diff here)."""
    out = Outline()
    prev = -1
    for seq, value in reader.raw(progress=progress):
        rtype, _flags, _epoch, origin, _payload = check(seq, value)  # damage: CorruptRecord
        if origin <= prev:
            out.ordered = False
        prev = origin
        out.last_origin = max(out.last_origin, origin)
        if rtype == RecordType.EPOCH:
            e = decode(seq, value)
            out.epochs.append((e.origin, e.record.number, e.record.node))  # type: ignore[union-attr]
            out.nodes[e.record.number] = e.record.node  # type: ignore[union-attr]
        elif rtype == RecordType.HISTORY:  # a snapshot: its epochs replace those before
            e = decode(seq, value)
            out.epochs = [(o, n, node) for n, node, o in e.record.epochs]  # type: ignore[union-attr]
            out.nodes.update((n, node) for _, n, node in out.epochs)
    out.epochs.sort(key=lambda t: t[0])
    return out


def same_epoch(a: tuple[int, uuid.UUID | None], b: tuple[int, uuid.UUID | None]) -> bool:
    """Epoch identity: number and node; a node not on record (no epoch record) is not a conflict."""
    return a[0] == b[0] and (a[1] is None or b[1] is None or a[1] == b[1])


def epoch_text(number: int, node: uuid.UUID | None) -> str:
    return f"epoch {number} of node {node}" if node else f"epoch {number} (no epoch record)"


@dataclass(slots=True)
class Side:
    name: str
    reader: JournalReader
    outline: Outline
    progress: Progress | None = None

    def identity(self, e: Entry) -> tuple[int, uuid.UUID | None]:
        return (e.epoch, self.outline.nodes.get(e.epoch))

    def walk(self) -> Iterator[Entry]:
        """Entries in origin order; a damaged one ends the run naming this journal. History
        records (a snapshot's, at its position) are no events: the outline has their epochs."""
        with damage_is_a_finding(self.name):
            entries = (
                e
                for e in self.reader.entries(progress=self.progress)
                if e.record.TYPE != RecordType.HISTORY
            )
            if self.outline.ordered:
                yield from entries
            else:  # origins out of order (a journal rebuilt from a snapshot): sort in memory
                yield from sorted(entries, key=lambda e: (e.origin, e.seq))


def first_boundary_conflict(a: Outline, b: Outline) -> int | None:
    """The first epoch boundary, within what both journals reach, where their epochs differ."""
    reach = min(a.last_origin, b.last_origin)
    for origin in sorted({o for o, _, _ in a.epochs} | {o for o, _, _ in b.epochs}):
        if origin > reach:
            break
        ca, cb = a.cover(origin), b.cover(origin)
        if ca and cb and not same_epoch(ca, cb):
            return origin
    return None


def diverge(a: Side, b: Side) -> str | None:
    """The divergence line (plus detail lines), or None when every shared position agrees."""
    stop = first_boundary_conflict(a.outline, b.outline)
    ia, ib = a.walk(), b.walk()
    ea, eb = next(ia, None), next(ib, None)
    while ea is not None and eb is not None:
        if stop is not None and min(ea.origin, eb.origin) >= stop:
            break
        if ea.origin < eb.origin:
            ea = next(ia, None)
            continue
        if eb.origin < ea.origin:
            eb = next(ib, None)
            continue
        if not same_epoch(a.identity(ea), b.identity(eb)):
            return report(a, b, ea.origin, ea, eb, "different epochs")
        if ea.record != eb.record:
            return report(a, b, ea.origin, ea, eb, "different records at the same position")
        ea, eb = next(ia, None), next(ib, None)
    if stop is None:
        return None
    ea = ea if ea is not None and ea.origin == stop else None
    eb = eb if eb is not None and eb.origin == stop else None
    return report(a, b, stop, ea, eb, "different epochs")


def report(a: Side, b: Side, origin: int, ea: Entry | None, eb: Entry | None, why: str) -> str:
    def ident(side: Side, e: Entry | None) -> tuple[int, uuid.UUID | None]:
        if e is not None:
            return side.identity(e)
        return side.outline.cover(origin) or (0, None)

    ida, idb = ident(a, ea), ident(b, eb)
    if why == "different epochs":
        why = f"{why} ({epoch_text(*ida)} vs {epoch_text(*idb)})"
    lines = [f"diverge at (epoch {ida[0]}, seq {origin}): {why}"]
    for side, e in ((a, ea), (b, eb)):
        held = entry_text(e) if e is not None else "no record at this seq (compacted or not held)"
        lines.append(f"  {side.name}: {held}")
    return "\n".join(lines)


# -- replicated state -------------------------------------------------------------------------


def _level(arguments: dict[str, Any]) -> str:
    return str(arguments.get("qpid.replicate", "all")).lower()


def replicated(snap: dict[str, Any]) -> dict[str, Any]:
    """The part of a `JournalState.snapshot()` a backup receives (per `qpid.replicate`)."""
    queues = {}
    for name, q in snap["queues"].items():
        level = _level(q["arguments"])
        if level == "none":
            continue
        # Messages compare by content, not by the position that wrote them: a backup that took a
        # snapshot journals that state outside the stream numbering (origin 0).
        messages = [] if level == "configuration" else [m[:5] for m in q["messages"]]
        queues[name] = {**q, "messages": messages}
    exchanges = {n: x for n, x in snap["exchanges"].items() if _level(x["arguments"]) != "none"}
    bindings = {k: v for k, v in snap["bindings"].items() if k[0] in exchanges and k[1] in queues}
    return {"queues": queues, "exchanges": exchanges, "bindings": bindings}


def state_differences(sa: dict[str, Any], sb: dict[str, Any], na: str, nb: str) -> list[str]:
    out: list[str] = []
    for kind in ("queues", "exchanges"):
        what = kind[:-1]
        xa, xb = sa[kind], sb[kind]
        out += [f"{what} {n!r} only in {na}" for n in sorted(set(xa) - set(xb))]
        out += [f"{what} {n!r} only in {nb}" for n in sorted(set(xb) - set(xa))]
        for n in sorted(set(xa) & set(xb)):
            for key in sorted(set(xa[n]) | set(xb[n])):
                va, vb = xa[n].get(key), xb[n].get(key)
                if va == vb:
                    continue
                if key == "messages":
                    out.append(f"queue {n!r}: {message_difference(va, vb, na, nb)}")
                else:
                    out.append(f"{what} {n!r}: different {key} ({va!r} vs {vb!r})")
    ba, bb = sa["bindings"], sb["bindings"]
    for keys, where in ((set(ba) - set(bb), na), (set(bb) - set(ba), nb)):
        out += [f"binding {k[0]!r}->{k[1]!r} key {k[2]!r} only in {where}" for k in sorted(keys)]
    for k in sorted(set(ba) & set(bb)):
        if ba[k] != bb[k]:
            out.append(f"binding {k[0]!r}->{k[1]!r} key {k[2]!r}: different arguments")
    return out


FIELDS = ("msgid", "priority", "expiry", "delivery count", "body")


Messages = list[tuple[Any, ...]]


def message_difference(ma: Messages, mb: Messages, na: str, nb: str) -> str:
    da, db = {m[0]: m for m in ma}, {m[0]: m for m in mb}
    parts = [f"{len(ma)} vs {len(mb)} messages"]
    for ids, where in ((set(da) - set(db), na), (set(db) - set(da), nb)):
        if ids:
            shown = ", ".join(str(i) for i in sorted(ids)[:5]) + (", ..." if len(ids) > 5 else "")
            parts.append(f"msgid {shown} only in {where}")
    for i in sorted(set(da) & set(db)):
        if da[i] != db[i]:
            names = [f for f, x, y in zip(FIELDS, da[i], db[i], strict=True) if x != y]
            parts.append(f"msgid {i} differs in {', '.join(names)}")
            break
    if len(parts) == 1:
        parts.append("same messages in a different order")
    return "; ".join(parts)


def state_line(sa: dict[str, Any], sb: dict[str, Any], na: str, nb: str) -> str | None:
    diffs = state_differences(replicated(sa), replicated(sb), na, nb)
    if not diffs:
        return None
    more = f"; and {len(diffs) - MAX_REASONS} more" if len(diffs) > MAX_REASONS else ""
    return "replicated state differs: " + "; ".join(diffs[:MAX_REASONS]) + more
