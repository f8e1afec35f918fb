"""`qstore-journal salvage SRC DST`: a new data directory from every record of SRC that verifies.

A journal with one damaged record stops its broker (rightly: replaying past it could resurrect an
acknowledged message or lose a queue). Salvage is the supported way back: SRC is only read, DST
gets SRC's records that verify, in order, at their own seqs and positions, under SRC's node id,
through the journal's own writer. By default it stops at the first damaged record, so that DST is
SRC's history up to the damage, a consistent prefix: in a cluster the node then catches up from
there. `skip_damaged` goes on past damage instead, for a node whose journal is all there is, and
says which records went: what followed a lost record may have depended on it.

Each record is copied as stored (its crc32c checked and its payload decoded first, exactly what
`verify` checks), so nothing is re-encoded and DST's records are byte-for-byte SRC's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb

from qstore.journal import JournalReader
from qstore.journal.records import KEY

from ._inspect_target import new_journal, source_map_size

# a stored record's epoch and origin seq (the middle of records.HEADER)
header = struct.Struct(">4xIQ").unpack_from
LISTED = 1000  # damaged records named in the report; beyond that they are only counted


@dataclass
class Salvage:
    """What a salvage kept and lost."""

    source: str
    target: str
    node_id: str
    kept: int = 0
    first: int | None = None  # first and last seq kept
    last: int | None = None
    position: tuple[int, int] = (0, 0)  # of the last record kept that has an origin seq
    damaged: list[tuple[int, str]] = field(default_factory=list)  # the first LISTED
    damaged_count: int = 0
    stopped_at: int | None = None  # the seq salvage stopped at (default mode)
    lost: int = 0  # records of SRC not in DST (damaged ones included)
    lost_verified: int = 0  # of them, records that verify (after the stop)
    unreadable: str | None = None  # LMDB could not read SRC past `last_seen`
    last_seen: int = 0

    def json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "node_id": self.node_id,
            "kept": {
                "records": self.kept,
                "seq_range": None if self.first is None else [self.first, self.last],
                "position": list(self.position),
            },
            "damaged": [{"seq": s, "reason": r} for s, r in self.damaged],
            "damaged_count": self.damaged_count,
            "stopped_at": self.stopped_at,
            "lost": {"records": self.lost, "verify": self.lost_verified},
            "unreadable": self.unreadable,
        }


def salvage(
    reader: JournalReader,
    src: str,
    dst: Any,
    *,
    skip_damaged: bool,
    progress: Callable[[int], None] | None = None,
) -> Salvage:
    """Copy `reader`'s verified records into the new data directory `dst` (see the module)."""
    node = reader.node_id
    report = Salvage(src, str(dst), str(node))
    high = reader.meta_get("high-water")
    with new_journal(
        dst,
        node_id=node,
        created=reader.meta_get("created"),
        map_size=source_map_size(reader),
    ) as loader:
        add = loader.add
        stopped = False
        try:
            for seq, value, reason in reader.verified(progress=progress):
                report.last_seen = seq
                if reason is not None:
                    report.damaged_count += 1
                    if len(report.damaged) < LISTED:
                        report.damaged.append((seq, reason))
                    report.lost += 1
                    if not skip_damaged and not stopped:
                        stopped, report.stopped_at = True, seq
                    continue
                if stopped:
                    report.lost += 1
                    report.lost_verified += 1
                    continue
                add(seq, value)
                report.kept += 1
                if report.first is None:
                    report.first = seq
                report.last = seq
                epoch, origin = header(value, 0)
                if origin:
                    report.position = (epoch, origin)
        except lmdb.Error as exc:  # a broken page: nothing past it can be read
            report.unreadable = str(exc)
        # New records of DST stay above every seq SRC used, lost ones included.
        mark = max(report.last_seen, KEY.unpack(high)[0] if high else 0)
        loader.finish(mark if mark > (report.last or 0) or high else None)
    return report


def salvage_text(s: Salvage) -> list[str]:
    lines = [f"salvaged {s.source} -> {s.target} (node {s.node_id})"]
    if s.kept:
        epoch, origin = s.position
        lines.append(
            f"kept:     {s.kept} record(s), seq {s.first}..{s.last}, "
            f"position (epoch {epoch}, seq {origin})"
        )
    else:
        lines.append("kept:     no records")
    verb = "skipped" if s.stopped_at is None else "damaged"
    for seq, reason in s.damaged:
        lines.append(f"{verb}:  seq {seq}: {reason}")
    if s.damaged_count > len(s.damaged):
        lines.append(f"{verb}:  ... and {s.damaged_count - len(s.damaged)} more")
    if s.unreadable is not None:
        lines.append(
            f"unreadable: the journal cannot be read after seq {s.last_seen}: {s.unreadable}"
        )
    if s.stopped_at is not None:
        lines.append(
            f"lost:     {s.lost} record(s) from seq {s.stopped_at} on "
            f"({s.lost_verified} of them verify: --skip-damaged would keep those)"
        )
    elif s.lost:
        lines.append(
            f"lost:     {s.lost} damaged record(s); records after them were kept and may "
            "depend on them (check the queues)"
        )
    else:
        lines.append("lost:     nothing")
    return lines
