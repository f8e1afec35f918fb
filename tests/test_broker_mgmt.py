"""The `$management` node of a real qstored, over stock proton request/response.

Requests carry `operation`, `type` and `name` as application properties; the response carries
`statusCode` and `statusDescription`: 200 OK, 201 created, 204 deleted, 400 bad request, 404 not
found, 409 conflict, 501 not supported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from broker_clients import TIMEOUT, Mgmt, send
from proton import Message
from proton.utils import BlockingConnection, LinkDetached


@pytest.fixture
def mgmt(brokers: Any) -> Iterator[Mgmt]:
    b = brokers.start()
    with Mgmt(b.url) as m:
        m.broker = b  # type: ignore[attr-defined]
        yield m


def test_queue_create_read_query_delete(mgmt: Mgmt) -> None:
    args = {"qpid.max_count": 10, "qpid.policy_type": "ring", "qpid.replicate": "all"}
    r = mgmt.call("CREATE", "queue", "q1", {"durable": True, "arguments": args})
    assert (r.code, r.body["name"], r.body["durable"], r.body["arguments"]) == (
        201,
        "q1",
        True,
        args,
    )
    again = mgmt.call("CREATE", "queue", "q1", {"durable": True})
    assert again.code == 200  # declaring what exists is not an error
    mgmt.create_queue("q2")
    read = mgmt.call("READ", "queue", "q1")
    assert read.code == 200
    assert {k: read.body[k] for k in ("name", "depth", "consumers", "auto-delete")} == {
        "name": "q1",
        "depth": 0,
        "consumers": 0,
        "auto-delete": False,
    }
    names = {q["name"] for q in mgmt.call("QUERY", "queue").body}
    assert {"q1", "q2"} <= names
    assert mgmt.call("DELETE", "queue", "q2").code == 204
    assert mgmt.call("READ", "queue", "q2").code == 404
    assert "q2" not in {q["name"] for q in mgmt.call("QUERY", "queue").body}


def test_exchange_create_read_query_delete(mgmt: Mgmt) -> None:
    r = mgmt.call("CREATE", "exchange", "x1", {"type": "topic", "durable": True})
    assert (r.code, r.body["type"], r.body["durable"], r.body["builtin"]) == (
        201,
        "topic",
        True,
        False,
    )
    read = mgmt.call("READ", "exchange", "x1")
    assert (read.code, read.body["name"], read.body["bindings"]) == (200, "x1", 0)
    wrong = mgmt.call("CREATE", "exchange", "x1", {"type": "fanout"})
    assert wrong.code == 409 and "topic" in wrong.description
    bad = mgmt.call("CREATE", "exchange", "x2", {"type": "nonsense"})
    assert bad.code == 400 and "nonsense" in bad.description
    reserved = mgmt.call("CREATE", "exchange", "amq.mine", {"type": "direct"})
    assert reserved.code == 400 and "reserved" in reserved.description
    names = {x["name"] for x in mgmt.call("QUERY", "exchange").body}
    assert {"x1", "amq.direct", "amq.topic", "amq.fanout", "amq.match"} <= names
    assert mgmt.call("DELETE", "exchange", "amq.topic").code == 400  # built in: never deleted
    assert mgmt.call("DELETE", "exchange", "x1").code == 204
    assert mgmt.call("READ", "exchange", "x1").code == 404


def test_binding_create_query_delete(mgmt: Mgmt) -> None:
    mgmt.create_exchange("bx", "direct")
    mgmt.create_queue("bq1")
    mgmt.create_queue("bq2")
    first = mgmt.call("CREATE", "binding", None, {"exchange": "bx", "queue": "bq1", "key": "k"})
    assert first.code == 201
    same = mgmt.call("CREATE", "binding", None, {"exchange": "bx", "queue": "bq1", "key": "k"})
    assert same.code == 200
    mgmt.bind("bx", "bq2", "k")
    mgmt.bind("amq.topic", "bq2", "t.#")
    everything = mgmt.call("QUERY", "binding", None, {})
    triples = {(b["exchange"], b["queue"], b["key"]) for b in everything.body}
    assert {("bx", "bq1", "k"), ("bx", "bq2", "k"), ("amq.topic", "bq2", "t.#")} <= triples
    of_bx = mgmt.call("QUERY", "binding", None, {"exchange": "bx"}).body
    assert sorted(b["queue"] for b in of_bx) == ["bq1", "bq2"]
    of_bq2 = mgmt.call("QUERY", "binding", None, {"queue": "bq2"}).body
    assert sorted(b["exchange"] for b in of_bq2) == ["amq.topic", "bx"]
    gone = mgmt.call("DELETE", "binding", None, {"exchange": "bx", "queue": "bq1", "key": "k"})
    assert gone.code == 204
    again = mgmt.call("DELETE", "binding", None, {"exchange": "bx", "queue": "bq1", "key": "k"})
    assert again.code == 404
    no_queue = mgmt.call("CREATE", "binding", None, {"exchange": "bx", "queue": "nope"})
    assert no_queue.code == 404 and "nope" in no_queue.description
    no_exchange = mgmt.call("CREATE", "binding", None, {"exchange": "nope", "queue": "bq1"})
    assert no_exchange.code == 404
    # Deleting a queue takes its bindings with it.
    assert mgmt.call("DELETE", "queue", "bq2").code == 204
    assert mgmt.call("QUERY", "binding", None, {"queue": "bq2"}).body == []
    assert mgmt.call("READ", "exchange", "bx").body["bindings"] == 0


def test_broker_read_info_and_statistics(mgmt: Mgmt) -> None:
    b = mgmt.broker  # type: ignore[attr-defined]
    mgmt.create_queue("sq")
    send(b.url, "sq", ["a", "b"])
    r = mgmt.call("READ", "broker")
    assert r.code == 200
    info = r.body
    assert info["pid"] == b.pid
    assert info["state"] == "standalone"
    assert info["name"].endswith(f":{b.port}")
    assert info["data-dir"] == str(b.data_dir)
    stats = info["statistics"]
    assert stats["depth"] >= 2 and stats["enqueues"] >= 2
    assert stats["queues"] >= 1 and stats["exchanges"] >= 5
    assert stats["connections"] >= 1
    conns = mgmt.call("QUERY", "connection")
    assert conns.code == 200 and any(c["links"] >= 2 for c in conns.body)


def test_invalid_replicate_value_is_refused_with_400(mgmt: Mgmt) -> None:
    for kind, body in (
        ("queue", {"arguments": {"qpid.replicate": "sometimes"}}),
        ("exchange", {"type": "direct", "arguments": {"qpid.replicate": "sometimes"}}),
    ):
        r = mgmt.call("CREATE", kind, "repl", body)
        assert r.code == 400, r
        assert "qpid.replicate" in r.description and "sometimes" in r.description
        assert "none|configuration|all" in r.description
        assert mgmt.call("READ", kind, "repl").code == 404
    bad_count = mgmt.call("CREATE", "queue", "cnt", {"arguments": {"qpid.max_count": "lots"}})
    assert bad_count.code == 400 and "qpid.max_count" in bad_count.description


def test_delete_non_empty_queue_needs_force(mgmt: Mgmt) -> None:
    b = mgmt.broker  # type: ignore[attr-defined]
    mgmt.create_queue("busy")
    send(b.url, "busy", [Message(body="x")])
    refused = mgmt.call("DELETE", "queue", "busy")
    assert refused.code == 409
    assert "1 messages" in refused.description and "force" in refused.description
    assert mgmt.call("READ", "queue", "busy").body["depth"] == 1
    assert mgmt.call("DELETE", "queue", "busy", {"force": True}).code == 204
    assert mgmt.call("READ", "queue", "busy").code == 404


def test_unknown_names_and_operations(mgmt: Mgmt) -> None:
    for op, kind in (("READ", "queue"), ("DELETE", "queue"), ("PURGE", "queue")):
        r = mgmt.call(op, kind, "ghost")
        assert r.code == 404 and "ghost" in r.description, (op, kind, r)
    for op in ("READ", "DELETE"):
        r = mgmt.call(op, "exchange", "ghost")
        assert r.code == 404 and "ghost" in r.description, (op, r)
    assert mgmt.call("FROB", "queue", "ghost").code == 501
    assert mgmt.call("READ", "gizmo", "ghost").code == 501
    assert mgmt.call("CREATE", "queue").code == 400  # no name


def test_purge_drops_available_messages(mgmt: Mgmt) -> None:
    b = mgmt.broker  # type: ignore[attr-defined]
    mgmt.create_queue("pq")
    send(b.url, "pq", ["a", "b", "c"])
    r = mgmt.call("PURGE", "queue", "pq")
    assert (r.code, r.body) == (200, {"purged": 3})
    assert mgmt.call("READ", "queue", "pq").body["depth"] == 0


def test_forced_delete_detaches_consumers_with_resource_deleted(mgmt: Mgmt) -> None:
    b = mgmt.broker  # type: ignore[attr-defined]
    mgmt.create_queue("doomed")
    conn = BlockingConnection(b.url, timeout=TIMEOUT)
    try:
        r = conn.create_receiver("doomed", credit=0)
        assert mgmt.call("READ", "queue", "doomed").body["consumers"] == 1
        send(b.url, "doomed", ["x"])
        assert mgmt.call("DELETE", "queue", "doomed", {"force": True}).code == 204
        with pytest.raises(LinkDetached, match="resource-deleted"):
            r.receive(timeout=TIMEOUT)
    finally:
        conn.close()
