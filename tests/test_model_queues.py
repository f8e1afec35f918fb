"""Queue options in the model: limits, ring, priority, last-value, TTL, lifetime, exclusivity."""

from __future__ import annotations

import re

import pytest

from broker.model import (
    Broker,
    Dequeued,
    InvalidField,
    Message,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from broker.model.arguments import priority_table


def bodies(broker: Broker, queue: str) -> list[bytes]:
    return [m.message.body for m in broker.queues[queue].messages()]


def drain(broker: Broker, queue: str, now: float = 0.0) -> list[bytes]:
    """Consume everything available (accepting it) and return the bodies in delivery order."""
    c = broker.subscribe(queue, credit=10**6)
    got = []
    for consumer, qm in broker.dispatch(now):
        got.append(qm.message.body)
        broker.accept(consumer, qm.id)
    broker.unsubscribe(c)
    return got


def send(broker: Broker, queue: str, *items: bytes, now: float = 0.0, **kw: object) -> list:
    return [broker.enqueue(queue, Message(b, **kw), now) for b in items]  # type: ignore[arg-type]


# -- limits ------------------------------------------------------------------------------------


def test_reject_by_count() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.max_count": 2, "qpid.policy_type": "reject"})
    ok = send(b, "q", b"1", b"2")
    assert all(r.accepted for r in ok)
    r = b.enqueue("q", Message(b"3"), 0.0)
    assert not r.accepted and r.id is None and r.queues == ()
    assert r.condition == "amqp:resource-limit-exceeded"
    assert "queue 'q' is full: 2 messages" in r.description and "qpid.max_count=2" in r.description
    assert bodies(b, "q") == [b"1", b"2"]
    assert drain(b, "q") == [b"1", b"2"]
    assert b.enqueue("q", Message(b"4"), 0.0).accepted


def test_reject_is_the_default_policy_and_counts_acquired() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.max_count": "1"})  # text, as a CLI would send
    send(b, "q", b"1")
    c = b.subscribe("q", credit=1)
    [(_, qm)] = b.dispatch(0.0)
    assert not b.enqueue("q", Message(b"2"), 0.0).accepted  # acquired still counts
    b.accept(c, qm.id)
    assert b.enqueue("q", Message(b"2"), 0.0).accepted


def test_reject_by_size() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.max_size": 10})
    assert b.enqueue("q", Message(b"x" * 6), 0.0).accepted
    r = b.enqueue("q", Message(b"x" * 5), 0.0)
    assert not r.accepted and "6 bytes" in r.description and "qpid.max_size=10" in r.description
    assert b.enqueue("q", Message(b"x" * 4), 0.0).accepted
    assert b.queues["q"].bytes == 10


def test_ring_by_count_drops_oldest() -> None:
    b = Broker()
    events: list = []
    b.add_listener(events.append)
    b.declare_queue("q", arguments={"qpid.max_count": 3, "qpid.policy_type": "ring"})
    results = send(b, "q", b"1", b"2", b"3", b"4", b"5")
    assert all(r.accepted for r in results)
    assert bodies(b, "q") == [b"3", b"4", b"5"]
    drops = [e for e in events if isinstance(e, Dequeued)]
    assert [(e.id, e.reason) for e in drops] == [(results[0].id, "ring"), (results[1].id, "ring")]
    s = b.queues["q"].stats()
    assert (s.depth, s.enqueues, s.dequeues) == (3, 5, 2)


def test_ring_by_size_drops_as_many_as_needed() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.max_size": 10, "qpid.policy_type": "ring"})
    send(b, "q", b"aaa", b"bbb", b"ccc")
    assert b.enqueue("q", Message(b"d" * 7), 0.0).accepted
    assert bodies(b, "q") == [b"ccc", b"d" * 7]
    r = b.enqueue("q", Message(b"e" * 11), 0.0)  # can never fit
    assert not r.accepted and "ring queue 'q' cannot make room" in r.description
    assert bodies(b, "q") == [b"ccc", b"d" * 7]  # nothing dropped for a message refused


def test_ring_skips_acquired_and_refuses_when_all_acquired() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.max_count": 2, "qpid.policy_type": "ring"})
    send(b, "q", b"1", b"2")
    c = b.subscribe("q", credit=1)
    b.dispatch(0.0)  # "1" acquired
    assert b.enqueue("q", Message(b"3"), 0.0).accepted
    assert bodies(b, "q") == [b"1", b"3"]  # "2" went, "1" is held by the consumer
    b.set_credit(c, 1)
    b.dispatch(0.0)
    r = b.enqueue("q", Message(b"4"), 0.0)
    assert not r.accepted and "2 messages" in r.description and "held by consumers" in r.description


def test_all_or_nothing_when_one_queue_rejects() -> None:
    b = Broker()
    b.declare_queue("open")
    b.declare_queue("full", arguments={"qpid.max_count": 1})
    b.bind("amq.fanout", "open")
    b.bind("amq.fanout", "full")
    assert b.publish("amq.fanout", Message(b"1"), 0.0).accepted
    r = b.publish("amq.fanout", Message(b"2"), 0.0)
    assert not r.accepted and "'full' is full" in r.description
    assert bodies(b, "open") == [b"1"] and bodies(b, "full") == [b"1"]
    assert b.exchanges["amq.fanout"].stats().routed == 1


def test_expired_messages_make_room_at_the_limit() -> None:
    b = Broker()
    events: list = []
    b.add_listener(events.append)
    b.declare_queue("q", arguments={"qpid.max_count": 2})
    send(b, "q", b"old", expiry=5.0)
    send(b, "q", b"keep")
    assert not b.enqueue("q", Message(b"new"), 4.0).accepted
    assert b.enqueue("q", Message(b"new"), 5.0).accepted
    assert bodies(b, "q") == [b"keep", b"new"]
    assert [e.reason for e in events if isinstance(e, Dequeued)] == ["expired"]


# -- priority ----------------------------------------------------------------------------------


def test_priority_table_is_the_seeds() -> None:
    assert priority_table(10) == tuple(range(10))
    assert priority_table(2) == (0, 0, 0, 0, 0, 1, 1, 1, 1, 1)
    assert priority_table(3) == (0, 0, 0, 0, 1, 2, 2, 2, 2, 2)
    assert priority_table(1) == (0,) * 10


def test_priority_order_fifo_within_level() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.priorities": 10})
    for body, prio in [(b"a4", 4), (b"b9", 9), (b"c0", 0), (b"d9", 9), (b"e4", 4), (b"f200", 200)]:
        b.enqueue("q", Message(body, priority=prio), 0.0)
    assert drain(b, "q") == [b"b9", b"d9", b"f200", b"a4", b"e4", b"c0"]


def test_priority_two_levels_split_at_five() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.priorities": 2})
    for body, prio in [(b"low4", 4), (b"hi5", 5), (b"low0", 0), (b"hi9", 9)]:
        b.enqueue("q", Message(body, priority=prio), 0.0)
    assert drain(b, "q") == [b"hi5", b"hi9", b"low4", b"low0"]


def test_no_priorities_means_fifo() -> None:
    b = Broker()
    b.declare_queue("q")
    for body, prio in [(b"a", 0), (b"b", 9), (b"c", 4)]:
        b.enqueue("q", Message(body, priority=prio), 0.0)
    assert drain(b, "q") == [b"a", b"b", b"c"]


def test_ring_on_priority_queue_drops_lowest_level_first() -> None:
    b = Broker()
    b.declare_queue(
        "q", arguments={"qpid.priorities": 10, "qpid.max_count": 2, "qpid.policy_type": "ring"}
    )
    b.enqueue("q", Message(b"hi", priority=9), 0.0)
    b.enqueue("q", Message(b"lo", priority=1), 0.0)
    b.enqueue("q", Message(b"mid", priority=5), 0.0)
    assert drain(b, "q") == [b"hi", b"mid"]


def test_priority_release_goes_back_in_its_level() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.priorities": 10})
    b.enqueue("q", Message(b"hi", priority=9), 0.0)
    b.enqueue("q", Message(b"lo", priority=1), 0.0)
    c = b.subscribe("q", credit=1)
    [(_, qm)] = b.dispatch(0.0)
    assert qm.message.body == b"hi"
    b.release(c, qm.id)
    assert drain(b, "q") == [b"hi", b"lo"]


# -- last value --------------------------------------------------------------------------------


def test_lvq_replaces_and_moves_to_back() -> None:
    b = Broker()
    events: list = []
    b.add_listener(events.append)
    b.declare_queue("q", arguments={"qpid.last_value_queue_key": "sym"})
    r1 = b.enqueue("q", Message(b"ibm1", properties={"sym": "IBM"}), 0.0)
    b.enqueue("q", Message(b"sap1", properties={"sym": "SAP"}), 0.0)
    b.enqueue("q", Message(b"nokey"), 0.0)
    b.enqueue("q", Message(b"ibm2", properties={"sym": "IBM"}), 0.0)
    assert bodies(b, "q") == [b"sap1", b"nokey", b"ibm2"]
    assert [(e.id, e.reason) for e in events if isinstance(e, Dequeued)] == [(r1.id, "lvq")]
    b.enqueue("q", Message(b"nokey2"), 0.0)  # messages without the key are kept as they come
    assert drain(b, "q") == [b"sap1", b"nokey", b"ibm2", b"nokey2"]


def test_lvq_acquired_old_value_is_dropped_when_given_back() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.last_value_queue_key": "k"})
    b.enqueue("q", Message(b"v1", properties={"k": 1}), 0.0)
    c = b.subscribe("q", credit=1)
    [(_, old)] = b.dispatch(0.0)
    b.enqueue("q", Message(b"v2", properties={"k": 1}), 0.0)
    assert bodies(b, "q") == [b"v1", b"v2"]  # v1 is out with the consumer
    assert b.release(c, old.id)
    assert bodies(b, "q") == [b"v2"]


def test_lvq_replacement_frees_room_under_reject_limit() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.last_value_queue_key": "k", "qpid.max_count": 1})
    b.enqueue("q", Message(b"v1", properties={"k": "a"}), 0.0)
    assert b.enqueue("q", Message(b"v2", properties={"k": "a"}), 0.0).accepted
    assert not b.enqueue("q", Message(b"w1", properties={"k": "b"}), 0.0).accepted
    assert bodies(b, "q") == [b"v2"]


def test_old_lvq_flag_uses_default_key() -> None:
    b = Broker()
    b.declare_queue("q", arguments={"qpid.last_value_queue": True})
    b.enqueue("q", Message(b"1", properties={"qpid.LVQ_key": "x"}), 0.0)
    b.enqueue("q", Message(b"2", properties={"qpid.LVQ_key": "x"}), 0.0)
    assert bodies(b, "q") == [b"2"]


# -- TTL ---------------------------------------------------------------------------------------


def test_expired_messages_are_never_delivered() -> None:
    b = Broker()
    events: list = []
    b.add_listener(events.append)
    b.declare_queue("q")
    send(b, "q", b"short", expiry=10.0)
    send(b, "q", b"forever")
    send(b, "q", b"long", expiry=100.0)
    assert drain(b, "q", now=50.0) == [b"forever", b"long"]
    expired = [e for e in events if isinstance(e, Dequeued) and e.reason == "expired"]
    assert len(expired) == 1 and b.queues["q"].depth == 0


def test_expiry_boundary_and_released_message_expiring() -> None:
    b = Broker()
    b.declare_queue("q")
    send(b, "q", b"m", expiry=10.0)
    c = b.subscribe("q", credit=1)
    [(_, qm)] = b.dispatch(9.999)
    b.release(c, qm.id)
    b.set_credit(c, 1)
    assert b.dispatch(10.0) == []  # expiry <= now: expired
    assert b.queues["q"].depth == 0


def test_expire_sweep() -> None:
    b = Broker()
    b.declare_queue("a")
    b.declare_queue("b")
    send(b, "a", b"1", b"2", expiry=5.0)
    send(b, "a", b"3")
    send(b, "b", b"4", expiry=6.0)
    assert b.expire(5.5) == 2
    assert bodies(b, "a") == [b"3"] and bodies(b, "b") == [b"4"]
    assert b.expire(6.0) == 1


# -- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"qpid.replicate": "some"}, "qpid.replicate must be one of none|configuration|all"),
        ({"qpid.max_count": -1}, "qpid.max_count must be a whole number >= 0, got -1"),
        ({"qpid.max_count": "lots"}, "qpid.max_count must be a whole number >= 0, got 'lots'"),
        ({"qpid.max_size": True}, "qpid.max_size must be a whole number >= 0, got True"),
        ({"qpid.max_size": 1.5}, "qpid.max_size must be a whole number >= 0, got 1.5"),
        ({"qpid.policy_type": "flow_to_disk"}, "qpid.policy_type must be one of reject|ring"),
        ({"qpid.priorities": "x"}, "qpid.priorities must be a whole number >= 0"),
        ({"qpid.last_value_queue_key": ""}, "qpid.last_value_queue_key must be a non-empty"),
        ({"qpid.last_value_queue_key": 3}, "qpid.last_value_queue_key must be a non-empty"),
        ([1, 2], "queue arguments must be a map with string keys"),
    ],
)
def test_bad_arguments(arguments: object, message: str) -> None:
    b = Broker()
    with pytest.raises(InvalidField, match=re.escape(message)) as err:
        b.declare_queue("q", arguments=arguments)  # type: ignore[arg-type]
    assert err.value.condition == "amqp:invalid-field"
    assert "q" not in b.queues


def test_arguments_kept_as_given_and_settings_parsed() -> None:
    b = Broker()
    args = {"qpid.max_count": "10", "qpid.replicate": "all", "x-custom": [1], "qpid.priorities": 99}
    q, created = b.declare_queue("q", durable=True, arguments=args)
    assert created and q.arguments == args and q.durable
    s = q.settings
    assert (s.max_count, s.replicate, s.levels, s.policy) == (10, "all", 10, "reject")
    assert b.declare_queue("q") == (q, False)


def test_bad_names() -> None:
    b = Broker()
    for bad in ("", None, 7):
        with pytest.raises(InvalidField, match="queue name must be a non-empty string"):
            b.declare_queue(bad)  # type: ignore[arg-type]


# -- lifetime, exclusivity, deletion -----------------------------------------------------------


def test_auto_delete_after_last_consumer() -> None:
    b = Broker()
    b.declare_queue("q", auto_delete=True)
    send(b, "q", b"1")
    c1 = b.subscribe("q")
    c2 = b.subscribe("q", browse=True)
    b.unsubscribe(c1)
    assert "q" in b.queues
    b.unsubscribe(c2)
    assert "q" not in b.queues


def test_auto_delete_waits_for_a_first_consumer() -> None:
    b = Broker()
    b.declare_queue("q", auto_delete=True)
    b.close_connection("someone")
    assert "q" in b.queues


def test_exclusive_queue() -> None:
    b = Broker()
    b.declare_queue("q", exclusive_owner="conn-1")
    with pytest.raises(ResourceLocked, match="exclusive") as err:
        b.subscribe("q", owner="conn-2")
    assert err.value.condition == "amqp:resource-locked"
    with pytest.raises(ResourceLocked):
        b.subscribe("q")
    with pytest.raises(ResourceLocked):
        b.declare_queue("q", exclusive_owner="conn-2")
    assert b.declare_queue("q")[1] is False  # a plain lookup is fine
    c = b.subscribe("q", owner="conn-1")
    assert c.owner == "conn-1"
    # When the owner goes, a queue that is not auto-delete stays and is no longer exclusive.
    b.close_connection("conn-1")
    assert b.queues["q"].exclusive_owner is None
    b.subscribe("q", owner="conn-2")


def test_exclusive_auto_delete_queue_goes_with_its_connection() -> None:
    b = Broker()
    b.declare_queue("tmp", exclusive_owner="conn-1", auto_delete=True)
    b.close_connection("conn-1")
    assert "tmp" not in b.queues


def test_delete_queue_closes_consumers_and_checks() -> None:
    b = Broker()
    b.declare_queue("q")
    send(b, "q", b"1", b"2")
    c = b.subscribe("q", credit=1)
    [(_, qm)] = b.dispatch(0.0)
    with pytest.raises(PreconditionFailed, match="holds 2 messages"):
        b.delete_queue("q", if_empty=True)
    with pytest.raises(PreconditionFailed, match="has 1 consumers"):
        b.delete_queue("q", if_unused=True)
    assert b.delete_queue("q") == [c]
    assert c.closed and not b.accept(c, qm.id)  # a late outcome is ignored
    b.unsubscribe(c)  # harmless
    with pytest.raises(NotFound):
        b.delete_queue("q")
    assert b.stats().enqueues == 2  # counters of deleted queues still count


def test_purge_keeps_acquired() -> None:
    b = Broker()
    b.declare_queue("q")
    send(b, "q", b"1", b"2", b"3")
    c = b.subscribe("q", credit=1)
    b.dispatch(0.0)
    assert b.purge("q") == 2
    assert bodies(b, "q") == [b"1"]
    b.unsubscribe(c)
    assert drain(b, "q") == [b"1"]
