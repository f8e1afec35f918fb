"""What replicates, through real `qstored --ha-cluster` processes and stock proton clients.

The seed's 1.12.7: `--ha-replicate` sets the default level (none, configuration, all), the
`qpid.replicate` argument overrides it per queue or exchange, bindings replicate when both ends
do, built-in exchanges and private (exclusive auto-delete) queues never do. Each case is checked
in steady state (a backup that follows the primary) and through catch-up (a backup that was down
while the changes happened, or that joins with an empty data directory).
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from cluster_harness import Cluster, browse
from proton import Message
from proton.reactor import DynamicNodeProperties

LEVELS = ("none", "configuration", "all")
BUILTIN = {"", "amq.direct", "amq.topic", "amq.fanout", "amq.match"}


def replicated_view(c: Cluster, i: int) -> dict[str, Any]:
    """Member i's queues, exchanges and bindings as its `$management` QUERY shows them (over an
    admin connection), leaving out the private queues management and subscriptions make."""
    m = c.management(i)
    try:
        queues = m.call("QUERY", "queue")
        exchanges = m.call("QUERY", "exchange")
        bindings = m.call("QUERY", "binding")
    finally:
        m.close()

    def private(name: str) -> bool:
        return name.startswith(("qstore.tmp.", "qstore.sub."))

    return {
        "queues": {
            q["name"]: (q["uuid"], q["durable"], q["depth"], dict(q["arguments"]))
            for q in queues
            if not private(q["name"])
        },
        "exchanges": {
            x["name"]: (x["uuid"], x["type"], x["durable"], dict(x["arguments"]))
            for x in exchanges
            if not x["builtin"]
        },
        "bindings": sorted(
            (b["exchange"], b["queue"], b["key"]) for b in bindings if not private(b["queue"])
        ),
    }


def send(c: Cluster, i: int, address: str, bodies: list[Any], **kw: Any) -> None:
    conn = c.client(i)
    try:
        s = conn.create_sender(address)
        for b in bodies:
            s.send(Message(body=b, durable=True, **kw))
    finally:
        conn.close()


def wait_same(c: Cluster, backups: list[int], primary: int = 0) -> dict[str, Any]:
    """Wait until every backup's view equals the primary's; return it."""
    want = replicated_view(c, primary)
    c.wait(
        lambda: all(replicated_view(c, i) == want for i in backups),
        f"backups {backups} to hold what the primary holds",
    )
    return want


# -- levels -----------------------------------------------------------------------------------


def _create(c: Cluster, suffix: str, level: str | None) -> None:
    """Queue q<suffix>, exchange x<suffix> (direct) bound to it, at `level` (None: default)."""
    args = {} if level is None else {"qpid.replicate": level}
    m = c.management(0)
    try:
        m.call("CREATE", "queue", f"q{suffix}", {"durable": True, "arguments": args})
        m.call(
            "CREATE",
            "exchange",
            f"x{suffix}",
            {"type": "direct", "durable": True, "arguments": args},
        )
        m.call(
            "CREATE", "binding", None, {"exchange": f"x{suffix}", "queue": f"q{suffix}", "key": "k"}
        )
        # a binding to a built-in exchange is never replicated, whatever the queue's level
        m.call(
            "CREATE", "binding", None, {"exchange": "amq.direct", "queue": f"q{suffix}", "key": "k"}
        )
    finally:
        m.close()
    send(c, 0, f"q{suffix}", [f"{suffix}-1", f"{suffix}-2"])
    # routed through the exchange: one more message on the queue
    send(c, 0, f"x{suffix}", [f"{suffix}-3"], subject="k")


def _expect(level: str, suffix: str, view: dict[str, Any]) -> None:
    q, x = f"q{suffix}", f"x{suffix}"
    if level == "none":
        assert q not in view["queues"], view
        assert x not in view["exchanges"], view
        return
    assert q in view["queues"] and x in view["exchanges"], view
    assert view["queues"][q][2] == (3 if level == "all" else 0), view["queues"][q]
    assert (x, q, "k") in view["bindings"]
    assert ("amq.direct", q, "k") not in view["bindings"]


@pytest.mark.parametrize("default", LEVELS)
def test_levels_default_and_per_entity_steady_and_catch_up(cluster, default: str) -> None:
    c = cluster(3, replicate=default)
    c.kill(2)  # member 2 misses everything below and catches up at the end
    cases = {"d": default, **{level[0]: level for level in LEVELS}}  # "d": no argument given
    for suffix, level in cases.items():
        _create(c, suffix, None if suffix == "d" else level)
    # private queue of a client: exclusive and auto-delete, not replicated by default
    holder = c.client(0)
    holder.create_receiver(
        "private", options=DynamicNodeProperties({"exclusive": True, "auto-delete": True})
    )
    # the level asked for in the address, as the seed's clients do (x-declare arguments)
    for level in ("none", "all"):
        holder.create_sender(
            f"by-address-{level}",
            options=DynamicNodeProperties({"x-declare": {"arguments": {"qpid.replicate": level}}}),
        ).close()
    try:
        primary = replicated_view(c, 0)
        assert "private" in primary["queues"]
        assert {"by-address-none", "by-address-all"} <= set(primary["queues"])
        # steady state: member 1 followed every change
        c.wait(lambda: replicated_view(c, 1)["queues"].get("qa", (0, 0, 0))[2] == 3, "qa on 1")
        c.wait(
            lambda: (
                replicated_view(c, 1)["queues"].get("qd", (0, 0, 0))[2]
                == (3 if default == "all" else 0)
            ),
            "qd on 1",
        )
        c.wait(lambda: "by-address-all" in replicated_view(c, 1)["queues"], "by-address-all")
        view = replicated_view(c, 1)
        for suffix, level in cases.items():
            _expect(level, suffix, view)
        assert "private" not in view["queues"]
        assert "by-address-none" not in view["queues"]
        # catch-up: member 2 was down; it gets the same
        c.start(2)
        c.wait_states({2: "ready"})
        view1 = replicated_view(c, 1)
        c.wait(lambda: replicated_view(c, 2) == view1, "member 2 to hold what member 1 holds")
        for suffix, level in cases.items():
            _expect(level, suffix, view1)
        # what replicated is the primary's own entity (same uuid, durability, arguments)
        for k in ("queues", "exchanges"):
            for name, (uuid, durable, _, args) in view1[k].items():
                assert primary[k][name][0::3] == (uuid, args) and primary[k][name][1] == durable
        a = c.admin(2)
        try:
            assert browse(a, "qa") == ["a-1", "a-2", "a-3"]
        finally:
            a.close()
    finally:
        holder.close()


def test_invalid_replicate_argument_is_refused(cluster) -> None:
    c = cluster(2)
    m = c.management(0)
    try:
        for kind, body in (
            ("queue", {"arguments": {"qpid.replicate": "sometimes"}}),
            ("exchange", {"type": "direct", "arguments": {"qpid.replicate": "sometimes"}}),
        ):
            code, desc, _ = m.request("CREATE", kind, "bad", body)
            assert code == 400, (kind, code, desc)
            assert "qpid.replicate" in desc and "sometimes" in desc
        code, _, _ = m.request("READ", "queue", "bad")
        assert code == 404
    finally:
        m.close()


# -- backups joining at different times -------------------------------------------------------


def test_backups_joining_at_different_times_end_identical(cluster) -> None:
    """Member 2 joins (empty data directory) after 1000 messages were sent; then 990 are
    consumed. Both backups end with the same entities and exactly the last 10 messages."""
    c = cluster(3)
    c.kill(2)
    shutil.rmtree(c.data_dir(2))
    m = c.management(0)
    try:
        m.call("CREATE", "exchange", "orders", {"type": "topic", "durable": True})
        m.call("CREATE", "queue", "big", {"durable": True})
        m.call(
            "CREATE",
            "queue",
            "config-only",
            {"durable": True, "arguments": {"qpid.replicate": "configuration"}},
        )
        m.call("CREATE", "binding", None, {"exchange": "orders", "queue": "big", "key": "o.#"})
    finally:
        m.close()
    conn = c.client(0)
    try:
        s = conn.create_sender("big")
        for n in range(1000):
            s.send(Message(body=f"m{n}", durable=True))
        c.start(2)  # joins while the primary holds 1000 messages
        c.wait_states({2: "ready"})
        m = c.management(0)
        try:
            m.call("CREATE", "queue", "later", {"durable": True})
            m.call(
                "CREATE", "binding", None, {"exchange": "orders", "queue": "later", "key": "o.*"}
            )
        finally:
            m.close()
        r = conn.create_receiver("big", credit=100)
        for n in range(990):
            msg = r.receive(timeout=10)
            assert msg.body == f"m{n}"
            r.accept()
        r.close()
    finally:
        conn.close()
    want = wait_same(c, [1, 2])
    assert want["queues"]["big"][2] == 10
    assert ("orders", "later", "o.*") in want["bindings"]
    for i in (1, 2):
        a = c.admin(i)
        try:
            assert browse(a, "big") == [f"m{n}" for n in range(990, 1000)]
        finally:
            a.close()
    # deletions follow too
    m = c.management(0)
    try:
        m.call("DELETE", "binding", None, {"exchange": "orders", "queue": "big", "key": "o.#"})
        m.call("DELETE", "queue", "config-only", {})
        m.call("DELETE", "queue", "later", {})
        m.call("DELETE", "exchange", "orders", {})
    finally:
        m.close()
    want = wait_same(c, [1, 2])
    assert sorted(want["queues"]) == ["big"] and not want["exchanges"] and not want["bindings"]


def test_fresh_backup_after_total_restart_gets_a_snapshot(cluster) -> None:
    """Every broker is killed; member 2 comes back with an empty data directory. The promoted
    member's recent log starts at its restart, so member 2 gets a snapshot, not a tail."""
    c = cluster(3)
    m = c.management(0)
    try:
        m.call("CREATE", "exchange", "events", {"type": "fanout", "durable": True})
        m.call("CREATE", "queue", "kept", {"durable": True})
        m.call("CREATE", "binding", None, {"exchange": "events", "queue": "kept"})
    finally:
        m.close()
    send(c, 0, "events", [f"e{n}" for n in range(5)])
    wait_same(c, [1, 2])
    c.restart_all(0, empty=(2,))
    want = wait_same(c, [1, 2])
    assert want["queues"]["kept"][2] == 5
    assert "snapshot" in c.log(0).split("epoch")[-1]
    a = c.admin(2)
    try:
        assert browse(a, "kept") == [f"e{n}" for n in range(5)]
    finally:
        a.close()


# -- same name, new queue ---------------------------------------------------------------------


def test_same_name_recreated_while_backup_down(cluster) -> None:
    c = cluster(3)
    m = c.management(0)
    try:
        m.call("CREATE", "exchange", "x", {"type": "direct", "durable": True})
    finally:
        m.close()
    send(c, 0, "q", ["old-1", "old-2"])
    old = wait_same(c, [1, 2])
    c.kill(2)
    m = c.management(0)
    try:
        m.call("DELETE", "queue", "q", {"force": True})
        m.call("CREATE", "queue", "q", {"durable": True})
        m.call("DELETE", "exchange", "x", {})
        m.call("CREATE", "exchange", "x", {"type": "fanout", "durable": True})
        m.call("CREATE", "binding", None, {"exchange": "x", "queue": "q"})
    finally:
        m.close()
    send(c, 0, "q", ["new-1"])
    c.start(2)
    c.wait_states({2: "ready"})
    want = wait_same(c, [1, 2])
    assert want["queues"]["q"][0] != old["queues"]["q"][0]
    assert want["exchanges"]["x"][0] != old["exchanges"]["x"][0]
    assert want["exchanges"]["x"][1] == "fanout"
    assert want["bindings"] == [("x", "q", "")]
    a = c.admin(2)
    try:
        assert browse(a, "q") == ["new-1"]
    finally:
        a.close()


# -- special queues ---------------------------------------------------------------------------


def test_priority_lvq_and_ring_contents_match(cluster) -> None:
    c = cluster(3)
    c.kill(2)
    m = c.management(0)
    try:
        m.call("CREATE", "queue", "prio", {"durable": True, "arguments": {"qpid.priorities": 10}})
        m.call(
            "CREATE",
            "queue",
            "lvq",
            {"durable": True, "arguments": {"qpid.last_value_queue_key": "k"}},
        )
        m.call(
            "CREATE",
            "queue",
            "ring",
            {"durable": True, "arguments": {"qpid.max_count": 5, "qpid.policy_type": "ring"}},
        )
    finally:
        m.close()
    conn = c.client(0)
    try:
        s = conn.create_sender("prio")
        for n, p in enumerate([1, 9, 5, 0, 9, 3]):
            s.send(Message(body=f"p{n}@{p}", priority=p, durable=True))
        s = conn.create_sender("lvq")
        for n, k in enumerate("abcab"):
            s.send(Message(body=f"{k}{n}", properties={"k": k}, durable=True))
        s = conn.create_sender("ring")
        for n in range(12):
            s.send(Message(body=f"r{n}", durable=True))
    finally:
        conn.close()
    c.start(2)
    c.wait_states({2: "ready"})
    wait_same(c, [1, 2])
    contents = {}
    for i in range(3):
        conn = c.admin(i)
        try:
            contents[i] = {q: browse(conn, q) for q in ("prio", "lvq", "ring")}
        finally:
            conn.close()
    assert contents[0]["ring"] == [f"r{n}" for n in range(7, 12)]
    # browsing shows arrival order; dispatch order (by priority) follows from it and the levels
    assert contents[0]["prio"] == [f"p{n}@{p}" for n, p in enumerate([1, 9, 5, 0, 9, 3])]
    assert sorted(contents[0]["lvq"]) == ["a3", "b4", "c2"]
    assert contents[1] == contents[0]
    assert contents[2] == contents[0]
    # after fail-over the promoted backup dispatches them as the primary would have
    c.kill(0)
    code, desc = c.promote(2)
    assert code == 200, desc
    c.wait_states({2: "active", 1: "ready"})
    conn = c.client(2)
    try:
        consumed = {}
        for q in ("prio", "lvq", "ring"):
            r = conn.create_receiver(q, credit=20)
            consumed[q] = []
            for _ in contents[0][q]:
                consumed[q].append(r.receive(timeout=10).body)
                r.accept()
            r.close()
    finally:
        conn.close()
    assert consumed["prio"] == ["p1@9", "p4@9", "p2@5", "p5@3", "p0@1", "p3@0"]
    assert consumed["lvq"] == contents[0]["lvq"]
    assert consumed["ring"] == contents[0]["ring"]
