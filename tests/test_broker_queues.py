"""Queue options through a real qstored and stock proton clients: limits with the reject and ring
policies, priorities, last-value queues, message TTL, exclusive and auto-delete queues, and what a
restart keeps (durable messages on durable queues, nothing else)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from broker_clients import TIMEOUT, CreateOnDemand, Mgmt, drain, fetch, outcome, receive_n, send
from proton import Delivery, Message
from proton.reactor import DynamicNodeProperties
from proton.utils import BlockingConnection, LinkDetached

RESOURCE_LIMIT = "amqp:resource-limit-exceeded"


@pytest.fixture
def broker(brokers: Any) -> Any:
    return brokers.start()


def test_max_count_reject_policy_refuses_with_resource_limit(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_queue("full", arguments={"qpid.max_count": 2, "qpid.policy_type": "reject"})
        conn = BlockingConnection(broker.url, timeout=TIMEOUT)
        try:
            s = conn.create_sender("full")
            got = [outcome(conn, s, Message(body=i)) for i in range(3)]
        finally:
            conn.close()
        assert [o.state for o in got] == [Delivery.ACCEPTED, Delivery.ACCEPTED, Delivery.REJECTED]
        assert got[2].condition == RESOURCE_LIMIT
        assert "full" in (got[2].description or "")
        assert m.call("READ", "queue", "full").body["depth"] == 2
    assert fetch(broker.url, "full") == [0, 1]


def test_max_size_reject_policy_is_the_default(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_queue("small", arguments={"qpid.max_size": 300})
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        s = conn.create_sender("small")
        first = outcome(conn, s, Message(body="x" * 100))
        second = outcome(conn, s, Message(body="y" * 100))
        third = outcome(conn, s, Message(body="z" * 200))
    finally:
        conn.close()
    assert first.state == second.state == Delivery.ACCEPTED
    assert (third.state, third.condition) == (Delivery.REJECTED, RESOURCE_LIMIT)
    assert fetch(broker.url, "small") == ["x" * 100, "y" * 100]


def test_ring_policy_drops_the_oldest(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_queue("ring", arguments={"qpid.max_count": 3, "qpid.policy_type": "ring"})
        send(broker.url, "ring", range(6))
        stats = m.call("READ", "queue", "ring").body
        assert (stats["depth"], stats["enqueues"], stats["dequeues"]) == (3, 6, 3)
    assert fetch(broker.url, "ring") == [3, 4, 5]


def test_priority_queue_delivers_higher_priority_first(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_queue("prio", arguments={"qpid.priorities": 10})
    order = [(1, "low1"), (9, "top"), (5, "mid1"), (1, "low2"), (5, "mid2"), (7, "high")]
    send(broker.url, "prio", [Message(body=b, priority=p) for p, b in order])
    assert fetch(broker.url, "prio") == ["top", "high", "mid1", "mid2", "low1", "low2"]


def test_last_value_queue_replaces_by_key(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_queue("lvq", arguments={"qpid.last_value_queue_key": "sym"})
    ticks = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("a", 3)]
    send(
        broker.url,
        "lvq",
        [Message(body=f"{k}{v}", properties={"sym": k}) for k, v in ticks]
        + [Message(body="keyless")],
    )
    assert fetch(broker.url, "lvq") == ["c1", "b2", "a3", "keyless"]


def test_message_ttl_expires_before_delivery(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_queue("ttl")
    send(
        broker.url,
        "ttl",
        [Message(body="short", ttl=0.2), Message(body="stays"), Message(body="long", ttl=60)],
    )
    time.sleep(0.3)
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        r = conn.create_receiver("ttl")
        got = [m.body for m in receive_n(r, 2)]
        assert [m.body for m in drain(r)] == []  # "short" expired: nothing else comes
    finally:
        conn.close()
    assert got == ["stays", "long"]
    with Mgmt(broker.url) as m:
        assert m.call("READ", "queue", "ttl").body["depth"] == 0


def test_exclusive_queue_refuses_other_connections(broker: Any) -> None:
    owner = BlockingConnection(broker.url, timeout=TIMEOUT)
    other = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        props = DynamicNodeProperties({"exclusive": True, "durable": False})
        owner.create_receiver("mine", options=[props, CreateOnDemand()])
        with pytest.raises(LinkDetached, match="resource-locked"):
            other.create_receiver("mine")
    finally:
        other.close()
    with Mgmt(broker.url) as m:
        q = m.call("READ", "queue", "mine").body
        assert q["exclusive"] is True
        owner.close()
        # Once its owner has gone, the queue (not auto-delete) stays and is open to anyone.
        q = m.call("READ", "queue", "mine").body
        assert q["exclusive"] is False


def test_auto_delete_queue_goes_with_its_last_consumer(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_queue("temp", auto_delete=True)
        assert m.call("READ", "queue", "temp").body["auto-delete"] is True
        conn = BlockingConnection(broker.url, timeout=TIMEOUT)
        try:
            r = conn.create_receiver("temp")
            send(broker.url, "temp", ["x"])
            assert r.receive(timeout=TIMEOUT).body == "x"
            r.accept()
            assert m.call("READ", "queue", "temp").code == 200
            r.close()
        finally:
            conn.close()
        assert m.call("READ", "queue", "temp").code == 404


def test_restart_keeps_durable_messages_on_durable_queues_only(brokers: Any) -> None:
    b = brokers.start()
    with Mgmt(b.url) as m:
        m.create_queue("keep", durable=True)
        m.create_queue("lose", durable=False)
    send(
        b.url,
        "keep",
        [Message(body="d1", durable=True), "transient", Message(body="d2", durable=True)],
    )
    send(b.url, "lose", [Message(body="d3", durable=True)])
    assert b.terminate() == 0
    b2 = brokers.start(data_dir=b.data_dir)
    assert fetch(b2.url, "keep") == ["d1", "d2"]
    with Mgmt(b2.url) as m:
        assert m.call("READ", "queue", "lose").code == 404
        assert m.call("READ", "queue", "keep").body["durable"] is True


def test_policies_and_their_drops_survive_a_restart(brokers: Any) -> None:
    """What a policy dropped (ring eviction, last-value replacement, expiry, purge) stays dropped
    after a restart, and the restored queues keep applying their arguments."""
    b = brokers.start()
    with Mgmt(b.url) as m:
        ring = {"qpid.max_count": 3, "qpid.policy_type": "ring"}
        m.create_queue("d_ring", durable=True, arguments=ring)
        m.create_queue("d_lvq", durable=True, arguments={"qpid.last_value_queue_key": "k"})
        m.create_queue("d_prio", durable=True, arguments={"qpid.priorities": 10})
        m.create_queue("d_ttl", durable=True)
        m.create_queue("d_purged", durable=True)

        def d(body: Any, **kw: Any) -> Message:
            return Message(body=body, durable=True, **kw)

        send(b.url, "d_ring", [d(i) for i in range(5)])
        send(b.url, "d_lvq", [d(f"{k}{i}", properties={"k": k}) for i in range(2) for k in "ab"])
        send(b.url, "d_prio", [d(f"p{p}", priority=p) for p in (1, 8, 4)])
        send(b.url, "d_ttl", [d("gone", ttl=0.2), d("kept")])
        send(b.url, "d_purged", [d("x"), d("y")])
        assert m.call("PURGE", "queue", "d_purged").body == {"purged": 2}
    time.sleep(0.3)
    assert b.terminate() == 0
    b2 = brokers.start(data_dir=b.data_dir)
    assert fetch(b2.url, "d_ring") == [2, 3, 4]
    assert fetch(b2.url, "d_lvq") == ["a1", "b1"]
    assert fetch(b2.url, "d_prio") == ["p8", "p4", "p1"]
    assert fetch(b2.url, "d_ttl", 1) == ["kept"]
    with Mgmt(b2.url) as m:
        assert m.call("READ", "queue", "d_purged").body["depth"] == 0
        assert m.call("READ", "queue", "d_ring").body["arguments"] == ring
    # The restored ring queue still evicts; the restored LVQ still replaces.
    send(b2.url, "d_ring", [Message(body=i, durable=True) for i in range(10, 15)])
    assert fetch(b2.url, "d_ring") == [12, 13, 14]
    send(b2.url, "d_lvq", [Message(body=f"a{i}", properties={"k": "a"}) for i in (5, 6)])
    assert fetch(b2.url, "d_lvq") == ["a6"]
