"""Exchanges through a real qstored and stock proton clients.

Exchanges and bindings are made over `$management`; messages go to the exchange's address with
the subject as routing key and come out of the bound queues. Receivers whose source is an exchange
get a private queue bound with their filter's key.
"""

from __future__ import annotations

from typing import Any

import pytest
from broker_clients import TIMEOUT, Mgmt, drain, fetch, send
from proton import Described, Message, symbol
from proton.reactor import Filter
from proton.utils import BlockingConnection

LEGACY_TOPIC = symbol("apache.org:legacy-amqp-topic-binding:string")
LEGACY_DIRECT = symbol("apache.org:legacy-amqp-direct-binding:string")


@pytest.fixture
def broker(brokers: Any) -> Any:
    """A broker without --auto-create: every queue and exchange here is declared."""
    return brokers.start()


def msg(body: Any, subject: str | None = None, **props: Any) -> Message:
    return Message(body=body, subject=subject, properties=props or None)


def queues(mgmt: Mgmt, *names: str) -> None:
    for n in names:
        mgmt.create_queue(n)


def test_direct_exchange_routes_by_exact_key(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_exchange("orders", "direct")
        queues(m, "eu", "us", "all")
        m.bind("orders", "eu", "eu")
        m.bind("orders", "us", "us")
        m.bind("orders", "all", "eu")
        m.bind("orders", "all", "us")
        send(broker.url, "orders", [msg("e1", "eu"), msg("u1", "us"), msg("x", "eu.x"), msg("n")])
        assert fetch(broker.url, "eu") == ["e1"]
        assert fetch(broker.url, "us") == ["u1"]
        assert fetch(broker.url, "all") == ["e1", "u1"]
        stats = m.call("READ", "exchange", "orders").body
        assert (stats["routed"], stats["dropped"]) == (2, 2)


def test_topic_exchange_star_and_hash(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_exchange("news", "topic")
        queues(m, "star", "hash", "mid", "exact")
        m.bind("news", "star", "sport.*")
        m.bind("news", "hash", "sport.#")
        m.bind("news", "mid", "*.weather.#")
        m.bind("news", "exact", "sport.football")
    keys = ["sport", "sport.football", "sport.football.uk", "uk.weather", "uk.weather.rain", "x"]
    send(broker.url, "news", [msg(k, k) for k in keys])
    assert fetch(broker.url, "star") == ["sport.football"]
    assert fetch(broker.url, "hash") == ["sport", "sport.football", "sport.football.uk"]
    assert fetch(broker.url, "mid") == ["uk.weather", "uk.weather.rain"]
    assert fetch(broker.url, "exact") == ["sport.football"]


def test_fanout_exchange_copies_to_every_queue(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_exchange("bcast", "fanout")
        queues(m, "f1", "f2", "f3")
        for q in ("f1", "f2", "f3"):
            m.bind("bcast", q, "ignored" if q == "f3" else "")
    send(broker.url, "bcast", [msg("a", "k1"), msg("b")])
    for q in ("f1", "f2", "f3"):
        assert fetch(broker.url, q) == ["a", "b"]


def test_headers_exchange_all_and_any(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_exchange("hdr", "headers")
        queues(m, "h_all", "h_any", "h_present")
        m.bind("hdr", "h_all", "", {"x-match": "all", "colour": "red", "size": 3})
        m.bind("hdr", "h_any", "", {"x-match": "any", "colour": "red", "size": 3})
        m.bind("hdr", "h_present", "", {"x-match": "all", "tag": None})
    send(
        broker.url,
        "hdr",
        [
            msg("both", colour="red", size=3),
            msg("colour", colour="red", size=4),
            msg("size", colour="blue", size=3),
            msg("tagged", tag="anything"),
            msg("none"),
        ],
    )
    assert fetch(broker.url, "h_all") == ["both"]
    assert fetch(broker.url, "h_any") == ["both", "colour", "size"]
    assert fetch(broker.url, "h_present") == ["tagged"]


def test_builtin_exchanges_and_default_exchange(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        queues(m, "bd", "bt", "bf", "bm", "plain")
        m.bind("amq.direct", "bd", "k")
        m.bind("amq.topic", "bt", "a.#")
        m.bind("amq.fanout", "bf")
        m.bind("amq.match", "bm", "", {"x-match": "any", "p": 1})
        # The default exchange takes no bindings.
        r = m.call("CREATE", "binding", None, {"exchange": "", "queue": "plain", "key": "x"})
        assert r.code == 400 and "default exchange" in r.description
        names = {x["name"] for x in m.call("QUERY", "exchange").body}
        assert {"", "amq.direct", "amq.topic", "amq.fanout", "amq.match"} <= names
    send(broker.url, "amq.direct", [msg("d", "k"), msg("d-miss", "other")])
    send(broker.url, "amq.topic", [msg("t", "a.b.c")])
    send(broker.url, "amq.fanout", [msg("f")])
    send(broker.url, "amq.match", [msg("m", p=1)])
    assert fetch(broker.url, "bd") == ["d"]
    assert fetch(broker.url, "bt") == ["t"]
    assert fetch(broker.url, "bf") == ["f"]
    assert fetch(broker.url, "bm") == ["m"]
    # The default exchange: a message with no link address goes where its `to` says.
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        sender = conn.create_sender(None)
        sender.send(Message(address="plain", body="via to"))
    finally:
        conn.close()
    assert fetch(broker.url, "plain") == ["via to"]


def test_receiver_on_exchange_gets_private_bound_queue(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_exchange("events", "topic")
        m.create_exchange("fan", "fanout")
        m.create_exchange("dx", "direct")
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        filtered = conn.create_receiver(
            "events", name="filtered", options=Filter({symbol("f"): Described(LEGACY_TOPIC, "a.*")})
        )
        everything = conn.create_receiver("events", name="everything")
        fan = conn.create_receiver("fan")
        direct = conn.create_receiver(
            "dx", options=Filter({symbol("f"): Described(LEGACY_DIRECT, "k1")})
        )
        send(broker.url, "events", [msg("ab", "a.b"), msg("abc", "a.b.c"), msg("zz", "z")])
        send(broker.url, "fan", [msg("f1", "whatever"), msg("f2")])
        send(broker.url, "dx", [msg("k1", "k1"), msg("k2", "k2")])
        assert [x.body for x in drain(filtered)] == ["ab"]
        assert [x.body for x in drain(everything)] == ["ab", "abc", "zz"]
        assert [x.body for x in drain(fan)] == ["f1", "f2"]
        assert [x.body for x in drain(direct)] == ["k1"]
    finally:
        conn.close()
    # The private queues went with their receivers.
    with Mgmt(broker.url) as m:
        names = [q["name"] for q in m.call("QUERY", "queue").body]
        assert not [n for n in names if n.startswith("qstore.sub.")], names


def test_unrouted_message_is_accepted_and_dropped(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_exchange("void", "topic")
        conn = BlockingConnection(broker.url, timeout=TIMEOUT)
        try:
            dlv = conn.create_sender("void").send(msg("lost", "no.one"), error_states=[])
            assert dlv.remote_state == dlv.ACCEPTED
        finally:
            conn.close()
        x = m.call("READ", "exchange", "void").body
        assert (x["routed"], x["dropped"]) == (0, 1)
        assert m.call("READ", "broker").body["statistics"]["dropped"] >= 1


def test_unbind_and_delete_exchange(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_exchange("tmpx", "direct")
        queues(m, "ub")
        m.bind("tmpx", "ub", "k")
        send(broker.url, "tmpx", [msg("before", "k")])
        r = m.call("DELETE", "binding", None, {"exchange": "tmpx", "queue": "ub", "key": "k"})
        assert r.code == 204, r
        send(broker.url, "tmpx", [msg("after", "k")])
        assert fetch(broker.url, "ub") == ["before"]
        assert m.call("DELETE", "exchange", "tmpx").code == 204
        assert m.call("READ", "exchange", "tmpx").code == 404


def test_headers_match_binary_values_after_the_request_is_gone(broker: Any) -> None:
    """Binary binding arguments and properties are kept as owned bytes, not as views into a
    decoded message the broker has freed since (proton 0.40 decodes binaries as memoryviews)."""
    with Mgmt(broker.url) as m:
        m.create_exchange("bin", "headers")
        queues(m, "blob")
        m.bind("bin", "blob", "", {"x-match": "all", "tag": b"\x01\x02\x03"})
        m.call("CREATE", "queue", "lvq", {"arguments": {"qpid.last_value_queue_key": "k"}})
        # Other requests and messages reuse the memory the binding's request was decoded in.
        for i in range(20):
            m.call("READ", "queue", "blob", {"filler": bytes([i]) * 64})
    send(
        broker.url,
        "bin",
        [msg("yes", tag=b"\x01\x02\x03"), msg("no", tag=b"\x01\x02\x04"), msg("none")],
    )
    assert fetch(broker.url, "blob") == ["yes"]
    send(broker.url, "lvq", [msg(f"v{i}", k=b"same") for i in range(3)] + [msg("o", k=b"other")])
    assert fetch(broker.url, "lvq") == ["v2", "o"]


def test_durable_exchanges_and_bindings_survive_a_restart(brokers: Any) -> None:
    b = brokers.start()
    with Mgmt(b.url) as m:
        m.create_exchange("dx", "topic", durable=True)
        m.create_exchange("tx", "fanout", durable=False)
        m.create_queue("dq", durable=True)
        m.bind("dx", "dq", "a.#")
        m.bind("amq.direct", "dq", "k")
        m.bind("tx", "dq")
    assert b.terminate() == 0
    b2 = brokers.start(data_dir=b.data_dir)
    with Mgmt(b2.url) as m:
        assert m.call("READ", "exchange", "dx").body["durable"] is True
        assert m.call("READ", "exchange", "tx").code == 404
        triples = {
            (x["exchange"], x["key"])
            for x in m.call("QUERY", "binding", None, {"queue": "dq"}).body
        }
        assert triples == {("dx", "a.#"), ("amq.direct", "k")}
    send(b2.url, "dx", [msg("t", "a.b")])
    send(b2.url, "amq.direct", [msg("d", "k")])
    assert fetch(b2.url, "dq") == ["t", "d"]
