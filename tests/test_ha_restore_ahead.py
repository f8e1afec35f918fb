"""A restarted backup catches up while it restores its messages (issue 13): message events of the
primary's tail are journaled, and acknowledged, before the model holds the journal's messages;
they reach the model once it does; anything else waits, unjournaled, until then, and is dropped
if the primary goes away meanwhile. The real replicator, event log, model and journal (in
tmp_path) on an asyncio loop; the batches go through the stream's own encoding."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from broker.eventlog import EventLog
from broker.ha.primary import RecentLog
from broker.ha.replicator import Replicator
from broker.model import Broker
from broker.replication import levels, stream
from broker.restore import MessageRestore, restore_entities
from qstore.journal import Dequeue, Enqueue, Epoch, Journal, QueueDeclare

NODE, OTHER = uuid.UUID(int=7), uuid.UUID(int=8)
Q = uuid.UUID(int=1)
WAIT = 10.0


def body(n: int) -> bytes:
    return f"message {n}".encode()


def backup_journal(path: Path) -> None:
    """What a backup held when it stopped: epoch 1, a durable queue at level all, messages 1-3."""
    with Journal(path) as j:
        j.append(Epoch(1, NODE), epoch=1, origin=1, replica=True)
        j.append(QueueDeclare("q", Q, {levels.KEY: levels.ALL}), epoch=1, origin=2, replica=True)
        for n in (1, 2, 3):
            j.append(Enqueue("q", n, body(n)), epoch=1, origin=2 + n, replica=True)


def wire(items: list[stream.Item]) -> list[stream.Item]:
    """A batch as the backup receives it (encoded by the primary, decoded by the backup)."""
    return stream.decode(stream.encode(items))


def enqueue(n: int, seq: int, epoch: int = 1) -> stream.Item:
    return stream.event(Enqueue("q", n, body(n)), epoch, seq, stream.DURABLE)


class Backup:
    """A restarted backup's parts, as BrokerService and HaMember put them together."""

    def __init__(self, path: Path) -> None:
        self.journal = Journal(path)
        self.model = Broker()
        self.events = EventLog(self.model, self.journal, levels.ALL)
        self.events.numbering = False
        self.messages: MessageRestore = restore_entities(self.model, self.journal, self.events)
        self.replicator = Replicator(self.model, self.events, RecentLog(self.events.seq))
        self.replicator.deferring = True
        self.controls: list[int] = []
        self.replicator.on_control = lambda it: self.controls.append(it.kind)

    def apply(self, items: list[stream.Item]) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.replicator.apply(wire(items), done.set_result)
        return done

    def restore(self) -> None:
        while self.messages.step(2):
            pass
        self.replicator.restored()

    def held(self) -> list[int]:
        return [m.id for m in self.model.queues["q"].messages()]


def journal_view(j: Journal) -> tuple[tuple[int, int], dict[str, list[int]]]:
    """What the journal holds once everything queued is written: position, messages by queue."""
    j.barrier()
    st = j.replay(keep_bodies=False)
    return st.position, {q: list(s.messages) for q, s in st.queues.items()}


async def settled(fut: asyncio.Future[Any]) -> Any:
    return await asyncio.wait_for(fut, WAIT)


def test_message_events_are_journaled_and_acknowledged_before_the_restore(tmp_path: Path) -> None:
    backup_journal(tmp_path)

    async def run() -> None:
        b = Backup(tmp_path)
        try:
            tail = [
                stream.control(stream.TAIL, 1, 5, **{"from": 5}),
                enqueue(4, 6),
                stream.event(Dequeue("q", 1), 1, 7),
            ]
            assert await settled(b.apply(tail)) is None  # acknowledged: durable
            assert b.controls == [stream.TAIL]
            assert b.held() == []  # nothing restored yet, the tail not applied either
            assert (b.events.epoch, b.events.seq) == (1, 7)  # what it states on a reconnect
            assert journal_view(b.journal) == ((1, 7), {"q": [2, 3, 4]})
            # a new primary (its epoch) went on meanwhile: no model state, journaled as well
            promoted = [stream.event(Epoch(2, OTHER), 2, 8), enqueue(5, 9, epoch=2)]
            assert await settled(b.apply(promoted)) is None
            ready = b.apply([stream.control(stream.READY, 2, 9)])
            assert await settled(ready) is None and b.controls[-1] == stream.READY
            b.restore()
            assert b.held() == [2, 3, 4, 5]
            assert journal_view(b.journal) == ((2, 9), {"q": [2, 3, 4, 5]})  # nothing twice
            epochs = [(e.number, e.origin) for e in b.journal.replay(keep_bodies=False).epochs]
            assert epochs == [(1, 1), (2, 8)] and b.events.history.numbers == [1, 2]
        finally:
            b.journal.close()

    asyncio.run(run())


def test_anything_else_waits_unjournaled_with_all_after_it(tmp_path: Path) -> None:
    backup_journal(tmp_path)

    async def run() -> None:
        b = Backup(tmp_path)
        try:
            other = stream.event(QueueDeclare("other", uuid.UUID(int=2)), 1, 6, stream.DURABLE)
            first = b.apply([other])
            second = b.apply([enqueue(4, 7)])  # a message event: it waits all the same
            await asyncio.sleep(0.05)
            assert not first.done() and not second.done()
            assert journal_view(b.journal) == ((1, 5), {"q": [1, 2, 3]})
            b.restore()
            assert (await settled(first), await settled(second)) == (None, None)
            assert "other" in b.model.queues and b.held() == [1, 2, 3, 4]
            assert journal_view(b.journal) == ((1, 7), {"q": [1, 2, 3, 4], "other": []})
        finally:
            b.journal.close()

    asyncio.run(run())


def test_what_waits_unjournaled_is_dropped_with_the_primary(tmp_path: Path) -> None:
    backup_journal(tmp_path)

    async def run() -> None:
        b = Backup(tmp_path)
        try:
            journaled = b.apply([enqueue(4, 6)])
            assert await settled(journaled) is None
            waiting = b.apply([stream.event(QueueDeclare("other", uuid.UUID(int=2)), 1, 7)])
            b.replicator.link_lost()  # never acknowledged: the next primary sends it again
            b.restore()
            assert not waiting.done() and "other" not in b.model.queues
            assert b.held() == [1, 2, 3, 4]
            # the next primary's batches are applied as they come
            again = b.apply([stream.event(Dequeue("q", 2), 1, 7)])
            assert await settled(again) is None and b.held() == [1, 3, 4]
        finally:
            b.journal.close()

    asyncio.run(run())
