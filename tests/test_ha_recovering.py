"""A newly promoted primary is `recovering` (seed 1.12.1.1): it holds back the settlement of what
senders put on replicated queues until every backup that was ready under the old primary has
reconnected and caught up, or until `--ha-backup-timeout` has passed; then it is `active`.

Each test kills the primary AND one backup, then promotes the remaining backup: it expects the
killed backup back.
"""

from __future__ import annotations

import pytest
from cluster_harness import Cluster, browse
from proton import Delivery, Message, Timeout


def _prepare(c: Cluster) -> None:
    """Queue `held` on every member, then the primary (0) and backup 2 die; 1 is promoted."""
    conn = c.client(0)
    try:
        conn.create_sender("held").send(Message(body="first", durable=True))
    finally:
        conn.close()
    for i in (1, 2):
        a = c.admin(i)
        try:
            c.wait(lambda a=a: browse(a, "held") == ["first"], f"member {i} to hold `held`")
        finally:
            a.close()
    c.kill(0)
    c.kill(2)
    code, desc = c.promote(1)
    assert code == 200, desc
    assert c.state(1) == "recovering"


def test_recovering_holds_settlement_until_the_backup_returns(cluster) -> None:
    c = cluster(3, extra=["--ha-backup-timeout", "60"])
    _prepare(c)
    m = c.management(1)
    try:  # a queue that does not replicate: nothing to hold for
        m.call(
            "CREATE", "queue", "local", {"durable": True, "arguments": {"qpid.replicate": "none"}}
        )
    finally:
        m.close()
    conn = c.client(1)  # a recovering primary lets clients in
    try:
        s = conn.create_sender("held")
        dlv = s.link.send(Message(body="while-recovering", durable=True))
        with pytest.raises(Timeout):
            conn.wait(lambda: dlv.settled, timeout=2, msg="held by the recovering primary")
        conn.create_sender("local").send(Message(body="not held", durable=True), timeout=10)
        assert c.state(1) == "recovering"
        assert not dlv.settled
        c.start(2)  # the expected backup returns and catches up: the hold ends
        conn.wait(lambda: dlv.settled, timeout=20, msg="released once member 2 is ready")
        assert dlv.remote_state == Delivery.ACCEPTED
    finally:
        conn.close()
    c.wait_states({1: "active", 2: "ready"})
    a = c.admin(2)
    try:
        c.wait(lambda: browse(a, "held") == ["first", "while-recovering"], "member 2 has it")
        assert "local" not in [q["name"] for q in c.management(2).call("QUERY", "queue")]
    finally:
        a.close()


def test_recovering_releases_after_the_backup_timeout(cluster) -> None:
    c = cluster(3, extra=["--ha-backup-timeout", "2"])
    _prepare(c)
    conn = c.client(1)
    try:
        s = conn.create_sender("held")
        dlv = s.link.send(Message(body="while-recovering", durable=True))
        conn.wait(lambda: dlv.settled, timeout=20, msg="released after the backup timeout")
        assert dlv.remote_state == Delivery.ACCEPTED
    finally:
        conn.close()
    c.wait_states({1: "active"})
    assert f"gave up on {c.address(2)}" in c.log(1)
    # the timed-out backup comes back later: it must catch up before it is ready again
    c.start(2)
    c.wait_states({1: "active", 2: "ready"})
    a = c.admin(2)
    try:
        c.wait(lambda: browse(a, "held") == ["first", "while-recovering"], "member 2 has it")
    finally:
        a.close()
