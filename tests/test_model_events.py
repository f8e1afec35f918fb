"""Events, restore and ids in the broker model; replaying the event stream rebuilds the state."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.model import (
    Bound,
    Broker,
    DeliveryCountChanged,
    Dequeued,
    Enqueued,
    Event,
    ExchangeDeclared,
    ExchangeDeleted,
    InvalidField,
    Message,
    ModelError,
    PreconditionFailed,
    QueueDeclared,
    QueueDeleted,
    Unbound,
)


def recorder(b: Broker) -> list[Event]:
    events: list[Event] = []
    b.add_listener(events.append)
    return events


def test_events_in_order() -> None:
    b = Broker()
    events = recorder(b)
    q, _ = b.declare_queue("q", durable=True, arguments={"qpid.replicate": "all"})
    x, _ = b.declare_exchange("x", "direct", durable=True)
    b.bind("x", "q", "k")
    m = Message(b"body", durable=True)
    r1 = b.publish("x", m, 0.0, routing_key="k")
    events.extend(r1.enqueued)  # handed back, not emitted: the caller records them
    r2 = b.enqueue("q", Message(b"two"), 0.0)
    events.extend(r2.enqueued)
    c = b.subscribe("q", owner="conn", credit=2)
    (_, d1), (_, d2) = b.dispatch(0.0)
    b.accept(c, d1.id)
    b.release(c, d2.id, delivery_failed=True)
    b.unbind("x", "q", "k")
    b.delete_exchange("x")
    b.unsubscribe(c)
    b.delete_queue("q")
    assert events == [
        QueueDeclared("q", q.uuid, True, False, None, {"qpid.replicate": "all"}),
        ExchangeDeclared("x", x.uuid, "direct", True, {}),
        Bound("x", "q", "k", {}),
        Enqueued("q", r1.id, m),
        Enqueued("q", r2.id, Message(b"two")),
        Dequeued("q", r1.id, "consumed", True),
        DeliveryCountChanged("q", r2.id, 1, False),
        Unbound("x", "q", "k"),
        ExchangeDeleted("x", x.uuid),
        QueueDeleted("q", q.uuid),
    ]
    assert r1.id is not None and r2.id == r1.id + 1


def test_no_events_for_no_change() -> None:
    b = Broker()
    b.declare_queue("q")
    b.bind("amq.direct", "q", "k")
    events = recorder(b)
    b.declare_queue("q")
    b.declare_exchange("amq.direct", "direct")
    b.bind("amq.direct", "q", "k")
    b.unbind("amq.direct", "q", "nope")
    assert b.publish("amq.direct", Message(b""), 0.0, routing_key="unbound").enqueued == ()
    assert events == []
    b.remove_listener(events.append)
    b.declare_queue("other")
    assert events == []


def test_a_publish_hands_its_enqueues_back_and_emits_what_it_displaced() -> None:
    """A fan-out publish's `Enqueued` on each queue comes back in its result, never to a
    listener (the event log records it from there, once); the ring victim it pushed out of a
    full queue is an ordinary dequeue, emitted before the call returns."""
    b = Broker()
    b.declare_queue("a")
    b.declare_queue("ring", arguments={"qpid.max_count": 1, "qpid.policy_type": "ring"})
    b.bind("amq.fanout", "a")
    b.bind("amq.fanout", "ring")
    first = b.publish("amq.fanout", Message(b"1"), 0.0)
    events = recorder(b)
    m = Message(b"2", durable=True)
    r = b.publish("amq.fanout", m, 0.0)
    assert r.enqueued == (Enqueued("a", r.id, m), Enqueued("ring", r.id, m))
    assert r.queues == ("a", "ring")
    assert events == [Dequeued("ring", first.id, "ring", False)]


def test_restore_without_events() -> None:
    qid, xid = uuid.uuid4(), uuid.uuid4()
    b = Broker()
    events = recorder(b)
    with b.restoring():
        b.declare_exchange("x", "topic", durable=True, uuid=xid)
        b.declare_queue("q", durable=True, uuid=qid, arguments={"qpid.max_count": 2})
        b.bind("x", "q", "a.#")
        assert b.restore_message("q", 17, Message(b"first", delivery_count=2)) is None
        b.restore_message("q", 5, Message(b"second"))
        b.restore_message("q", 40, Message(b"third"))  # over max_count: restore keeps it all
    assert events == []
    assert b.queues["q"].uuid == qid and b.exchanges["x"].uuid == xid
    assert [(m.id, m.delivery_count, m.first_acquirer) for m in b.queues["q"].messages()] == [
        (17, 2, False),
        (5, 0, True),
        (40, 0, True),
    ]
    assert b.next_id == 41
    c = b.subscribe("q", credit=10)
    assert [qm.message.body for _, qm in b.dispatch(0.0)] == [b"first", b"second", b"third"]
    b.accept(c, 17)
    b.accept(c, 5)
    assert events == [Dequeued("q", 17, "consumed", False), Dequeued("q", 5, "consumed", False)]
    r = b.publish("x", Message(b"new"), 0.0, routing_key="a.b")
    assert r.id == 41


def test_ids() -> None:
    b = Broker()
    b.declare_queue("q")
    assert [b.enqueue("q", Message(b""), 0.0).id for _ in range(3)] == [1, 2, 3]
    assert b.enqueue("q", Message(b""), 0.0, id=100).id == 100
    assert b.enqueue("q", Message(b""), 0.0).id == 101
    with pytest.raises(PreconditionFailed, match="message id 100 is already on queue 'q'"):
        b.enqueue("q", Message(b""), 0.0, id=100)
    with pytest.raises(InvalidField, match="message id must be an integer"):
        b.enqueue("q", Message(b""), 0.0, id=0)
    b.next_id = 50  # never backwards
    assert b.next_id == 102
    b.next_id = 500
    assert b.enqueue("q", Message(b""), 0.0).id == 500


def test_rejected_publish_uses_no_id() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.max_count": 1})
    assert b.enqueue("q", Message(b""), 0.0).id == 1
    assert b.enqueue("q", Message(b""), 0.0).id is None
    b.purge("q")
    assert b.enqueue("q", Message(b""), 0.0).id == 2


def test_errors_carry_conditions() -> None:
    b = Broker()
    with pytest.raises(ModelError) as err:
        b.subscribe("missing")
    assert err.value.condition == "amqp:not-found"
    assert err.value.description == "no queue named 'missing'" == str(err.value)


def test_stats() -> None:
    b = Broker()
    b.declare_queue("a")
    b.declare_queue("b")
    b.bind("amq.fanout", "a")
    b.bind("amq.fanout", "b")
    b.publish("amq.fanout", Message(b"12345"), 0.0)
    b.enqueue("a", Message(b"123"), 0.0)
    c = b.subscribe("a", credit=1)
    b.subscribe("b", browse=True)
    b.dispatch(0.0)
    sa = b.queues["a"].stats()
    assert (sa.depth, sa.bytes, sa.enqueues, sa.dequeues, sa.consumers, sa.acquired) == (
        2,
        8,
        2,
        0,
        1,
        1,
    )
    b.accept(c, 1)
    s = b.stats()
    assert (s.queues, s.exchanges, s.consumers, s.depth, s.bytes, s.acquired) == (2, 5, 2, 2, 8, 0)
    assert (s.enqueues, s.dequeues, s.routed, s.dropped) == (3, 1, 1, 0)


# -- replay: the event stream is enough to rebuild the broker -----------------------------------


def apply(b: Broker, e: Event) -> Event | None:
    """What a backup or a start-up restore does with each event; the event `b` hands back (a
    message put's), if any."""
    match e:
        case QueueDeclared():
            b.declare_queue(
                e.name,
                durable=e.durable,
                auto_delete=e.auto_delete,
                arguments=e.arguments,
                uuid=e.uuid,
            )
        case QueueDeleted():
            b.delete_queue(e.name)
        case ExchangeDeclared():
            b.declare_exchange(
                e.name, e.type, durable=e.durable, arguments=e.arguments, uuid=e.uuid
            )
        case ExchangeDeleted():
            b.delete_exchange(e.name)
        case Bound():
            b.bind(e.exchange, e.queue, e.key, e.arguments)
        case Unbound():
            b.unbind(e.exchange, e.queue, e.key)
        case Enqueued():
            return b.restore_message(e.queue, e.id, e.message)  # handed back, not emitted
        case Dequeued():
            assert b.remove_message(e.queue, e.id, e.reason)
        case DeliveryCountChanged():
            assert b.set_delivery_count(e.queue, e.id, e.delivery_count)
    return None


def snapshot(b: Broker) -> dict[str, Any]:
    return {
        "queues": {
            n: (q.uuid, q.arguments, [(m.id, m.message, m.delivery_count) for m in q.messages()])
            for n, q in b.queues.items()
        },
        "exchanges": {n: (x.uuid, x.type, x.arguments) for n, x in b.exchanges.items()},
        "bindings": {n: dict(x.bindings) for n, x in b.exchanges.items()},
    }


QUEUE_ARGS = [
    {},
    {"qpid.max_count": 3, "qpid.policy_type": "ring"},
    {"qpid.max_count": 3},
    {"qpid.max_size": 12, "qpid.policy_type": "ring"},
    {"qpid.last_value_queue_key": "k"},
    {"qpid.priorities": 3},
]
NAMES = ["q0", "q1", "q2"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_replaying_events_rebuilds_state(data: st.DataObject) -> None:
    b = Broker()
    events = recorder(b)
    consumers: list = []
    now = 0.0
    for _ in range(data.draw(st.integers(10, 60))):
        op = data.draw(
            st.sampled_from(
                [
                    "declare",
                    "delete",
                    "bind",
                    "publish",
                    "publish",
                    "publish",
                    "subscribe",
                    "credit",
                    "dispatch",
                    "dispatch",
                    "settle",
                    "settle",
                    "unsubscribe",
                    "close",
                    "purge",
                    "expire",
                ]
            )
        )
        name = data.draw(st.sampled_from(NAMES))
        try:
            if op == "declare":
                b.declare_queue(
                    name,
                    auto_delete=data.draw(st.booleans()),
                    arguments=data.draw(st.sampled_from(QUEUE_ARGS)),
                )
            elif op == "delete":
                b.delete_queue(name)
            elif op == "bind":
                b.bind(data.draw(st.sampled_from(["amq.fanout", "amq.topic"])), name, "a.#")
            elif op == "publish":
                m = Message(
                    data.draw(st.binary(max_size=6)),
                    durable=data.draw(st.booleans()),
                    priority=data.draw(st.integers(0, 9)),
                    expiry=data.draw(st.sampled_from([None, None, now + 1.5])),
                    properties={"k": data.draw(st.integers(0, 2))},
                )
                if data.draw(st.booleans()):
                    r = b.enqueue(name, m, now)
                else:
                    r = b.publish(
                        data.draw(st.sampled_from(["amq.fanout", "amq.topic"])),
                        m,
                        now,
                        routing_key="a.b",
                    )
                events.extend(r.enqueued)  # after what it displaced, as the event log has them
            elif op == "subscribe":
                consumers.append(
                    b.subscribe(
                        name,
                        owner=data.draw(st.sampled_from(["c1", "c2"])),
                        browse=data.draw(st.booleans()),
                        presettled=data.draw(st.booleans()),
                        credit=data.draw(st.integers(0, 4)),
                    )
                )
            elif op == "credit" and consumers:
                b.set_credit(data.draw(st.sampled_from(consumers)), data.draw(st.integers(0, 4)))
            elif op == "dispatch":
                now += data.draw(st.sampled_from([0.0, 1.0]))
                b.dispatch(now)
            elif op == "settle" and consumers:
                c = data.draw(st.sampled_from(consumers))
                if c.acquired:
                    mid = data.draw(st.sampled_from(sorted(c.acquired)))
                    how = data.draw(st.sampled_from(["accept", "reject", "release", "modify"]))
                    if how == "accept":
                        b.accept(c, mid)
                    elif how == "reject":
                        b.reject(c, mid)
                    else:
                        b.release(c, mid, delivery_failed=how == "modify")
            elif op == "unsubscribe" and consumers:
                b.unsubscribe(data.draw(st.sampled_from(consumers)))
            elif op == "close":
                b.close_connection(data.draw(st.sampled_from(["c1", "c2"])))
            elif op == "purge":
                b.purge(name)
            elif op == "expire":
                b.expire(now)
        except ModelError:
            pass
        for q in b.queues.values():  # invariants
            assert q.depth == len(list(q.messages()))
            assert q.acquired == sum(len(c.acquired) for c in q.consumers)
            assert q.bytes == sum(m.size for m in q.messages())
    # A follower applying the stream live, and a restore applying it silently, agree with it.
    follower = Broker()
    echoed = recorder(follower)
    for e in events:
        back = apply(follower, e)
        if back is not None:
            echoed.append(back)
    assert snapshot(follower) == snapshot(b)
    assert echoed == events
    restored = Broker()
    quiet = recorder(restored)
    with restored.restoring():
        for e in events:
            assert apply(restored, e) is None
    assert quiet == [] and snapshot(restored) == snapshot(b)
