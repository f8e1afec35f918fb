"""An empty backup applies a primary's snapshot (issue 13, catch-up speed): every message reaches
the model and the journal, and the messages are frozen out of the cyclic garbage collector's
passes, which would otherwise rescan every message of the snapshot so far, again and again. The
real replicator, event log, model and journal (in tmp_path) on an asyncio loop; the batches go
through the stream's own encoding."""

from __future__ import annotations

import asyncio
import gc
import uuid
from pathlib import Path
from typing import Any

from broker.eventlog import EventLog
from broker.ha.primary import RecentLog
from broker.ha.replicator import Replicator
from broker.model import Broker
from broker.replication import levels, stream
from broker.restore import restore_entities
from qstore.journal import Enqueue, Journal, QueueDeclare

Q = uuid.UUID(int=1)
WAIT = 10.0
PRIMARY = uuid.UUID(int=9)


def snapshot(n: int, per_batch: int) -> list[list[stream.Item]]:
    """A primary's snapshot of one durable queue of `n` messages, in batches as it sends them."""
    head = [
        stream.control(stream.SNAPSHOT_BEGIN, 1, 50, position=[1, 50]),
        stream.event(QueueDeclare("q", Q, {levels.KEY: levels.ALL}), 1, 50, stream.DURABLE),
    ]
    msgs = [  # fields of their own: priority, expiry (ms), delivery count; every 7th transient
        stream.event(
            Enqueue("q", i, f"message {i}".encode() * 50, i % 10, 2_000_000_000_000 + i, i % 3),
            1,
            50,
            0 if i % 7 == 0 else stream.DURABLE,
        )
        for i in range(1, n + 1)
    ]
    end = stream.control(
        stream.SNAPSHOT_END, 1, 50, position=[1, 50], epochs=[[1, str(PRIMARY), 1]]
    )
    return [head] + [msgs[i : i + per_batch] for i in range(0, n, per_batch)] + [[end]]


def test_a_snapshot_reaches_model_and_journal_and_leaves_the_collector_alone(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        j = Journal(tmp_path)
        try:
            model = Broker()
            events = EventLog(model, j, levels.ALL)
            events.numbering = False
            restore_entities(model, j, events)
            rep = Replicator(model, events, RecentLog(events.seq))
            loop = asyncio.get_running_loop()
            frozen = gc.get_freeze_count()
            for items in snapshot(300, 100):
                done: asyncio.Future[Any] = loop.create_future()
                rep.apply(stream.decode(stream.encode(items)), done.set_result)
                assert await asyncio.wait_for(done, WAIT) is None
            held = list(model.queues["q"].messages())
            assert [m.id for m in held] == list(range(1, 301))
            for m in held:  # each field where it belongs
                i = m.id
                assert m.message.body == f"message {i}".encode() * 50
                assert (m.message.durable, m.message.priority) == (i % 7 != 0, i % 10)
                assert m.message.expiry == (2_000_000_000_000 + i) / 1000
                assert m.delivery_count == m.message.delivery_count == i % 3
                assert (m.message.subject, m.message.properties, m.message.message_id) == (
                    None,
                    {},
                    None,
                )
            st = j.replay(keep_bodies=False)
            assert st.position == (1, 50)
            durable = [i for i in range(1, 301) if i % 7]  # the transient ones are not journaled
            assert list(st.queues["q"].messages) == durable
            # out of the collector's generations: no pass walks them again
            assert gc.get_freeze_count() >= frozen + 2 * len(held)
            tracked = {id(o) for o in gc.get_objects()}
            assert not any(id(m) in tracked or id(m.message) in tracked for m in held)
        finally:
            j.close()
            gc.unfreeze()  # the other tests' collector as it was (frozen objects to the oldest)

    asyncio.run(run())
