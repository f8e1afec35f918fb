"""Dedup windows across restart, fail-over and total failure (issue 15): real brokers, real
proton clients. A producer that lost the outcome of a message in a fail-over sends it again, with
the same message-id, to whichever broker is primary now: that broker must hold the id already.
Sending the ids a second time after the fault is that resend (which of them the old primary had
acknowledged does not matter to the window)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from broker_clients import drain, receive_n
from proton import Message, Timeout

WINDOW = ["--dedup-window", "1000"]


def send(c: Any, i: int, queue: str, ids: list[str]) -> None:
    conn = c.client(i)
    try:
        s = conn.create_sender(queue)
        for mid in ids:
            s.send(Message(id=mid, body=f"body of {mid}", durable=True))  # waits for accepted
    finally:
        conn.close()


def consume(c: Any, i: int, queue: str, n: int) -> list[str]:
    """The ids of the next `n` messages, accepted."""
    conn = c.client(i)
    try:
        r = conn.create_receiver(queue)
        return [m.id for m in receive_n(r, n)]
    finally:
        conn.close()


def rest(c: Any, i: int, queue: str) -> list[str]:
    """Every message left on `queue` (the broker's word, a drain), accepted."""
    conn = c.client(i)
    try:
        return [m.id for m in drain(conn.create_receiver(queue))]
    finally:
        conn.close()


def queue_stats(c: Any, i: int, queue: str) -> dict[str, Any]:
    m = c.management(i)
    try:
        [q] = [q for q in m.call("QUERY", "queue") if q["name"] == queue]
    finally:
        m.close()
    return q


def dropped(c: Any, i: int, queue: str) -> int:
    return queue_stats(c, i, queue)["duplicatesDropped"]


def wait_depth(c: Any, members: range, queue: str, depth: int) -> None:
    """The backups have applied the consumer's dequeues too (they replicate without waiting)."""
    c.wait(
        lambda: all(queue_stats(c, i, queue)["depth"] == depth for i in members),
        f"depth {depth} of {queue} on {list(members)}",
    )


def ids(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}{k}" for k in range(start, start + n)]


def test_a_resend_to_the_new_primary_after_kill_9_is_enqueued_once(cluster: Any) -> None:
    c = cluster(3, extra=WINDOW)
    send(c, 0, "orders", ids("m", 10))
    assert consume(c, 0, "orders", 3) == ids("m", 3)  # consumed: their ids stay in the window
    wait_depth(c, range(3), "orders", 7)
    c.kill(0)
    code, desc = c.promote(1)
    assert code == 200, desc
    c.wait_states({1: "active", 2: "ready"})
    send(c, 1, "orders", ids("m", 12))  # the producer sends everything again, and 2 new ones
    assert rest(c, 1, "orders") == ids("m", 9, start=3)
    assert dropped(c, 1, "orders") == 10


def test_a_resend_of_a_message_stored_but_never_acknowledged_is_enqueued_once(
    cluster: Any,
) -> None:
    """The ack window itself: the primary holds a sender's outcome until every backup has the
    message; with one backup stopped, the other has it and the sender has no outcome. The
    primary dies; the backup that has it is promoted; the sender's resend is dropped there."""
    c = cluster(3, extra=[*WINDOW, "--link-heartbeat-interval", "30"])  # the stop goes unseen
    send(c, 0, "orders", ["m0"])
    wait_depth(c, range(3), "orders", 1)
    os.kill(c.pid(2), signal.SIGSTOP)
    try:
        conn = c.client(0)
        snd = conn.create_sender("orders")
        with pytest.raises(Timeout):  # held: backup 2 never acknowledges
            snd.send(Message(id="m1", body="body of m1", durable=True), timeout=2)
        c.wait(lambda: queue_stats(c, 1, "orders")["depth"] == 2, "m1 on backup 1")
        conn.close()  # without an outcome for m1: a real client resends it
        c.kill(0)
    finally:
        os.kill(c.pid(2), signal.SIGCONT)
    code, desc = c.promote(1)
    assert code == 200, desc
    c.wait_states({1: "active", 2: "ready"})
    send(c, 1, "orders", ["m1", "m2"])  # the resend, and a new one
    assert rest(c, 1, "orders") == ["m0", "m1", "m2"]
    assert dropped(c, 1, "orders") == 1


def test_a_resend_after_total_failure_and_recovery_is_enqueued_once(cluster: Any) -> None:
    c = cluster(3, extra=WINDOW)
    send(c, 0, "orders", ids("m", 10))
    assert consume(c, 0, "orders", 4) == ids("m", 4)
    wait_depth(c, range(3), "orders", 6)
    for i in range(3):
        c.kill(i)
    for i in range(3):
        c.start(i)
    c.wait_states({0: "joining", 1: "joining", 2: "joining"})
    out = subprocess.run(
        [sys.executable, "-m", "tools.qstore_ha", "--cluster-manager", "recover",
         "-b", c.address(0)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    [p] = [i for i in range(3) if c.state(i) == "active"] or [None]
    assert p is not None
    c.wait_states({i: "active" if i == p else "ready" for i in range(3)})
    send(c, p, "orders", ids("m", 11))
    assert rest(c, p, "orders") == ids("m", 7, start=4)
    assert dropped(c, p, "orders") == 10
    # and the backups hold the same window: a fail-over now still drops them
    c.kill(p)
    q = (p + 1) % 3
    code, desc = c.promote(q)
    assert code == 200, desc
    c.wait(lambda: c.state(q) == "active", "the new primary")
    send(c, q, "orders", ids("m", 11))
    assert rest(c, q, "orders") == []
    assert dropped(c, q, "orders") == 11


def test_a_backup_caught_up_by_snapshot_holds_the_window_and_drops_a_resend(cluster: Any) -> None:
    """Member 2 comes back empty after a total restart: the promoted member's recent log starts
    at its restart, so member 2 gets a snapshot (tests/test_ha_replication.py). The snapshot
    carries the window, consumed ids included; after a fail-over to member 2 a resend is
    dropped, and so after member 2 restarts on its own journal."""
    c = cluster(3, extra=WINDOW)
    send(c, 0, "orders", ids("m", 10))
    assert consume(c, 0, "orders", 4) == ids("m", 4)
    wait_depth(c, range(3), "orders", 6)
    c.restart_all(0, empty=(2,))
    assert "snapshot" in c.log(0).split("epoch")[-1]
    wait_depth(c, range(3), "orders", 6)
    c.kill(2)  # member 2 restarts from the journal the snapshot wrote
    c.start(2)
    c.wait_states({0: "active", 2: "ready"})
    c.kill(0)
    c.kill(1)
    code, desc = c.promote(2)
    assert code == 200, desc
    c.wait(lambda: c.state(2) == "active", "member 2 primary")
    send(c, 2, "orders", ids("m", 11))
    assert rest(c, 2, "orders") == ids("m", 7, start=4)
    assert dropped(c, 2, "orders") == 10
