"""Dedup windows in the model, the codec and the journal (issue 15); the broker and HA tests
are in tests/test_dedup_broker.py and tests/test_dedup_ha.py."""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

from inspect_support import run
from journal_helpers import seqs_held, state_of, uid
from proton import Message as AmqpMessage

from broker.amqp import codec
from broker.model import Broker, Message
from broker.model.dedup import DedupWindow
from qstore.journal import Dequeue, Enqueue, Journal, QueueDeclare

WINDOW = {"qstore.dedup-window": 3}


def amqp(body: str, id: object = None) -> bytes:
    m = AmqpMessage(body=body, durable=True)
    if id is not None:
        m.id = id
    return m.encode()


def received(body: str, id: object = None) -> Message:
    return codec.extract(amqp(body, id), 0.0)[0]


def depth(b: Broker, q: str) -> int:
    return b.queues[q].depth


def test_codec_reads_the_message_id_as_encoded() -> None:
    for id in ("order-17", 17, b"\x01\x02", None):
        data = amqp("x", id)
        mid = codec.extract(data, 0.0)[0].message_id
        assert mid == codec.message_id(data)
        assert (mid is None) == (id is None)
    assert codec.message_id(amqp("x", "a")) != codec.message_id(amqp("x", "b"))
    m = AmqpMessage(body="x", subject="s")  # properties without an id
    assert (
        codec.message_id(m.encode()) is None and codec.extract(m.encode(), 0)[0].message_id is None
    )


def test_a_message_whose_id_is_in_the_window_is_accepted_and_not_enqueued() -> None:
    b = Broker()
    b.declare_queue("q", arguments=WINDOW)
    first = b.enqueue("q", received("one", "id-1"), 0.0)
    again = b.enqueue("q", received("one again", "id-1"), 0.0)
    assert first.accepted and first.queues == ("q",)
    assert again.accepted and again.queues == () and again.id is None
    assert depth(b, "q") == 1
    s = b.queues["q"].stats()
    assert (s.duplicates_dropped, s.dedup_window, s.enqueues) == (1, 3, 1)


def test_consumed_ids_stay_until_they_leave_the_window_then_are_accepted_again() -> None:
    b = Broker()
    b.declare_queue("q", arguments=WINDOW)
    b.enqueue("q", received("a", "A"), 0.0)
    c = b.subscribe("q", credit=100)
    for consumer, qm in b.dispatch(0.0):
        b.accept(consumer, qm.id)
    assert depth(b, "q") == 0
    assert not b.enqueue("q", received("a", "A"), 0.0).queues  # consumed, still in the window
    b.enqueue("q", received("b", "B"), 0.0)
    b.enqueue("q", received("no id"), 0.0)  # a message without an id takes a slot too
    b.enqueue("q", received("c", "C"), 0.0)  # A leaves the window of 3
    assert b.enqueue("q", received("a", "A"), 0.0).queues == ("q",)
    assert not b.enqueue("q", received("c", "C"), 0.0).queues
    b.unsubscribe(c)


def test_no_id_no_dedup_and_no_window_no_dedup() -> None:
    b = Broker()
    b.declare_queue("q", arguments=WINDOW)
    b.declare_queue("plain")
    for _ in range(3):
        assert b.enqueue("q", received("same"), 0.0).queues == ("q",)
        assert b.enqueue("plain", received("same", "X"), 0.0).queues == ("plain",)
    assert depth(b, "q") == depth(b, "plain") == 3


def test_fanout_drops_only_where_the_window_holds_the_id() -> None:
    b = Broker()
    b.declare_queue("w", arguments=WINDOW)
    b.declare_queue("plain")
    b.declare_exchange("x", "fanout")
    b.bind("x", "w", "")
    b.bind("x", "plain", "")
    assert b.publish("x", received("m", "M"), 0.0).queues == ("w", "plain")
    assert b.publish("x", received("m", "M"), 0.0).queues == ("plain",)
    assert (depth(b, "w"), depth(b, "plain")) == (1, 2)


def test_broker_default_applies_to_new_queues_that_set_none() -> None:
    b = Broker()
    b.default_dedup_window = 5
    b.declare_queue("d")
    b.declare_queue("own", arguments={"qstore.dedup-window": 0})
    b.declare_queue("tmp", exclusive_owner="conn")
    b.declare_queue("restored", arguments={}, uuid=uid(1))  # a journal's or a primary's queue
    assert b.queues["d"].arguments["qstore.dedup-window"] == 5
    assert [b.queues[n].dedup is not None for n in ("d", "own", "tmp", "restored")] == [
        True,
        False,
        False,
        False,
    ]


def test_window_memory_is_bounded_by_its_size() -> None:
    """Per-message cost of a full window of 40-byte string ids (the figure in dedup.py)."""
    n = 20_000
    ids = [codec.message_id(amqp("x", f"{'c' * 30}:{i:08d}")) for i in range(3 * n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    w = DedupWindow(n)
    for i in ids:
        w.add(i)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(w) == w.ids == n
    per_id = (used + sum(sys.getsizeof(i) for i in ids[-n:])) / n  # ids' bytes kept alive too
    print(f"dedup window: {per_id:.0f} bytes per 40-byte id")
    assert per_id < 200


# -- the journal -----------------------------------------------------------------------------


def test_journal_keeps_a_consumed_messages_records_while_its_id_is_in_the_window(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path, auto_compact=False) as j:
        j.append(QueueDeclare("q", uid(1), {"qstore.dedup-window": 2}))  # 1
        j.append(Enqueue("q", 1, amqp("one", "A")))  # 2
        j.append(Dequeue("q", 1))  # 3: consumed, A still in the window
        j.append(Enqueue("q", 2, amqp("two", "B")))  # 4
        j.append(Dequeue("q", 2))  # 5
        j.compact()
        assert seqs_held(j) == [1, 2, 3, 4, 5]
        assert [m for m, _, _ in j.replay().queues["q"].window_seqs()] == [1, 2]
        j.append(Enqueue("q", 3, amqp("three")))  # 6: A leaves the window
        j.append(Enqueue("q", 4, amqp("four", "D")))  # 7: B leaves
        j.append(Enqueue("q", 5, amqp("five", "E")))  # 8: the newest record is never deleted
        j.compact()
        assert seqs_held(j) == [1, 6, 7, 8]
        before = list(j.entries())
    with Journal(tmp_path) as j:
        q = j.replay().queues["q"]
        assert [(m, live) for m, _, live in q.window_seqs()] == [(4, True), (5, True)]
        assert j.replay().snapshot() == state_of(before).snapshot()


def test_qstore_journal_dedup_shows_the_window(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append(QueueDeclare("q", uid(1), {"qstore.dedup-window": 3}))
        for n, mid in enumerate(["A", None, "C", "D"], start=1):
            j.append(Enqueue("q", n, amqp(f"m{n}", mid)))
        j.append(Dequeue("q", 3))  # C consumed: still in the window
        j.append(QueueDeclare("plain", uid(2)))
    cp = run("dedup", tmp_path, "--queue", "q")
    assert cp.returncode == 0, cp.stderr
    rows = [ln.split() for ln in cp.stdout.splitlines()]
    assert [r[2:] for r in rows[1:4]] == [["live", "-"], ["consumed", "C"], ["live", "D"]]
    assert rows[-1][:3] == ["3", "of", "3"]
    cp = run("dedup", tmp_path, "--queue", "q", "--json")
    assert [json.loads(ln)["message_id"] for ln in cp.stdout.splitlines()] == [None, "C", "D"]
    assert "no dedup window" in run("dedup", tmp_path, "--queue", "plain").stdout
    cp = run("dedup", tmp_path, "--queue", "nope")
    assert cp.returncode == 1 and "no queue 'nope'" in cp.stderr


def test_an_id_counts_only_once_its_publish_is_answered_accepted() -> None:
    """A resend answered `accepted` on the strength of an original whose write then failed
    would be lost: the window holds an id from its put, but it counts only once settled."""
    w = DedupWindow(3)
    w.add(b"a")
    slot = w.hold(b"a")
    assert b"a" not in w  # its journal write (or the backups) may still fail
    w.settled(b"a", slot)
    assert b"a" in w
    w.add(b"b")
    w.hold(b"b")  # this publish failed: never settled
    assert b"b" not in w
    w.add(b"b")  # the resend, stored
    w.settled(b"b", w.hold(b"b"))
    assert b"b" in w
    w.add(b"c")  # "a" leaves
    assert b"b" in w
    w.add(b"d")  # the failed "b" leaves; the stored one stays
    assert b"b" in w and w.entries() == [b"b", b"c", b"d"]
    w.add(b"e")
    w.add(b"f")
    assert b"b" not in w and w.ids == 3
    w.add(b"g")
    w.hold(b"g")
    w.add(b"h")
    w.add(b"i")
    w.add(b"j")  # an unsettled slot leaving takes its hold along
    assert b"g" not in w and w._unsettled == {}
