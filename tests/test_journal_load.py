"""`JournalLoader` (qstore/journal/load.py): records written at their own seqs through the
journal's writer, the source's node id kept, the journal refused when it holds records already,
seqs that do not increase refused, and what it wrote opened by `Journal` as any journal."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from qstore.journal import (
    Dequeue,
    Enqueue,
    Journal,
    JournalError,
    JournalReader,
    QueueDeclare,
)
from qstore.journal.load import CHUNK_RECORDS, JournalLoader
from qstore.journal.records import prepare, seal

MAP = 64 << 20
NODE = uuid.UUID(int=42)


def sealed(seq: int, record: object, origin: int) -> bytes:
    return seal(seq, prepare(record, 1, origin), 1, origin)[1]  # type: ignore[arg-type]


def test_records_keep_their_seqs_and_the_node_id(tmp_path: Path) -> None:
    n = CHUNK_RECORDS + 10  # more than one chunk
    with JournalLoader(tmp_path / "d", node_id=NODE, created=b"then", map_size=MAP) as loader:
        loader.add(5, sealed(5, QueueDeclare("q", uuid.UUID(int=1)), 1))
        for i in range(n):
            loader.add(10 + 2 * i, sealed(10 + 2 * i, Enqueue("q", i, b"m"), 2 + i))
        loader.finish(high_water=10**6)
    with JournalReader.open(tmp_path / "d") as r:
        assert r.node_id == NODE and r.meta_get("created") == b"then"
        seqs = [e.seq for e in r.entries()]
        assert seqs == [5, *range(10, 10 + 2 * n, 2)]
        assert r.verify() == (n + 1, [])
    with Journal(tmp_path / "d", map_size=MAP) as j:
        assert j.state.queues["q"].depth == n and j.position == (1, n + 1)
        assert j.append(Dequeue("q", 0)) == 10**6 + 1  # above the high-water mark


def test_a_journal_with_records_is_refused(tmp_path: Path) -> None:
    with Journal(tmp_path / "d", map_size=MAP) as j:
        j.append(QueueDeclare("q", uuid.UUID(int=1)))
    with pytest.raises(JournalError, match="holds records already"):
        JournalLoader(tmp_path / "d", map_size=MAP)
    with Journal(tmp_path / "d", map_size=MAP):  # the refusal left the lock free
        pass


def test_seqs_must_increase(tmp_path: Path) -> None:
    with JournalLoader(tmp_path / "d", map_size=MAP) as loader:
        loader.add(3, sealed(3, QueueDeclare("q", uuid.UUID(int=1)), 1))
        with pytest.raises(JournalError, match="seq=3 comes after seq=3"):
            loader.add(3, sealed(3, QueueDeclare("q", uuid.UUID(int=1)), 1))
        loader.finish()
    with JournalReader.open(tmp_path / "d") as r:
        assert [e.seq for e in r.entries()] == [3]
