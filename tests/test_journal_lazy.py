"""Lazy appends (the broker's dequeues): held up to the writer's `lazy_delay` to share a commit,
never held behind a job somebody waits for, never lost at close. Real LMDB files, the real writer
thread; the delays are made long so that the outcomes do not depend on the machine's speed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
from journal_helpers import uid

from qstore.journal import Dequeue, Enqueue, Journal, JournalReader, QueueDeclare

BOUND = 10.0  # any wait here is bounded by this


def _journal(path: Path, lazy_delay: float) -> Journal:
    j = Journal(path)
    j.writer.lazy_delay = lazy_delay
    j.append(QueueDeclare("q", uid(1)))
    j.append_many([Enqueue("q", i, b"body") for i in range(20)])
    return j


async def _lazy_dequeues(j: Journal, ids: range) -> list[asyncio.Future[int]]:
    """One lazy dequeue per loop turn, as a consumer's acknowledgements arrive."""
    loop = asyncio.get_running_loop()
    futs = []
    for i in ids:
        fut: asyncio.Future[int] = loop.create_future()
        j.submit_one(Dequeue("q", i), fut, lazy=True)
        futs.append(fut)
        await asyncio.sleep(0)
    return futs


def test_lazy_appends_wait_for_company_and_share_one_commit(tmp_path: Path) -> None:
    j = _journal(tmp_path, lazy_delay=0.5)

    async def main() -> None:
        commits = j.commits
        futs = await _lazy_dequeues(j, range(10))
        await anyio.sleep(0.1)
        assert not any(f.done() for f in futs)  # held: nobody waits for them
        with anyio.fail_after(BOUND):
            seqs = [await f for f in futs]
        assert seqs == sorted(seqs)
        assert j.commits == commits + 1  # ten turns, one fsync

    anyio.run(main, backend="asyncio")
    j.close()


def test_a_job_somebody_waits_for_ends_the_hold_at_once(tmp_path: Path) -> None:
    j = _journal(tmp_path, lazy_delay=BOUND * 10)

    async def main() -> None:
        futs = await _lazy_dequeues(j, range(5))
        with anyio.fail_after(BOUND):  # far below lazy_delay
            seq = await j.append_async(Enqueue("q", 100, b"new"))
            held = [await f for f in futs]
        assert max(held) < seq  # written in order, in the same commit or before

    anyio.run(main, backend="asyncio")
    j.close()


def test_a_full_batch_of_lazy_records_is_written_without_waiting(tmp_path: Path) -> None:
    j = _journal(tmp_path, lazy_delay=BOUND * 10)
    j.writer.lazy_limit = 8

    async def main() -> None:
        futs = await _lazy_dequeues(j, range(8))
        with anyio.fail_after(BOUND):
            for f in futs:
                await f

    anyio.run(main, backend="asyncio")
    j.close()


def test_close_writes_what_is_held(tmp_path: Path) -> None:
    j = _journal(tmp_path, lazy_delay=BOUND * 10)

    async def main() -> None:
        await _lazy_dequeues(j, range(20))
        with anyio.fail_after(BOUND):
            await anyio.to_thread.run_sync(j.close)

    anyio.run(main, backend="asyncio")
    with JournalReader.open(tmp_path) as r:
        assert r.replay().queues["q"].messages == {}
