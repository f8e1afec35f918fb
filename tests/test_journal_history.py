"""The history record (type 11, format version 2): what a snapshot makes of a backup's stream
history, durable in its journal (issue 13). Real journals in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from journal_helpers import seqs_held, uid

from qstore.journal import (
    CorruptRecord,
    Dequeue,
    Enqueue,
    Epoch,
    History,
    Journal,
    JournalReader,
    QueueDeclare,
    QueueDelete,
)
from qstore.journal.records import FORMAT_VERSION, HISTORY_VERSION, decode, prepare, seal

A, B = uid(0xA), uid(0xB)
HIST = [(1, A, 1), (2, B, 40)]


def epochs(j: JournalReader) -> list[tuple[int, object, int]]:
    return [(e.number, e.node, e.origin) for e in j.replay(keep_bodies=False).epochs]


def test_the_record_round_trips_at_version_2() -> None:
    for rec in (History([]), History(HIST)):
        _key, value = seal(9, prepare(rec), 2, 77)
        assert value[0] == HISTORY_VERSION == FORMAT_VERSION
        e = decode(9, value)
        assert e.record == rec and e.position == (2, 77)


def test_a_cut_payload_is_damage() -> None:
    short = prepare(History(HIST))
    short.payload = short.payload[:-3]
    _key, value = seal(9, short, 2, 77)
    with pytest.raises(CorruptRecord, match="history payload does not decode"):
        decode(9, value)


def test_a_journal_is_format_1_until_a_history_record(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append(Epoch(1, A))
        assert j.format_version == 1


def backup_journal(path: Path) -> int:
    """A backup's journal: a stream in epoch 1 up to origin 30, then a snapshot (an empty
    history, the snapshot's records outside the stream, the primary's history at (2, 60)), then
    the stream goes on. Returns the seq of the closing history record."""
    with Journal(path, auto_compact=False) as j:
        j.append_many([Epoch(1, A), QueueDeclare("old", uid(1))], epoch=1, origin=1, replica=True)
        j.append(Enqueue("old", 1, b"x"), epoch=1, origin=30, replica=True)
        j.append(History([]), epoch=0, origin=0, replica=True)
        for rec in (QueueDelete("old", uid(1)), QueueDeclare("q", uid(2)), Enqueue("q", 5, b"a")):
            j.append(rec, epoch=2, origin=0, replica=True)  # a snapshot: outside the stream
        end = j.append(History(HIST), epoch=2, origin=60, replica=True)
        j.append(Enqueue("q", 6, b"next"), epoch=2, origin=61, replica=True)
    return end


def test_a_snapshot_sets_the_position_and_epochs_a_reopened_journal_reports(
    tmp_path: Path,
) -> None:
    backup_journal(tmp_path)
    with Journal(tmp_path) as j:
        assert j.position == (2, 61)
        assert j.epoch == 2
        assert [(e.number, e.node, e.origin) for e in j.state.epochs] == HIST
        assert list(j.state.queues["q"].messages) == [5, 6]
        # raised with the first history record: older code refuses the journal at open
        assert j.format_version == HISTORY_VERSION


def test_a_snapshot_cut_short_leaves_no_position(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append(Epoch(1, A), epoch=1, origin=1, replica=True)
        j.append(QueueDeclare("q", uid(2)), epoch=1, origin=30, replica=True)
        j.append(History([]), epoch=0, origin=0, replica=True)
        j.append(Enqueue("q", 5, b"body"), epoch=2, origin=0, replica=True)
    with Journal(tmp_path) as j:  # stopped before the snapshot's end: a snapshot again
        assert (j.position, j.state.max_origin, j.state.epochs) == ((0, 0), 0, [])


def test_a_backup_ahead_of_the_snapshot_takes_its_position_not_the_highest(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path) as j:
        j.append(Epoch(1, A), epoch=1, origin=1, replica=True)
        j.append(QueueDeclare("q", uid(2)), epoch=1, origin=90, replica=True)
        j.append(History([]), epoch=0, origin=0, replica=True)
        j.append(History(HIST), epoch=2, origin=60, replica=True)
        # numbering (a record without an origin) goes on from the snapshot's position
        assert next(iter(j.entries(start=j.append(Dequeue("q", 1))))).origin == 61
    with Journal(tmp_path) as j:
        assert j.position == (2, 61) and j.state.max_origin == 61


def test_compaction_keeps_history_records(tmp_path: Path) -> None:
    end = backup_journal(tmp_path)
    with Journal(tmp_path) as j:
        j.compact()
        held = seqs_held(j)
        begin = next(e.seq for e in j.entries() if isinstance(e.record, History))
        assert begin in held and end in held
        assert epochs(j) == HIST


def test_dropping_the_stream_below_a_snapshot_drops_its_position(tmp_path: Path) -> None:
    backup_journal(tmp_path)
    with Journal(tmp_path) as j:
        j.drop_stream_after(50)  # a truncate below the snapshot: it no longer stands
        assert (j.position, j.state.epochs) == ((0, 0), [])
