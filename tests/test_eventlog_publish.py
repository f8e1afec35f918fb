"""A publish's settlement, in process: the model hands the publish's enqueues back, the event log
records them and returns what the sender's outcome waits for (`EventLog.record_publish`). The
real model, event log and journal (in tmp_path) on an asyncio loop; the journal's commits go
through its test hook (as faults.py), which commits for real but can hold them, so a test can
see what waits for a write that is not done yet."""

from __future__ import annotations

import asyncio
import errno
import threading
from pathlib import Path
from typing import Any

import lmdb
import pytest

from broker.eventlog import EventLog, Pending
from broker.model import Broker, Message
from qstore.journal import Journal
from qstore.journal.loopbatch import LoopBatcher

WAIT = 10.0


class CommitGate:
    """The journal writer's commit: LMDB's own, but from the `hold_from`-th on, each waits
    until `release()` (bounded: a test that forgets fails instead of hanging)."""

    def __init__(self) -> None:
        self.commits = 0
        self.hold_from: int | None = None
        self.holding = threading.Event()  # a commit waits at the gate
        self._open = threading.Event()

    def hold_next(self, n: int = 1) -> None:
        """Hold the `n`-th commit from now, and every one after it."""
        self.hold_from = self.commits + n

    def release(self) -> None:
        self._open.set()

    def __call__(self, txn: lmdb.Transaction) -> None:
        self.commits += 1
        if self.hold_from is not None and self.commits >= self.hold_from:
            self.holding.set()
            if not self._open.wait(WAIT):
                txn.abort()
                raise OSError(errno.ETIMEDOUT, "the test's commit gate never opened")
        txn.commit()


class Standalone:
    """A standalone broker's parts, as BrokerService puts them together."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gate = CommitGate()
        self.journal = Journal(path, commit=self.gate)
        self.model = Broker()
        self.events = EventLog(self.model, self.journal)

    async def written(self) -> None:
        """Everything recorded so far is committed (the loop's batch flushed first)."""
        await asyncio.sleep(0)
        await asyncio.to_thread(self.journal.barrier)

    def close(self) -> None:
        self.gate.release()
        self.journal.close()

    def journaled(self) -> dict[str, list[int]]:
        """The messages the journal holds, by queue (call once closed)."""
        with Journal(self.path) as j:
            st = j.replay(keep_bodies=False)
        return {name: sorted(q.messages) for name, q in st.queues.items()}


def outcome(pending: Pending) -> asyncio.Future[BaseException | None]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    pending.when_done(fut.set_result)
    return fut


async def at_gate(gate: CommitGate) -> None:
    """Return once a commit waits at the gate. The writer handed the previous commit's
    outcomes to the loop before it reached the gate, so those have run by now."""
    assert await asyncio.to_thread(gate.holding.wait, WAIT), "no commit reached the gate"


def test_a_durable_publish_settles_only_once_its_journal_write_is_done(tmp_path: Path) -> None:
    async def run() -> None:
        b = Standalone(tmp_path)
        try:
            b.model.declare_queue("q", durable=True)
            await b.written()
            b.gate.hold_next()
            result = b.model.enqueue("q", Message(b"m", durable=True), 0.0)
            pending = b.events.record_publish(result)
            assert pending is not None
            done = outcome(pending)
            await at_gate(b.gate)
            assert not done.done()  # the write is held: no outcome yet
            b.gate.release()
            assert await asyncio.wait_for(done, WAIT) is None
        finally:
            b.close()
        assert b.journaled() == {"q": [result.id]}

    asyncio.run(run())


def test_a_fanout_publish_waits_for_the_write_on_every_durable_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each enqueue in a commit of its own (one record per job, one job per commit): the
    first is written, the second held, and the publish still waits."""
    monkeypatch.setattr(LoopBatcher, "chunk", 1)

    async def run() -> None:
        b = Standalone(tmp_path)
        b.journal.writer.max_batch = 1
        try:
            for name in ("a", "b"):
                b.model.declare_queue(name, durable=True)
                b.model.bind("amq.fanout", name)
            await b.written()
            seq, commits = b.events.seq, b.gate.commits
            b.gate.hold_next(2)
            result = b.model.publish("amq.fanout", Message(b"m", durable=True), 0.0)
            assert result.queues == ("a", "b")
            pending = b.events.record_publish(result)
            assert pending is not None
            assert b.events.seq == seq + 2  # one event each, recorded once
            done = outcome(pending)
            await at_gate(b.gate)
            assert b.gate.commits == commits + 2  # the first enqueue committed, the second held
            assert not done.done()
            b.gate.release()
            assert await asyncio.wait_for(done, WAIT) is None
            # a consumer's acknowledgement is still the listener's: journaled as ever
            c = b.model.subscribe("a", credit=1)
            ((_, qm),) = b.model.dispatch(0.0)
            assert b.model.accept(c, qm.id)
            await b.written()
        finally:
            b.close()
        assert b.journaled() == {"a": [], "b": [result.id]}

    asyncio.run(run())


def test_what_waits_for_nothing_settles_at_once(tmp_path: Path) -> None:
    """No pending (settle at once) for a message that is not durable, one on a queue that is
    not, and one refused; none of them is journaled."""

    async def run() -> None:
        b = Standalone(tmp_path)
        try:
            b.model.declare_queue("durable", durable=True)
            b.model.declare_queue("transient")
            b.model.declare_queue("one", durable=True, arguments={"qpid.max_count": 1})
            b.model.enqueue("one", Message(b"first"), 0.0)  # not durable: fills it, unjournaled
            await b.written()
            b.gate.hold_next()  # any write would now wait: none must be waited for
            plain = b.model.enqueue("durable", Message(b"m"), 0.0)
            assert plain.accepted and b.events.record_publish(plain) is None
            transient = b.model.enqueue("transient", Message(b"m", durable=True), 0.0)
            assert transient.accepted and b.events.record_publish(transient) is None
            refused = b.model.enqueue("one", Message(b"m", durable=True), 0.0)
            assert not refused.accepted and refused.enqueued == ()
            assert b.events.record_publish(refused) is None
        finally:
            b.close()
        assert b.journaled() == {"durable": [], "one": []}

    asyncio.run(run())
