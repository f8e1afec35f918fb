"""ReplicatingSubscription (broker/ha/subscription.py): what a backup is sent next.

In-process: items go in with `add`/`catch_up`, batches come out of `next_batch` as the primary's
BackupStream takes them (`in_flight` and `credit` are what its link would say). Each test checks
the batches and the seq each one's settlement acknowledges; the last, a property test, runs random
publishing, consuming and settling against a model of the rule and checks that every backup
reaches its target.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.ha.subscription import (
    BATCH_BYTES,
    BATCH_ITEMS,
    CATCH_UP_BATCH_BYTES,
    CATCH_UP_BATCH_ITEMS,
    CATCH_UP_IN_FLIGHT,
    MAX_IN_FLIGHT,
    ReplicatingSubscription,
    item_size,
)
from broker.replication import stream
from broker.replication.stream import Item
from qstore.journal.records import Dequeue, Enqueue

Q = "q"


def enq(sub: ReplicatingSubscription, seq: int, msgid: int, body: bytes = b"m") -> Item:
    it = stream.event(Enqueue(Q, msgid, body), 1, seq)
    sub.add(it, (Q, msgid))
    return it


def deq(sub: ReplicatingSubscription, seq: int, msgid: int) -> Item:
    it = stream.event(Dequeue(Q, msgid), 1, seq)
    sub.add(it, (Q, msgid))
    return it


def ctl(seq: int) -> Item:
    return stream.control(stream.MEMBERSHIP, 1, seq, members=[])


def take_all(sub: ReplicatingSubscription) -> list[tuple[list[Item], int]]:
    """Every batch, each settled before the next is asked for."""
    out = []
    while (got := sub.next_batch(0, 1)) is not None:
        out.append(got)
        assert len(out) < 10_000, "next_batch never runs dry"
    return out


def seqs(batch: list[Item]) -> list[int]:
    return [it.seq for it in batch]


# -- batch limits --------------------------------------------------------------------------------


def test_what_one_turn_published_goes_as_one_batch() -> None:
    sub = ReplicatingSubscription()
    for seq in range(1, 11):
        enq(sub, seq, seq)
    assert [(seqs(b), last) for b, last in take_all(sub)] == [(list(range(1, 11)), 10)]
    assert sub.sent == 10


def test_a_batch_holds_at_most_batch_items() -> None:
    sub = ReplicatingSubscription()
    n = BATCH_ITEMS * 2 + 5
    for seq in range(1, n + 1):
        enq(sub, seq, seq)
    batches = take_all(sub)
    assert [len(b) for b, _ in batches] == [BATCH_ITEMS, BATCH_ITEMS, 5]
    assert [last for _, last in batches] == [BATCH_ITEMS, 2 * BATCH_ITEMS, n]
    assert [it.seq for b, _ in batches for it in b] == list(range(1, n + 1))


def test_a_batch_closes_once_it_reaches_batch_bytes() -> None:
    sub = ReplicatingSubscription()
    body = b"x" * (BATCH_BYTES // 4 - 64)  # four of them count BATCH_BYTES exactly
    for seq in range(1, 7):
        enq(sub, seq, seq, body)
    assert item_size(sub.pending[0]) * 4 == BATCH_BYTES  # type: ignore[arg-type]
    assert [(seqs(b), last) for b, last in take_all(sub)] == [([1, 2, 3, 4], 4), ([5, 6], 6)]


def test_under_batch_bytes_everything_pending_goes_at_once() -> None:
    sub = ReplicatingSubscription()
    body = b"x" * (BATCH_BYTES // 4 - 65)  # four of them stay just under BATCH_BYTES
    for seq in range(1, 5):
        enq(sub, seq, seq, body)
    assert [(seqs(b), last) for b, last in take_all(sub)] == [([1, 2, 3, 4], 4)]


# -- pairs never sent ----------------------------------------------------------------------------


def test_an_enqueue_consumed_before_it_was_sent_is_dropped_with_its_dequeue() -> None:
    sub = ReplicatingSubscription()
    enq(sub, 1, 10)
    enq(sub, 2, 20)
    deq(sub, 3, 20)
    enq(sub, 4, 30)
    # the batch skips the pair; it ends at 4 anyway
    assert [(seqs(b), last) for b, last in take_all(sub)] == [([1, 4], 4)]


def test_a_batch_acknowledges_a_dropped_pair_at_the_end() -> None:
    """A backup whose last items were a dropped pair still reaches its target (`added`)."""
    sub = ReplicatingSubscription()
    enq(sub, 1, 10)
    enq(sub, 2, 20)
    deq(sub, 3, 20)
    assert sub.added == 3
    assert [(seqs(b), last) for b, last in take_all(sub)] == [([1], 3)]
    assert sub.sent == 3


def test_nothing_but_a_dropped_pair_still_sends_an_empty_batch_for_its_seq() -> None:
    sub = ReplicatingSubscription()
    enq(sub, 1, 10)
    deq(sub, 2, 10)
    assert sub.oldest_unsent() is None
    assert take_all(sub) == [([], 2)]
    assert sub.sent == 2 and not sub.has_unsent()


def test_no_empty_batch_for_what_a_batch_already_acknowledged() -> None:
    sub = ReplicatingSubscription()
    c = ctl(5)
    sub.add(c)
    assert take_all(sub) == [([c], 5)]
    # a pair numbered below what was acknowledged (as control items carry the current seq)
    enq(sub, 3, 30)
    deq(sub, 4, 30)
    assert sub.has_unsent()
    assert sub.next_batch(0, 1) is None
    assert not sub.has_unsent() and sub.sent == 5


def test_a_dequeue_of_a_sent_enqueue_is_sent() -> None:
    sub = ReplicatingSubscription()
    enq(sub, 1, 10)
    assert [(seqs(b), last) for b, last in take_all(sub)] == [([1], 1)]
    deq(sub, 2, 10)
    batches = take_all(sub)
    assert [(seqs(b), last) for b, last in batches] == [([2], 2)]
    assert batches[0][0][0].kind == stream.RT_DEQUEUE


def test_only_the_unsent_part_of_a_large_pending_drops_pairs() -> None:
    """A long pending list goes in several batches: dequeues of what was sent go out; enqueues
    still pending are dropped with their dequeues, also once the index forgot the sent ones."""
    sub = ReplicatingSubscription()
    n = 4 * BATCH_ITEMS
    for seq in range(1, n + 1):
        enq(sub, seq, seq)
    for _ in range(3):
        assert sub.next_batch(0, 1) is not None
    assert sub.oldest_unsent() == 3 * BATCH_ITEMS + 1
    for msgid in range(1, n + 1):  # consume everything
        deq(sub, n + msgid, msgid)
    rest = take_all(sub)
    sent = [it for b, _ in rest for it in b]
    assert all(it.kind == stream.RT_DEQUEUE for it in sent)
    assert [it.record.msgid for it in sent] == list(range(1, 3 * BATCH_ITEMS + 1))  # type: ignore[union-attr]
    assert rest[-1][1] == 2 * n


def test_the_index_of_unsent_enqueues_forgets_what_was_sent() -> None:
    """Memory: a backup far behind does not keep an entry for every enqueue ever sent."""
    sub = ReplicatingSubscription()
    n = 4 * BATCH_ITEMS
    for seq in range(1, n + 1):
        enq(sub, seq, seq)
    for _ in range(3):
        sub.next_batch(0, 1)
    assert len(sub._enqueues) == BATCH_ITEMS  # only the unsent ones: the sent were shed
    sub.next_batch(0, 1)
    assert not sub.pending and not sub._enqueues


# -- catch-up ------------------------------------------------------------------------------------


def test_the_backlog_goes_first_in_catch_up_batches() -> None:
    sub = ReplicatingSubscription()
    n = CATCH_UP_BATCH_ITEMS + 10
    backlog = [ctl(seq) for seq in range(1, n + 1)]
    sub.catch_up(iter(backlog), n)
    enq(sub, n + 1, 1)
    enq(sub, n + 2, 2)
    assert sub.oldest_unsent() == 1
    batches = take_all(sub)
    assert [(len(b), last) for b, last in batches] == [
        (CATCH_UP_BATCH_ITEMS, CATCH_UP_BATCH_ITEMS),
        (10, n),  # the backlog's last batch acknowledges its own end: pending follows
        (2, n + 2),
    ]
    assert [it.seq for b, _ in batches for it in b] == list(range(1, n + 3))


def test_catch_up_batches_close_at_catch_up_batch_bytes() -> None:
    sub = ReplicatingSubscription()
    body = b"x" * (CATCH_UP_BATCH_BYTES // 2 - 64)
    backlog = [stream.event(Enqueue(Q, i, body), 1, 7) for i in range(3)]  # a snapshot: one seq
    sub.catch_up(iter(backlog), 7)
    assert [(len(b), last) for b, last in take_all(sub)] == [(2, 7), (1, 7)]


def test_a_catch_up_stands_for_its_last_seq_even_when_empty_at_the_end() -> None:
    """`last` is the highest seq the catch-up covers: its final batch acknowledges it when
    nothing is pending behind it."""
    sub = ReplicatingSubscription()
    sub.catch_up(iter([ctl(3), ctl(4)]), 9)
    assert sub.added == 9
    assert [(seqs(b), last) for b, last in take_all(sub)] == [([3, 4], 9)]
    assert sub.sent == 9
    enq(sub, 7, 70)  # a pair below it (out of order, to see it): nothing left to acknowledge
    deq(sub, 8, 70)
    assert sub.next_batch(0, 1) is None


def test_an_empty_catch_up_leaves_only_pending() -> None:
    sub = ReplicatingSubscription()
    sub.catch_up(iter(()), 0)
    assert sub.backlog is None and not sub.has_unsent()
    assert sub.next_batch(0, 1) is None


# -- room ----------------------------------------------------------------------------------------


def test_pending_batches_wait_for_room_in_flight() -> None:
    sub = ReplicatingSubscription()
    enq(sub, 1, 1)
    assert sub.next_batch(MAX_IN_FLIGHT, 10) is None
    assert sub.next_batch(CATCH_UP_IN_FLIGHT - 1, 10) is None  # the catch-up's room is not theirs
    assert sub.has_unsent() and sub.oldest_unsent() == 1
    got = sub.next_batch(MAX_IN_FLIGHT - 1, 10)
    assert got is not None and seqs(got[0]) == [1]


def test_catch_up_batches_have_more_room_in_flight() -> None:
    sub = ReplicatingSubscription()
    sub.catch_up(iter([ctl(seq) for seq in range(1, 2 * CATCH_UP_BATCH_ITEMS + 1)]), 0)
    got = sub.next_batch(MAX_IN_FLIGHT, 10)
    assert got is not None and len(got[0]) == CATCH_UP_BATCH_ITEMS
    assert sub.next_batch(CATCH_UP_IN_FLIGHT, 10) is None
    got = sub.next_batch(CATCH_UP_IN_FLIGHT - 1, 10)
    assert got is not None and got[1] == 2 * CATCH_UP_BATCH_ITEMS


def test_pending_waits_behind_the_backlog_whatever_the_room() -> None:
    sub = ReplicatingSubscription()
    sub.catch_up(iter([ctl(1)]), 1)
    enq(sub, 2, 2)
    assert sub.next_batch(CATCH_UP_IN_FLIGHT, 10) is None  # the backlog has no room: nor pending
    got = sub.next_batch(MAX_IN_FLIGHT, 10)  # the backlog's batch, where pending would not go
    assert got is not None and (seqs(got[0]), got[1]) == ([1], 1)
    assert sub.next_batch(MAX_IN_FLIGHT, 10) is None  # now it is pending's turn, with its limit


def test_no_credit_no_batch() -> None:
    sub = ReplicatingSubscription()
    sub.catch_up(iter([ctl(1)]), 1)
    enq(sub, 2, 2)
    for credit in (0, -1):
        assert sub.next_batch(0, credit) is None
    assert sub.oldest_unsent() == 1 and sub.sent == 0
    assert [seqs(b) for b, _ in take_all(sub)] == [[1], [2]]


# -- what the primary keeps payloads for ---------------------------------------------------------


def test_oldest_unsent_follows_what_batches_take() -> None:
    sub = ReplicatingSubscription()
    assert sub.oldest_unsent() is None
    enq(sub, 1, 10)
    enq(sub, 2, 20)
    deq(sub, 3, 10)  # drops 1 and 3: the oldest left is 2
    assert sub.oldest_unsent() == 2
    for seq in range(4, 4 + BATCH_ITEMS + 1):
        enq(sub, seq, 100 + seq)
    sub.next_batch(0, 1)  # 2 .. BATCH_ITEMS + 2
    assert sub.oldest_unsent() == BATCH_ITEMS + 3
    take_all(sub)
    assert sub.oldest_unsent() is None
    sub.catch_up(iter([ctl(50), ctl(60)]), 60)
    enq(sub, 5000, 5000)
    assert sub.oldest_unsent() == 50
    sub.next_batch(0, 1)
    assert sub.oldest_unsent() == 5000


# -- the whole rule, against a model -------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.integers(1, 200)),  # body size
        st.tuples(st.just("dequeue"), st.integers(0, 10_000)),  # which live message
        st.tuples(st.just("control"), st.just(0)),
        st.tuples(st.just("flush"), st.integers(0, 3)),  # link credit
        st.tuples(st.just("settle"), st.integers(0, 10)),  # how many batches settle
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(backlog=st.integers(0, 2 * CATCH_UP_BATCH_ITEMS), ops=_ops)
def test_every_backup_reaches_its_target(backlog: int, ops: list[tuple[str, int]]) -> None:
    """Random publishing, consuming and settling. The backup gets, in seq order, every item but
    the pairs whose enqueue was still unsent when consumed; its acknowledgements rise and end at
    the highest seq given; the limits in flight hold throughout."""
    sub = ReplicatingSubscription()
    seq = backlog
    sub.catch_up(iter([ctl(s) for s in range(1, backlog + 1)]), backlog)
    expected: list[int] = list(range(1, backlog + 1))  # the seqs the backup must get, in order
    unsent: set[int] = set(expected)  # given, not taken yet, not dropped
    enqueued: dict[int, int] = {}  # live message id -> its enqueue's seq
    taken: set[int] = set()  # seqs taken into batches
    got: list[int] = []
    in_flight: list[int] = []  # `last` of each batch awaiting settlement
    acked = 0

    def flush(credit: int) -> None:
        while (b := sub.next_batch(len(in_flight), credit)) is not None:
            batch, last = b
            if batch and batch[0].seq <= backlog:  # a catch-up batch
                assert len(in_flight) < CATCH_UP_IN_FLIGHT and len(batch) <= CATCH_UP_BATCH_ITEMS
            else:
                assert len(in_flight) < MAX_IN_FLIGHT and len(batch) <= BATCH_ITEMS
            assert not batch or last >= batch[-1].seq
            got.extend(it.seq for it in batch)
            taken.update(it.seq for it in batch)
            unsent.difference_update(it.seq for it in batch)
            in_flight.append(last)
            credit -= 1

    for op, arg in ops:
        if op == "enqueue":
            seq += 1
            enqueued[seq] = seq  # message id = its enqueue's seq
            enq(sub, seq, seq, b"x" * arg)
            expected.append(seq)
            unsent.add(seq)
        elif op == "dequeue" and enqueued:
            msgid = sorted(enqueued)[arg % len(enqueued)]
            at = enqueued.pop(msgid)
            seq += 1
            deq(sub, seq, msgid)
            if at in taken:
                expected.append(seq)
                unsent.add(seq)
            else:  # never sent: neither goes
                expected.remove(at)
                unsent.discard(at)
        elif op == "control":
            seq += 1
            sub.add(ctl(seq))
            expected.append(seq)
            unsent.add(seq)
        elif op == "flush":
            flush(arg)
        elif op == "settle":
            for last in in_flight[:arg]:
                assert last >= acked
                acked = last
            del in_flight[:arg]
        assert sub.oldest_unsent() == (min(unsent) if unsent else None)
        assert sub.added == seq
    for _ in range(100):  # the link drains: every batch settles
        if not (sub.has_unsent() or in_flight):
            break
        flush(10)
        if in_flight:
            assert in_flight[-1] >= acked
            acked = in_flight[-1]
            in_flight.clear()
    assert not sub.has_unsent() and sub.oldest_unsent() is None
    assert got == expected
    assert acked == sub.added == seq
