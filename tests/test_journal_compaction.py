"""Compaction removes only what no replay needs: the same state before and after, and no more.

The property tests drive two journals with the same operations: a reference that never compacts
and a subject that compacts (explicitly at random points, in the background, across reopens).
Both must replay to the same state, assign the same seqs, and the subject must hold only what its
state still needs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from journal_helpers import seqs_held, state_of, uid

from qstore.journal import (
    Bind,
    Delivery,
    Dequeue,
    Enqueue,
    ExchangeDeclare,
    ExchangeDelete,
    Journal,
    JournalReader,
    JournalState,
    QueueDeclare,
    QueueDelete,
    Record,
    Unbind,
)
from qstore.journal.records import COMPRESS_THRESHOLD, KEY

QUEUES = ("a", "b")
EXCHANGES = ("x", "y")
KEYS = ("", "k")
MSGIDS = st.integers(0, 3)
BIG = b"big body " * (COMPRESS_THRESHOLD // 8)  # compressed on the way in

queue_name = st.sampled_from(QUEUES)
exchange_name = st.sampled_from(EXCHANGES)
# a dedup window keeps a consumed message's records until 2 later enqueues (state.py)
arguments = st.sampled_from([{}, {"qpid.max_count": 5}, {"qstore.dedup-window": 2}])
stale = st.sampled_from([False, False, True])  # a delete naming an older incarnation

OPS = st.one_of(
    st.tuples(st.just("enq"), queue_name, MSGIDS, st.sampled_from([b"", b"small", BIG])),
    st.tuples(st.just("deq"), queue_name, MSGIDS),
    st.tuples(st.just("dlv"), queue_name, MSGIDS, st.integers(1, 4)),
    st.tuples(st.just("qdecl"), queue_name, arguments),
    st.tuples(st.just("qdel"), queue_name, stale),
    st.tuples(st.just("xdecl"), exchange_name, st.sampled_from(["direct", "topic"])),
    st.tuples(st.just("xdel"), exchange_name, stale),
    st.tuples(st.just("bind"), exchange_name, queue_name, st.sampled_from(KEYS), arguments),
    st.tuples(st.just("unbind"), exchange_name, queue_name, st.sampled_from(KEYS)),
    st.tuples(st.just("epoch")),
    st.tuples(st.just("compact")),
    st.tuples(st.just("reopen")),
)

# Every example starts from entities that exist, so that most random operations do something.
PRELUDE: list[tuple[Any, ...]] = [
    ("qdecl", "a", {}),
    ("qdecl", "b", {}),
    ("xdecl", "x", "direct"),
    ("bind", "x", "a", "", {}),
    ("enq", "a", 0, b"first"),
]
op_lists = st.lists(OPS, min_size=3, max_size=40).map(lambda ops: PRELUDE + ops)

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A fresh directory per example (tmpfs when there is one: fsyncs are free there)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="qstore-journal-", dir=base) as d:
        yield Path(d)


class Model:
    """Turns operations into records, naming the entity incarnations as a broker would."""

    def __init__(self) -> None:
        self.uuids: dict[str, Any] = {}
        self.counter = 100

    def _new(self, name: str) -> Any:
        self.counter += 1
        self.uuids[name] = uid(self.counter)
        return self.uuids[name]

    def record(self, op: tuple[Any, ...]) -> Record:
        match op:
            case ("enq", q, m, body):
                return Enqueue(q, m, body, priority=m, delivery_count=0)
            case ("deq", q, m):
                return Dequeue(q, m)
            case ("dlv", q, m, n):
                return Delivery(q, m, n)
            case ("qdecl", q, args):
                return QueueDeclare(q, self._new("q:" + q), args)
            case ("qdel", q, stale):
                return QueueDelete(q, uid(7) if stale else self.uuids.get("q:" + q, uid(8)))
            case ("xdecl", x, kind):
                return ExchangeDeclare(x, self._new("x:" + x), kind)
            case ("xdel", x, stale):
                return ExchangeDelete(x, uid(7) if stale else self.uuids.get("x:" + x, uid(8)))
            case ("bind", x, q, key, args):
                return Bind(x, q, key, args)
            case ("unbind", x, q, key):
                return Unbind(x, q, key)
        raise AssertionError(op)


def garbage_order(entries: list[Any]) -> tuple[JournalState, list[int], list[int]]:
    """Replay; return the state, the seqs compaction may delete (in its order), the held-back unit.

    Compaction deletes units in the order of their cancelling record, each front to back, and
    keeps the unit cancelled by the newest record until a newer one exists.
    """
    st_ = JournalState()
    units: list[list[int]] = []
    for e in entries:
        units.append(st_.apply(e))
    if not units:
        return st_, [], []
    return st_, [s for u in units[:-1] for s in u], units[-1]


def check_compacted(j: Journal) -> None:
    """The journal holds what its state needs and at most the newest record's cancelled unit."""
    held = set(seqs_held(j))
    st_, _, last_unit = garbage_order(list(j.entries()))
    live = st_.live_seqs()
    assert live <= held
    assert held - live <= set(last_unit), f"garbage left: {sorted(held - live)}"


class Pair:
    """A reference journal (never compacts) and a subject (compacts), fed the same records."""

    def __init__(
        self, root: Path, auto_compact: bool, batch: int, horizon: int | None = None
    ) -> None:
        self.root = root
        self.kw = {
            "auto_compact": auto_compact,
            "compaction_batch": batch,
            "compaction_horizon": horizon,
        }
        self.ref = Journal(root / "ref", auto_compact=False)
        self.sub = Journal(root / "sub", **self.kw)
        self.model = Model()

    def close(self) -> None:
        self.ref.close()
        self.sub.close()

    def apply(self, op: tuple[Any, ...]) -> None:
        ref, sub = self.ref, self.sub
        match op:
            case ("compact",):
                sub.compact()
                assert sub.replay().snapshot() == ref.replay().snapshot()
            case ("reopen",):
                sub.close()
                self.sub = Journal(self.root / "sub", **self.kw)
                assert self.sub.last_seq == ref.last_seq
                assert self.sub.position == ref.position
                assert self.sub.state.snapshot() == ref.state.snapshot()
            case ("epoch",):
                assert sub.start_epoch(node=uid(5)) == ref.start_epoch(node=uid(5))
            case _:
                r = self.model.record(op)
                assert sub.append(r) == ref.append(r)  # compaction never makes seqs reused


@given(ops=op_lists, auto_compact=st.booleans(), batch=st.sampled_from([1, 3, 64]))
@PROPERTY
def test_replay_after_compaction_equals_replay_before(
    ops: list[tuple[Any, ...]], auto_compact: bool, batch: int
) -> None:
    with scratch_dir() as root:
        pair = Pair(root, auto_compact, batch)
        try:
            for op in ops:
                pair.apply(op)
            before = pair.ref.replay().snapshot()
            pair.sub.compact()
            assert pair.sub.replay().snapshot() == before
            assert pair.sub.state.snapshot() == pair.ref.state.snapshot()
            assert pair.sub.position == pair.ref.position
            check_compacted(pair.sub)
            pair.apply(("reopen",))
            assert pair.sub.replay().snapshot() == before
            check_compacted(pair.sub)
        finally:
            pair.close()
        # Without the writer: what the two journals hold on disk replays the same.
        with JournalReader.open(root / "sub") as r:
            assert r.replay().snapshot() == before


@given(ops=op_lists, data=st.data())
@PROPERTY
def test_a_crash_between_compaction_transactions_changes_nothing(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    """Deleting any prefix of compaction's order (a crash mid-way) replays to the same state."""
    with scratch_dir() as root:
        pair = Pair(root, auto_compact=False, batch=64)
        try:
            for op in ops:
                if op[0] not in ("compact", "reopen"):
                    pair.apply(op)
        finally:
            pair.close()
        with JournalReader.open(root / "ref") as r:
            entries = list(r.entries())
        full, order, _ = garbage_order(entries)
        for k in range(1, len(order) + 1):  # every point a crash could stop compaction at
            gone = set(order[:k])
            left = [e for e in entries if e.seq not in gone]
            assert state_of(left).snapshot() == full.snapshot(), f"after deleting {order[:k]}"
        # One of them for real, on disk.
        k = data.draw(st.integers(0, len(order)), label="deleted")
        env = lmdb.open(str(root / "ref" / "journal"), max_dbs=4, map_size=1 << 30)
        try:
            db = env.open_db(b"records", create=False)
            with env.begin(write=True, db=db) as txn:
                for seq in order[:k]:
                    assert txn.delete(KEY.pack(seq)), f"seq {seq} deleted twice"
        finally:
            env.close()
        with JournalReader.open(root / "ref") as r:
            assert r.replay().snapshot() == full.snapshot()
        # And a journal opened on that half-compacted state finishes the work consistently.
        with Journal(root / "ref") as j:
            j.compact()
            assert j.replay().snapshot() == full.snapshot()
            check_compacted(j)


@given(
    ops=op_lists,
    at=st.integers(0, 100),
    auto_compact=st.booleans(),
)
@PROPERTY
def test_compaction_below_a_horizon_keeps_every_prefix_truncate_needs(
    ops: list[tuple[Any, ...]], at: int, auto_compact: bool
) -> None:
    """With a horizon h, truncate_after(h) after any compaction equals the uncompacted prefix."""
    records = sum(1 for op in ops if op[0] not in ("compact", "reopen"))
    horizon = records * at // 100  # `at` percent of the way through the records
    with scratch_dir() as root:
        pair = Pair(root, auto_compact, batch=3, horizon=horizon)  # in force across reopens
        try:
            for op in ops:
                pair.apply(op)
            pair.sub.compact()
            prefix = [e for e in pair.ref.entries() if e.seq <= horizon]
            pair.sub.truncate_after(horizon)
            assert pair.sub.replay().snapshot() == state_of(prefix).snapshot()
            assert pair.sub.state.snapshot() == state_of(prefix, keep_bodies=False).snapshot()
        finally:
            pair.close()


def _seq_of(j: Journal, records: list[Record]) -> list[int]:
    return [j.append(r) for r in records]


def test_horizon_holds_back_units_cancelled_after_it(tmp_path: Path) -> None:
    with Journal(tmp_path, auto_compact=False) as j:
        s = _seq_of(
            j,
            [
                QueueDeclare("q", uid(1)),  # 1
                Enqueue("q", 0, b"zero"),  # 2
                Dequeue("q", 0),  # 3: cancels 2 and itself, at the horizon
                Enqueue("q", 1, b"one"),  # 4
                Delivery("q", 1, 1),  # 5: the horizon
            ],
        )
        horizon = s[-1]
        j.set_compaction_horizon(horizon)
        s += _seq_of(
            j,
            [
                Delivery("q", 1, 2),  # 6: cancels 5, which the prefix up to 5 needs
                Enqueue("q", 2, b"two"),  # 7
                Dequeue("q", 2),  # 8: cancels 7 and itself (both above the horizon)
                Dequeue("q", 1),  # 9: cancels 4, 6 and itself
                Enqueue("q", 3, b"three"),  # 10
            ],
        )
        before = list(j.entries())
        assert j.compaction_pending == 2 + 1 + 2 + 3
        assert j.compact() == 2
        assert seqs_held(j) == [1, 4, 5, 6, 7, 8, 9, 10]
        assert j.replay().snapshot() == state_of(before).snapshot()
        # Lifting the horizon lets the rest go.
        j.set_compaction_horizon(None)
        assert j.compact() == 6
        assert seqs_held(j) == [1, 10]
        assert j.replay().snapshot() == state_of(before).snapshot()


def test_truncate_at_the_horizon_after_compaction_equals_the_prefix(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:  # background compaction on
        j.append(QueueDeclare("q", uid(1)))
        j.append(ExchangeDeclare("x", uid(2), "direct"))
        j.append(Bind("x", "q", "k"))
        for i in range(20):
            j.append(Enqueue("q", i, b"m%d" % i))
        horizon = j.append(Delivery("q", 3, 1))
        j.set_compaction_horizon(horizon)
        prefix = list(j.entries())
        # Everything after the horizon cancels something before it.
        j.append(Delivery("q", 3, 2))
        j.append(Unbind("x", "q", "k"))
        for i in range(20):
            j.append(Dequeue("q", i))
        j.append(QueueDelete("q", uid(1)))
        j.append(ExchangeDelete("x", uid(2)))
        j.compact()
        assert j.count() == len(prefix) + 24
        j.truncate_after(horizon)
        assert j.replay().snapshot() == state_of(prefix).snapshot()
        assert j.state.snapshot() == state_of(prefix, keep_bodies=False).snapshot()


def test_compaction_keeps_the_newest_record_so_seqs_and_position_survive_reopen(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path) as j:
        j.append(QueueDeclare("q", uid(1)))
        j.append(Enqueue("q", 1, b"x"))
        last = j.append(Dequeue("q", 1))
        j.compact()
        position = j.position
        assert seqs_held(j) == [1, 2, 3]  # the newest record's unit waits for a newer record
    with Journal(tmp_path) as j:
        assert (j.last_seq, j.position) == (last, position)
        nxt = j.append(Enqueue("q", 2, b"y"))
        assert nxt == last + 1
        assert next(iter(j.entries(start=nxt))).origin == position[1] + 1
        j.compact()
        assert seqs_held(j) == [1, nxt]


def test_existing_garbage_is_compacted_after_reopen(tmp_path: Path) -> None:
    with Journal(tmp_path, auto_compact=False) as j:
        j.append(QueueDeclare("q", uid(1)))
        for i in range(50):
            j.append_many([Enqueue("q", i, b"body"), Dequeue("q", i)])
        j.append(Enqueue("q", 99, b"kept"))
        before = j.replay().snapshot()
        assert j.count() == 102
    with Journal(tmp_path, compaction_batch=7, auto_compact=False) as j:
        assert j.compaction_pending == 100
        assert j.compact() == 100
        assert seqs_held(j) == [1, 102]
        assert j.replay().snapshot() == before
