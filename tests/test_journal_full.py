"""A full journal (LMDB map size reached): new work refused clearly, reads and dequeues go on,
nothing durable is lost."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from journal_helpers import seqs_held, uid

from qstore.journal import (
    Dequeue,
    Enqueue,
    Journal,
    JournalError,
    JournalFull,
    JournalReader,
    QueueDeclare,
)
from qstore.journal.faults import FaultFile

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


def reserve_in(r: JournalReader) -> int:
    """Bytes of the reserve the journal holds (one-page pieces under `reserve:` keys)."""
    with r.env.begin(db=r.meta) as txn, txn.cursor() as cur:
        cur.set_range(b"reserve:")
        return sum(len(v) for k, v in cur if k.startswith(b"reserve:"))


def _fill_async(j: Journal, size: int, rng: random.Random) -> list[int]:
    """Enqueue from an event loop, 500 per loop turn (as a broker does), until refused."""

    async def run() -> list[int]:
        loop = asyncio.get_running_loop()
        ids: list[int] = []
        msgid = 0
        while True:
            futs = []
            for _ in range(500):
                f = loop.create_future()
                j.submit_one(Enqueue("q", msgid, rng.randbytes(size)), f)
                futs.append((msgid, f))
                msgid += 1
            res = await asyncio.gather(*(f for _, f in futs), return_exceptions=True)
            ok = [m for (m, _), r in zip(futs, res, strict=True) if isinstance(r, int)]
            ids += ok
            if len(ok) < len(futs):
                assert all(isinstance(r, JournalFull) for r in res[len(ok) :])
                return ids

    return asyncio.run(run())


def _dequeue_async(j: Journal, ids: list[int], timeout: float = 30.0) -> list[object]:
    """Dequeue every id lazily in one loop turn (a prefetching consumer's acknowledgements);
    return each one's outcome once all came."""

    async def run() -> list[object]:
        out: dict[int, object] = {}
        for m in ids:
            j.submit_one(Dequeue("q", m), functools.partial(out.__setitem__, m), lazy=True)
        deadline = time.monotonic() + timeout
        while len(out) < len(ids):
            assert time.monotonic() < deadline, f"{len(out)} of {len(ids)} dequeues done"
            await asyncio.sleep(0.01)
        return [out[m] for m in ids]

    return asyncio.run(run())


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.mark.parametrize("size", [20, 200])
def test_a_large_batch_of_dequeues_is_journaled_whole_and_the_journal_recovers_by_itself(
    tmp_path: Path, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of dequeues in one batch do not fit the reserve in one transaction: they are
    written in chunks with compaction between them, every one of them. Then, with nothing
    written, the journal finds its room again and takes new work."""
    caplog.set_level(logging.INFO, logger="qstore.journal")
    rng = random.Random(size)
    with Journal(tmp_path, map_size=1 << 20) as j:
        j.append(QueueDeclare("q", uid(1)))
        ids = _fill_async(j, size, rng)
        assert j.full and len(ids) > 2000
        outcomes = _dequeue_async(j, ids)
        assert all(isinstance(o, int) for o in outcomes), [
            o for o in outcomes if not isinstance(o, int)
        ][:1]
        _wait(lambda: not j.full)  # no write needed: the writer looks for room by itself
        status = j.status()
        assert status["state"] == "writable" and status["unjournaled"] == 0, status
        _wait(lambda: j.compaction_pending < 10)  # compaction goes on in the background
        assert j.status()["used"] < (1 << 20) // 2, j.status()
        j.append(Enqueue("q", 10**6, b"after"))
    with JournalReader.open(tmp_path) as r:
        assert list(r.replay().queues["q"].messages) == [10**6]
        assert reserve_in(r) >= 128 << 10  # held again
    lines = [rec.getMessage() for rec in caplog.records]
    assert sum(" is full (LMDB map of 1.0 MiB reached)" in m for m in lines) == 1, lines
    assert sum(" is writable again after " in m for m in lines) == 1, lines
    assert not any("not journaled" in m or "could not be journaled" in m for m in lines)


def test_new_work_is_refused_before_the_reserve_is_touched(tmp_path: Path) -> None:
    rng = random.Random(5)
    with Journal(tmp_path, map_size=MAP_SIZE, auto_compact=False) as j:
        j.append(QueueDeclare("q", uid(1)))
        _, refused = _fill(j, rng)
        assert str(refused) == (
            "journal is full (LMDB map of 512 KiB reached): new durable messages are refused "
            "until consumers drain it"
        )
        assert reserve_in(j) >= 128 << 10  # refused with the reserve still held
        status = j.status()
        assert status["state"] == "full" and status["reason"] == "LMDB map of 512 KiB reached"
        assert status["map-size"] == MAP_SIZE and status["reserve"] == 128 << 10
        assert MAP_SIZE - status["used"] < 2 * status["reserve"], status
        # A small enqueue, a declare and a bind are refused as well, not written into it.
        for rec in (Enqueue("q", 9_999, b"x"), QueueDeclare("r", uid(2))):
            with pytest.raises(JournalFull):
                j.append(rec)
        assert reserve_in(j) >= 128 << 10


def test_dequeues_that_find_no_room_at_all_fail_loudly_and_the_journal_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Compaction held back (an HA backup's horizon) and the reserve used up: a dequeue that
    truly cannot be written fails, one error line says what that means, and the status counts
    it. Once compaction may go on, the journal recovers and says how many were lost."""
    caplog.set_level(logging.INFO, logger="qstore.journal")
    rng = random.Random(6)
    with Journal(tmp_path, map_size=MAP_SIZE, compaction_horizon=0) as j:
        j.append(QueueDeclare("q", uid(1)))
        ids = _fill_async(j, 20, rng)  # thousands: their dequeues outgrow the 128 KiB reserve
        outcomes = _dequeue_async(j, ids)
        failed = [m for m, o in zip(ids, outcomes, strict=True) if isinstance(o, JournalFull)]
        assert failed, "every dequeue fitted: the test did not exhaust the reserve"
        assert reserve_in(j) == 0  # given up for the dequeues
        assert j.status()["unjournaled"] == len(failed)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors
        assert (
            "could not be journaled" in errors[0]
            and "delivered again after a restart" in (errors[0])
        )
        journaled = [m for m, o in zip(ids, outcomes, strict=True) if isinstance(o, int)]
        j.set_compaction_horizon(None)
        _wait(lambda: not j.full)
        assert reserve_in(j) >= 128 << 10
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2 and f"{len(failed)} dequeue/delete records were not" in errors[1]
    with JournalReader.open(tmp_path) as r:  # at least once: what was not journaled is back
        assert set(r.replay().queues["q"].messages) == set(ids) - set(journaled)


def test_an_injected_commit_failure_refuses_and_clears_when_the_fault_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qstore.journal")
    fault = tmp_path / "fault"
    data = tmp_path / "data"
    with Journal(data, commit=FaultFile(str(fault))) as j:
        j.append(QueueDeclare("q", uid(1)))
        good = [j.append(Enqueue("q", 1, b"one"))]
        fault.write_text("EIO")
        for msgid in (2, 3):
            with pytest.raises(JournalError) as info:
                j.append(Enqueue("q", msgid, b"lost"))
            assert not isinstance(info.value, JournalFull)
            assert str(info.value) == (
                "journal write failed: [Errno 5] injected Input/output error at commit "
                "(QSTORE_TEST_JOURNAL_FAULTS)"
            )
        status = j.status()
        assert status["state"] == "failed" and "Input/output error" in status["reason"]
        fault.unlink()
        good.append(j.append(Enqueue("q", 4, b"four")))
        assert j.status()["state"] == "writable"
    with JournalReader.open(data) as r:
        assert [(e.seq, e.record.msgid) for e in r.entries(start=2)] == [(good[0], 1), (good[1], 4)]
        assert r.verify()[1] == []
    lines = [rec.getMessage() for rec in caplog.records]
    assert sum("write failed" in m for m in lines) == 1, lines
    assert sum("writable again" in m for m in lines) == 1, lines
