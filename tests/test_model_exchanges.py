"""Exchanges, bindings and routing in the broker model."""

from __future__ import annotations

import re

import pytest

from broker.model import (
    Broker,
    InvalidField,
    Message,
    NotAllowed,
    NotFound,
    PreconditionFailed,
)
from broker.model.topic import match, words
from qstore.exchanges import is_builtin_exchange


def names(queues) -> list[str]:
    return sorted(q.name for q in queues)


@pytest.fixture
def broker() -> Broker:
    b = Broker()
    for name in ("q1", "q2", "q3"):
        b.declare_queue(name)
    return b


def test_builtins_present_and_undeletable(broker: Broker) -> None:
    expected = {
        "": "direct",
        "amq.direct": "direct",
        "amq.topic": "topic",
        "amq.fanout": "fanout",
        "amq.match": "headers",
    }
    assert {n: x.type for n, x in broker.exchanges.items()} == expected
    for name in expected:
        with pytest.raises(NotAllowed) as err:
            broker.delete_exchange(name)
        assert err.value.condition == "amqp:not-allowed"
    # Declaring a built-in with its own type is a no-op; with another type it is refused.
    assert broker.declare_exchange("amq.topic", "topic") == (broker.exchanges["amq.topic"], False)
    with pytest.raises(PreconditionFailed, match="type topic"):
        broker.declare_exchange("amq.topic", "fanout")
    with pytest.raises(NotAllowed, match="reserved"):
        broker.declare_exchange("amq.mine", "direct")
    # The model's built-ins are the ones the journal and the event log take for built in.
    assert {n for n, x in broker.exchanges.items() if x.builtin} == set(expected)
    assert all(is_builtin_exchange(n) for n in expected)
    assert not is_builtin_exchange("amq") and not is_builtin_exchange("x.amq.y")


def test_default_exchange_routes_by_queue_name(broker: Broker) -> None:
    assert names(broker.route("", "q2", Message(b""))) == ["q2"]
    assert broker.route("", "nope", Message(b"")) == []
    r = broker.publish("", Message(b"x"), 0.0, routing_key="q1")
    assert r.accepted and r.queues == ("q1",)
    assert broker.queues["q1"].depth == 1
    with pytest.raises(NotAllowed, match="takes no bindings"):
        broker.bind("", "q1", "q1")


def test_direct(broker: Broker) -> None:
    broker.declare_exchange("d", "direct")
    broker.bind("d", "q1", "red")
    broker.bind("d", "q2", "red")
    broker.bind("d", "q3", "blue")
    assert names(broker.route("d", "red", Message(b""))) == ["q1", "q2"]
    assert names(broker.route("d", "blue", Message(b""))) == ["q3"]
    assert broker.route("d", "green", Message(b"")) == []
    assert broker.unbind("d", "q1", "red")
    assert not broker.unbind("d", "q1", "red")
    assert names(broker.route("d", "red", Message(b""))) == ["q2"]


def test_fanout_each_queue_once(broker: Broker) -> None:
    broker.bind("amq.fanout", "q1")
    broker.bind("amq.fanout", "q1", "other-key")
    broker.bind("amq.fanout", "q2")
    assert names(broker.route("amq.fanout", "anything", Message(b""))) == ["q1", "q2"]
    broker.unbind("amq.fanout", "q1")
    assert names(broker.route("amq.fanout", "", Message(b""))) == ["q1", "q2"]
    broker.unbind("amq.fanout", "q1", "other-key")
    assert names(broker.route("amq.fanout", "", Message(b""))) == ["q2"]


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("a.*.c", "a.b.b.c", False),
        ("*", "a", True),
        ("*", "", False),
        ("*", "a.b", False),
        ("#", "", True),
        ("#", "a", True),
        ("#", "a.b.c", True),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("a.#", "b.a", False),
        ("#.a", "a", True),
        ("#.a", "x.y.a", True),
        ("#.a", "x.a.y", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.x.y.c", False),
        ("#.b.#", "b", True),
        ("#.b.#", "a.b.c", True),
        ("#.b.#", "a.c", False),
        ("*.#", "", False),
        ("*.#", "a", True),
        ("#.*", "a.b", True),
        ("#.#", "", True),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        ("a.#.#.b", "a.b", True),
        ("#.a.#.a", "a.a.a", True),
        ("#.a.*", "a.a.a.b", True),
        ("a..b", "a..b", True),
        ("a.*.b", "a..b", True),  # an empty word is still a word
        ("", "", True),
        ("", "a", False),
        ("a*", "ab", False),  # '*' is only a wildcard as a whole word
        ("a*", "a*", True),
        ("a", "a.", False),
    ],
)
def test_topic_match(pattern: str, key: str, expected: bool) -> None:
    assert match(words(pattern), words(key)) is expected


def test_topic_exchange(broker: Broker) -> None:
    broker.bind("amq.topic", "q1", "stock.#")
    broker.bind("amq.topic", "q1", "stock.usd.*")  # overlaps: still one copy
    broker.bind("amq.topic", "q2", "stock.usd.ibm")
    broker.bind("amq.topic", "q3", "*.eur.*")
    assert names(broker.route("amq.topic", "stock.usd.ibm", Message(b""))) == ["q1", "q2"]
    assert names(broker.route("amq.topic", "stock.eur.sap", Message(b""))) == ["q1", "q3"]
    assert names(broker.route("amq.topic", "bond.eur.x", Message(b""))) == ["q3"]
    assert names(broker.route("amq.topic", "stock", Message(b""))) == ["q1"]
    # The result cache must not survive a binding change.
    broker.unbind("amq.topic", "q1", "stock.#")
    assert names(broker.route("amq.topic", "stock.eur.sap", Message(b""))) == ["q3"]
    assert names(broker.route("amq.topic", "stock.usd.ibm", Message(b""))) == ["q1", "q2"]


def test_publish_uses_subject_as_routing_key(broker: Broker) -> None:
    broker.bind("amq.topic", "q1", "a.*")
    assert broker.publish("amq.topic", Message(b"x", subject="a.b"), 0.0).queues == ("q1",)
    r = broker.publish("amq.topic", Message(b"x", subject="z"), 0.0, routing_key="a.c")
    assert r.queues == ("q1",)


def test_headers_all_and_any(broker: Broker) -> None:
    broker.bind("amq.match", "q1", "k1", {"x-match": "all", "type": "order", "region": "eu"})
    broker.bind("amq.match", "q2", "k2", {"x-match": "any", "type": "order", "region": "eu"})
    broker.bind("amq.match", "q3", "k3", {"urgent": None, "x-other": "ignored"})  # default all

    def route(**props: object) -> list[str]:
        return names(broker.route("amq.match", "ignored", Message(b"", properties=props)))

    assert route(type="order", region="eu") == ["q1", "q2"]
    assert route(type="order", region="us") == ["q2"]
    assert route(region="eu", extra=1) == ["q2"]
    assert route(urgent=False) == ["q3"]  # None in a binding: present with any value
    assert route() == []


def test_headers_value_comparison_tolerates_text(broker: Broker) -> None:
    broker.bind("amq.match", "q1", "", {"x-match": "all", "n": "5", "flag": "true"})
    msg = Message(b"", properties={"n": 5, "flag": True})
    assert names(broker.route("amq.match", "", msg)) == ["q1"]
    assert broker.route("amq.match", "", Message(b"", properties={"n": 6, "flag": True})) == []


def test_headers_binding_arguments_replaced(broker: Broker) -> None:
    assert broker.bind("amq.match", "q1", "k", {"a": 1})
    assert not broker.bind("amq.match", "q1", "k", {"a": 1})  # same: nothing to do
    assert broker.bind("amq.match", "q1", "k", {"a": 2})
    assert broker.route("amq.match", "", Message(b"", properties={"a": 1})) == []
    assert names(broker.route("amq.match", "", Message(b"", properties={"a": 2}))) == ["q1"]


def test_headers_bad_x_match(broker: Broker) -> None:
    with pytest.raises(InvalidField, match="x-match must be 'all' or 'any'") as err:
        broker.bind("amq.match", "q1", "", {"x-match": "some"})
    assert err.value.condition == "amqp:invalid-field"


def test_bind_to_missing_things(broker: Broker) -> None:
    with pytest.raises(NotFound, match="no queue named 'nope'") as err:
        broker.bind("amq.direct", "nope", "k")
    assert err.value.condition == "amqp:not-found"
    with pytest.raises(NotFound, match="no exchange named 'nope'"):
        broker.bind("nope", "q1", "k")
    with pytest.raises(NotFound):
        broker.publish("nope", Message(b""), 0.0)


def test_deleting_queue_removes_its_bindings(broker: Broker) -> None:
    broker.declare_exchange("t", "topic")
    broker.bind("t", "q1", "#")
    broker.bind("amq.direct", "q1", "k")
    broker.bind("amq.direct", "q2", "k")
    broker.delete_queue("q1")
    assert names(broker.route("amq.direct", "k", Message(b""))) == ["q2"]
    assert broker.route("t", "x", Message(b"")) == []
    assert broker.exchanges["t"].bindings == {}
    # A new queue with the old name starts without bindings.
    broker.declare_queue("q1")
    assert broker.queues["q1"].bindings == {}
    assert names(broker.route("amq.direct", "k", Message(b""))) == ["q2"]


def test_deleting_exchange_removes_its_bindings(broker: Broker) -> None:
    broker.declare_exchange("f", "fanout")
    broker.bind("f", "q1")
    broker.bind("amq.fanout", "q1")
    broker.delete_exchange("f")
    assert list(broker.queues["q1"].bindings) == [("amq.fanout", "")]
    with pytest.raises(NotFound):
        broker.delete_exchange("f")
    broker.declare_exchange("f", "fanout")
    assert broker.route("f", "", Message(b"")) == []


def test_exchange_declare_rules(broker: Broker) -> None:
    x, created = broker.declare_exchange("e", "topic", durable=True, arguments={"k": 1})
    assert created and x.durable and x.arguments == {"k": 1}
    assert broker.declare_exchange("e", "topic") == (x, False)
    with pytest.raises(PreconditionFailed, match="already exists with type topic"):
        broker.declare_exchange("e", "direct")
    with pytest.raises(InvalidField, match="unknown exchange type 'x-weird'"):
        broker.declare_exchange("w", "x-weird")
    replicate = re.escape("qpid.replicate must be one of none|configuration|all")
    with pytest.raises(InvalidField, match=replicate):
        broker.declare_exchange("w", "direct", arguments={"qpid.replicate": "some"})
    with pytest.raises(InvalidField, match="name must be a non-empty string"):
        broker.declare_exchange(None, "direct")  # type: ignore[arg-type]


def test_unrouted_message_is_accepted_dropped_and_counted(broker: Broker) -> None:
    broker.bind("amq.direct", "q1", "k")
    r = broker.publish("amq.direct", Message(b"x"), 0.0, routing_key="other")
    assert r.accepted and r.id is None and r.queues == ()
    broker.publish("amq.direct", Message(b"x"), 0.0, routing_key="k")
    s = broker.exchanges["amq.direct"].stats()
    assert (s.routed, s.dropped, s.bindings) == (1, 1, 1)
    assert broker.stats().dropped == 1 and broker.stats().routed == 1


def test_fanout_gives_same_id_to_every_queue(broker: Broker) -> None:
    for q in ("q1", "q2", "q3"):
        broker.bind("amq.fanout", q)
    r = broker.publish("amq.fanout", Message(b"m"), 0.0)
    assert r.accepted and sorted(r.queues) == ["q1", "q2", "q3"]
    for q in ("q1", "q2", "q3"):
        assert [m.id for m in broker.queues[q].messages()] == [r.id]


def test_resolve_prefers_queue(broker: Broker) -> None:
    broker.declare_exchange("q1", "fanout")
    assert broker.resolve("q1") is broker.queues["q1"]
    assert broker.resolve("amq.topic") is broker.exchanges["amq.topic"]
    assert broker.resolve("missing") is None
