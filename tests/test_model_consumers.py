"""Consumers in the broker model: round-robin, credit, browsing, outcomes, consumer death."""

from __future__ import annotations

from broker.model import Broker, DeliveryCountChanged, Dequeued, Message
from broker.model.store import COMPACT_MIN


def make(n: int, queue: str = "q", **kw: object) -> Broker:
    b = Broker()
    b.declare_queue(queue, **kw)  # type: ignore[arg-type]
    for i in range(n):
        b.enqueue(queue, Message(b"m%d" % i), 0.0)
    return b


def bodies_of(deliveries: list) -> list[bytes]:
    return [qm.message.body for _, qm in deliveries]


def test_round_robin_among_consumers_with_credit() -> None:
    b = make(7)
    c1 = b.subscribe("q", credit=10, context="link-1")
    c2 = b.subscribe("q", credit=10, context="link-2")
    c3 = b.subscribe("q", credit=2, context="link-3")
    out = b.dispatch(0.0)
    assert [(c.context, qm.message.body) for c, qm in out] == [
        ("link-1", b"m0"),
        ("link-2", b"m1"),
        ("link-3", b"m2"),
        ("link-1", b"m3"),
        ("link-2", b"m4"),
        ("link-3", b"m5"),
        ("link-1", b"m6"),
    ]
    assert (c1.credit, c2.credit, c3.credit) == (7, 8, 0)
    assert len(c1.acquired) == 3 and b.queues["q"].stats().acquired == 7


def test_credit_limits_and_resumes() -> None:
    b = make(5)
    c = b.subscribe("q")
    assert b.dispatch(0.0) == []  # no credit, nothing sent
    b.set_credit(c, 2)
    assert bodies_of(b.dispatch(0.0)) == [b"m0", b"m1"]
    assert c.credit == 0 and b.dispatch(0.0) == []
    b.set_credit(c, 10)
    assert bodies_of(b.dispatch(0.0)) == [b"m2", b"m3", b"m4"]
    assert c.credit == 7 and b.queues["q"].available == 0  # credit left: a drain may end
    b.set_credit(c, 0)  # drained / credit withdrawn
    b.enqueue("q", Message(b"late"), 0.0)
    assert b.dispatch(0.0) == []
    b.set_credit(c, 1)
    assert bodies_of(b.dispatch(0.0)) == [b"late"]


def test_new_messages_reach_waiting_consumers() -> None:
    b = make(0)
    b.subscribe("q", credit=5)
    assert b.dispatch(0.0) == []
    b.enqueue("q", Message(b"x"), 0.0)
    assert bodies_of(b.dispatch(0.0)) == [b"x"]


def test_accept_dequeues() -> None:
    b = make(2)
    events: list = []
    b.add_listener(events.append)
    c = b.subscribe("q", credit=2)
    out = b.dispatch(0.0)
    assert all(qm.first_acquirer for _, qm in out)
    assert b.accept(c, out[0][1].id)
    assert not b.accept(c, out[0][1].id)  # twice: nothing more happens
    assert [(e.id, e.reason) for e in events] == [(out[0][1].id, "consumed")]
    s = b.queues["q"].stats()
    assert (s.depth, s.acquired, s.dequeues) == (1, 1, 1)


def test_reject_drops() -> None:
    b = make(2)
    events: list = []
    b.add_listener(events.append)
    c = b.subscribe("q", credit=1)
    [(_, qm)] = b.dispatch(0.0)
    assert b.reject(c, qm.id)
    assert [(type(e), e.reason) for e in events] == [(Dequeued, "rejected")]
    b.set_credit(c, 5)
    assert bodies_of(b.dispatch(0.0)) == [b"m1"]


def test_release_keeps_position_and_count() -> None:
    b = make(3)
    events: list = []
    b.add_listener(events.append)
    c = b.subscribe("q", credit=2)
    out = b.dispatch(0.0)
    assert b.release(c, out[1][1].id)  # m1 back
    assert b.release(c, out[0][1].id)  # then m0: order is by position, not by release
    assert events == []  # plain release: no count change
    b.set_credit(c, 10)
    again = b.dispatch(0.0)
    assert bodies_of(again) == [b"m0", b"m1", b"m2"]
    assert [qm.delivery_count for _, qm in again] == [0, 0, 0]
    assert [qm.first_acquirer for _, qm in again] == [False, False, True]


def test_modified_delivery_failed_counts() -> None:
    b = make(1)
    events: list = []
    b.add_listener(events.append)
    c = b.subscribe("q", credit=1)
    [(_, qm)] = b.dispatch(0.0)
    b.release(c, qm.id, delivery_failed=True)
    assert events == [DeliveryCountChanged("q", qm.id, 1, False)]
    b.set_credit(c, 1)
    [(_, again)] = b.dispatch(0.0)
    assert again is qm and again.delivery_count == 1 and not again.first_acquirer


def test_release_behind_other_available_messages() -> None:
    # m0 to c1, m1 to c2; c2 releases m1 first, then c1 releases m0: both back in order.
    b = make(4)
    c1 = b.subscribe("q", credit=1)
    c2 = b.subscribe("q", credit=1)
    (_, m0), (_, m1) = b.dispatch(0.0)
    c3 = b.subscribe("q", credit=1)
    [(_, m2)] = b.dispatch(0.0)
    b.release(c3, m2.id)
    b.release(c1, m0.id)
    b.release(c2, m1.id)  # lands between m0 and m2
    b.set_credit(c3, 10)
    assert bodies_of(b.dispatch(0.0)) == [b"m0", b"m1", b"m2", b"m3"]


def test_consumer_death_returns_messages_in_order_with_count() -> None:
    b = make(6)
    events: list = []
    b.add_listener(events.append)
    c1 = b.subscribe("q", owner="conn-1", credit=10)
    c2 = b.subscribe("q", owner="conn-2", credit=2)
    out = b.dispatch(0.0)
    assert [(c.owner, qm.message.body) for c, qm in out] == [
        ("conn-1", b"m0"),
        ("conn-2", b"m1"),
        ("conn-1", b"m2"),
        ("conn-2", b"m3"),
        ("conn-1", b"m4"),
        ("conn-1", b"m5"),
    ]
    b.accept(c1, out[2][1].id)  # m2 done
    b.close_connection("conn-1")  # holds m0, m4, m5
    assert c1.closed and not c2.closed
    counted = [(e.id, e.delivery_count) for e in events if isinstance(e, DeliveryCountChanged)]
    assert counted == [(out[i][1].id, 1) for i in (0, 4, 5)]
    b.set_credit(c2, 10)
    again = b.dispatch(0.0)
    assert bodies_of(again) == [b"m0", b"m4", b"m5"]
    assert all(c is c2 for c, _ in again)
    assert [(qm.delivery_count, qm.first_acquirer) for _, qm in again] == [(1, False)] * 3
    # c2 dies too: everything it holds (m1, m3, m0, m4, m5) comes back in queue order.
    b.unsubscribe(c2)
    c3 = b.subscribe("q", credit=10)
    final = b.dispatch(0.0)
    assert bodies_of(final) == [b"m0", b"m1", b"m3", b"m4", b"m5"]
    assert [qm.delivery_count for _, qm in final] == [2, 1, 1, 2, 2]
    assert c3.credit == 5


def test_presettled_consumer_dequeues_on_send() -> None:
    b = make(3)
    events: list = []
    b.add_listener(events.append)
    c = b.subscribe("q", presettled=True, credit=2)
    out = b.dispatch(0.0)
    assert bodies_of(out) == [b"m0", b"m1"]
    assert [e.reason for e in events] == ["consumed", "consumed"]
    assert c.acquired == {} and b.queues["q"].depth == 1
    assert not b.accept(c, out[0][1].id)
    b.unsubscribe(c)
    assert b.queues["q"].depth == 1


def test_browse_sees_each_available_message_once_without_acquiring() -> None:
    b = make(3)
    browser = b.subscribe("q", browse=True, credit=2)
    assert browser.mode == "browse"
    assert bodies_of(b.dispatch(0.0)) == [b"m0", b"m1"]
    b.set_credit(browser, 10)
    assert bodies_of(b.dispatch(0.0)) == [b"m2"]
    assert b.dispatch(0.0) == []
    b.enqueue("q", Message(b"m3"), 0.0)
    assert bodies_of(b.dispatch(0.0)) == [b"m3"]
    q = b.queues["q"]
    assert q.depth == 4 and q.acquired == 0
    assert not b.accept(browser, 1)
    # A consumer still gets everything; browsing took nothing.
    c = b.subscribe("q", credit=10)
    out = b.dispatch(0.0)
    assert bodies_of(out) == [b"m0", b"m1", b"m2", b"m3"] and all(x is c for x, _ in out)


def test_browse_alongside_consumer_skips_acquired() -> None:
    b = make(4)
    c = b.subscribe("q", credit=2)
    b.dispatch(0.0)  # m0, m1 acquired
    browser = b.subscribe("q", browse=True, credit=10)
    assert bodies_of(b.dispatch(0.0)) == [b"m2", b"m3"]
    b.unsubscribe(c)  # m0, m1 return, but the browser is already past them
    assert b.dispatch(0.0) == []
    assert browser.credit == 8


def test_browse_drops_expired() -> None:
    b = Broker()
    b.declare_queue("q")
    b.enqueue("q", Message(b"old", expiry=1.0), 0.0)
    b.enqueue("q", Message(b"new"), 0.0)
    b.subscribe("q", browse=True, credit=10)
    assert bodies_of(b.dispatch(2.0)) == [b"new"]
    assert b.queues["q"].depth == 1


def test_browse_cursor_survives_compaction() -> None:
    # One message held acquired at the front while many pass through: the store compacts its
    # indexes, and a browser part-way through keeps its place.
    n = 3 * COMPACT_MIN
    b = make(n)
    holder = b.subscribe("q", credit=1)
    b.dispatch(0.0)  # m0 held forever
    browser = b.subscribe("q", browse=True, credit=5)
    assert bodies_of(b.dispatch(0.0)) == [b"m1", b"m2", b"m3", b"m4", b"m5"]
    worker = b.subscribe("q", credit=n - 1)  # exactly what is available
    for c, qm in b.dispatch(0.0):
        assert c is worker
        if qm.message.body != b"m6":
            b.accept(worker, qm.id)
    store = b.queues["q"]._store
    assert len(store.order) < 2 * COMPACT_MIN and store.generation > 0
    b.set_credit(browser, 10)
    b.enqueue("q", Message(b"tail"), 0.0)
    assert [(c, qm.message.body) for c, qm in b.dispatch(0.0)] == [(browser, b"tail")]
    b.unsubscribe(holder)
    b.release(worker, next(iter(worker.acquired)))
    w2 = b.subscribe("q", credit=10)
    assert bodies_of(b.dispatch(0.0)) == [b"m0", b"m6", b"tail"] and w2.credit == 7


def test_lvq_churn_without_consumers_stays_bounded() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.last_value_queue_key": "k"})
    for i in range(10 * COMPACT_MIN):
        b.enqueue("q", Message(b"%d" % i, properties={"k": i % 10}), 0.0)
    store = b.queues["q"]._store
    assert store.depth == 10
    assert len(store.order) <= COMPACT_MIN + 20 and len(store.levels[0]) <= COMPACT_MIN + 20
    c = b.subscribe("q", credit=100)
    got = [qm.message.body for _, qm in b.dispatch(0.0)]
    assert got == [b"%d" % i for i in range(10 * COMPACT_MIN - 10, 10 * COMPACT_MIN)]
    assert c.credit == 90


def test_closed_consumer_is_inert() -> None:
    b = make(2)
    c = b.subscribe("q", credit=1)
    [(_, qm)] = b.dispatch(0.0)
    b.unsubscribe(c)
    assert not b.accept(c, qm.id) and not b.release(c, qm.id) and not b.reject(c, qm.id)
    b.set_credit(c, 5)
    assert b.dispatch(0.0) == []
    assert b.stats().consumers == 0


def test_remove_message_even_if_acquired() -> None:
    b = make(2)
    c = b.subscribe("q", credit=1)
    [(_, qm)] = b.dispatch(0.0)
    assert b.remove_message("q", qm.id)
    assert not b.remove_message("q", qm.id)
    assert c.acquired == {} and b.queues["q"].acquired == 0
    assert not b.accept(c, qm.id)
