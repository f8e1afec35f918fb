"""A full journal (LMDB map size reached): new work refused clearly, reads and dequeues go on,
nothing durable is lost."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import anyio
import pytest
from journal_helpers import seqs_held, uid

from qstore.journal import (
    Dequeue,
    Enqueue,
    Journal,
    JournalFull,
    JournalReader,
    QueueDeclare,
)

MAP_SIZE = 512 << 10
BODY = 1500  # incompressible: the map fills after a few hundred


def _fill(j: Journal, rng: random.Random) -> tuple[dict[int, int], JournalFull]:
    """Enqueue until the journal refuses; return the durable seq -> msgid and the refusal."""
    durable: dict[int, int] = {}
    for msgid in range(5000):
        try:
            durable[j.append(Enqueue("q", msgid, rng.randbytes(BODY)))] = msgid
        except JournalFull as exc:
            return durable, exc
    pytest.fail("a 512 KiB journal took 5000 records of 1.5 KiB")


def test_full_journal_refuses_new_work_keeps_reads_dequeues_and_durable_records(
    tmp_path: Path,
) -> None:
    rng = random.Random(1)
    with Journal(tmp_path, map_size=MAP_SIZE, auto_compact=False) as j:
        j.append(QueueDeclare("q", uid(1)))
        durable, refused = _fill(j, rng)
        assert len(durable) > 50
        msg = str(refused)
        assert "journal is full" in msg and "\n" not in msg
        assert j.full
        # New durable work stays refused, from threads and from async code alike.
        with pytest.raises(JournalFull):
            j.append(Enqueue("q", 10_000, rng.randbytes(BODY)))

        async def enqueue_async() -> None:
            with pytest.raises(JournalFull):
                await j.append_async(Enqueue("q", 10_001, rng.randbytes(BODY)))

        anyio.run(enqueue_async, backend="asyncio")
        # A job that mixes a dequeue with new work is refused as a whole.
        first = next(iter(durable.values()))
        with pytest.raises(JournalFull):
            j.append_many([Dequeue("q", first), Enqueue("q", 10_002, rng.randbytes(BODY))])
        # Reads work.
        state = j.replay()
        assert list(state.queues["q"].messages) == list(durable.values())
        assert {e.seq: e.record.msgid for e in j.entries(start=2)} == durable
        assert j.verify() == (len(durable) + 1, [])
        # Dequeues are journaled: consumers keep acknowledging.
        dequeued = list(durable.values())[: len(durable) // 2]
        deq_seqs = [j.append(Dequeue("q", m)) for m in dequeued]
        assert deq_seqs == sorted(deq_seqs)
        assert j.append_many([Dequeue("q", m) for m in list(durable.values())[-3:]])
        dequeued += list(durable.values())[-3:]
        before = j.replay().snapshot()
    with Journal(tmp_path, map_size=MAP_SIZE, auto_compact=False) as j:
        assert j.replay().snapshot() == before
        held = {e.seq: e.record for e in j.entries()}
        for seq, msgid in durable.items():
            if msgid not in dequeued:  # a dequeued one may have been compacted with its dequeue
                assert held[seq] == Enqueue("q", msgid, held[seq].body)
        assert set(j.replay().queues["q"].messages) == set(durable.values()) - set(dequeued)


def test_dequeues_free_space_and_the_journal_takes_work_again(tmp_path: Path) -> None:
    rng = random.Random(2)
    with Journal(tmp_path, map_size=MAP_SIZE) as j:  # background compaction on
        j.append(QueueDeclare("q", uid(1)))
        durable, _ = _fill(j, rng)
        assert j.full
        for m in durable.values():
            j.append(Dequeue("q", m))
        j.compact()
        seq = j.append(Enqueue("q", 20_000, rng.randbytes(BODY)))
        assert not j.full
        assert seqs_held(j)[-1] == seq
        assert list(j.replay().queues["q"].messages) == [20_000]
    with JournalReader.open(tmp_path) as r:
        assert list(r.replay().queues["q"].messages) == [20_000]
        assert r.verify()[1] == []


def test_a_full_journal_reopens_and_grows_with_a_larger_map(tmp_path: Path) -> None:
    rng = random.Random(3)
    with Journal(tmp_path, map_size=MAP_SIZE) as j:
        j.append(QueueDeclare("q", uid(1)))
        durable, _ = _fill(j, rng)
        last = j.last_seq
    # Reopened at the same size it still opens, replays and refuses new work.
    with Journal(tmp_path, map_size=MAP_SIZE) as j:
        assert set(j.replay().queues["q"].messages) == set(durable.values())
        with pytest.raises(JournalFull):
            for i in range(50):
                j.append(Enqueue("q", 30_000 + i, rng.randbytes(BODY)))
    # Given a larger map, it takes work again, after what it held.
    with Journal(tmp_path, map_size=4 * MAP_SIZE) as j:
        seq = j.append(Enqueue("q", 40_000, rng.randbytes(BODY)))
        assert seq > last
        assert set(j.replay().queues["q"].messages) >= set(durable.values()) | {40_000}


def test_when_full_dequeues_in_a_shared_batch_pass_while_enqueues_are_refused(
    tmp_path: Path,
) -> None:
    rng = random.Random(4)
    with Journal(tmp_path, map_size=MAP_SIZE, auto_compact=False) as j:
        j.append(QueueDeclare("q", uid(1)))
        durable, _ = _fill(j, rng)
        msgids = list(durable.values())
        bodies = [rng.randbytes(BODY) for _ in range(40)]
        outcomes: dict[str, list[object]] = {"enq": [], "deq": []}
        start = threading.Barrier(4)

        def enqueue(k: int) -> None:
            start.wait(10)
            for i in range(k, 40, 2):
                try:
                    outcomes["enq"].append(j.append(Enqueue("q", 50_000 + i, bodies[i])))
                except JournalFull as exc:
                    outcomes["enq"].append(exc)

        def dequeue(k: int) -> None:
            start.wait(10)
            for m in msgids[k : len(msgids) // 2 : 2]:
                outcomes["deq"].append(j.append(Dequeue("q", m)))

        threads = [
            threading.Thread(target=f, args=(k,)) for f in (enqueue, dequeue) for k in (0, 1)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert all(isinstance(s, int) for s in outcomes["deq"])
        assert len(outcomes["deq"]) == len(msgids[: len(msgids) // 2])
        refused = [o for o in outcomes["enq"] if isinstance(o, JournalFull)]
        assert refused, "a full journal took every new enqueue"
        state = j.replay()
        kept = [o for o in outcomes["enq"] if isinstance(o, int)]
        assert set(state.queues["q"].messages) == (
            set(msgids[len(msgids) // 2 :])
            | {held.record.msgid for held in j.entries() if held.seq in kept}
        )
