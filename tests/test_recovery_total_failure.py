"""Total cluster failure: the broker with the newest journal is the one promoted, and nothing
acknowledged is lost (the seed's "first promoted recovers" rule would lose the tail here)."""

from __future__ import annotations

import subprocess
import sys

from broker_clients import drain, receive_n
from proton import Message


def send(c, i: int, queue: str, bodies: list[str]) -> None:
    conn = c.client(i)
    s = conn.create_sender(queue)
    for b in bodies:
        s.send(Message(body=b, durable=True))  # BlockingSender.send waits for `accepted`
    conn.close()


def consume(c, i: int, queue: str, expected: int) -> list[str]:
    """`expected` messages from `queue` (each within 10 s, else the test fails saying how many
    came), then the broker's word, a drain, that there is nothing beyond them."""
    conn = c.client(i)
    try:
        r = conn.create_receiver(queue)
        out = [m.body for m in receive_n(r, expected)]
        assert [m.body for m in drain(r)] == []  # nothing beyond them
    finally:
        conn.close()
    return out


def recover(c, via: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.qstore_ha", "--cluster-manager", "recover",
         "-b", c.address(via)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_backup_with_the_newer_journal_is_promoted_and_nothing_is_lost(cluster):
    c = cluster(3)
    send(c, 0, "orders", [f"a{i}" for i in range(10)])
    c.kill(1)  # node 1 stops following: its journal is now the older one
    c.wait_states({0: "active", 2: "ready"})
    send(c, 0, "orders", [f"b{i}" for i in range(10)])  # acknowledged by nodes 0 and 2 only
    c.kill(0)
    c.kill(2)
    for i in range(3):  # everyone comes back joining, each with its own journal
        c.start(i)
    c.wait_states({0: "joining", 1: "joining", 2: "joining"})
    pos = {i: tuple(c.status(i)["position"]) for i in range(3)}
    assert pos[1] < pos[0] and pos[1] < pos[2]
    out = recover(c, via=1)  # asked through the stale node: it must not pick itself
    assert out.returncode == 0, out.stderr
    # the newest journal; on a tie the first of the brokers URL (the rule's tie-break)
    promoted = max((0, 2), key=lambda i: (pos[i], -i))
    assert out.stdout.splitlines()[0].startswith(f"promoting {c.address(promoted)} "), out.stdout
    others = {i: "ready" for i in range(3) if i != promoted}
    c.wait_states({promoted: "active", **others})
    got = consume(c, promoted, "orders", 20)
    assert sorted(set(got)) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)])
    # the stale node followed the new primary and holds what it holds (now nothing: drained);
    # the dequeues reach it after the consumer's acknowledgements: wait for them
    c.wait(
        lambda: c.status(1)["position"] == c.status(promoted)["position"],
        "the stale node at the new primary's position",
    )
    assert c.status(1)["state"] == "ready"


def test_recover_is_a_no_op_when_a_primary_exists(cluster):
    c = cluster(3)
    out = recover(c, via=2)
    assert out.returncode == 0 and "already primary" in out.stdout


def test_recover_needs_the_cluster_manager_flag(cluster):
    c = cluster(2)
    out = subprocess.run(
        [sys.executable, "-m", "tools.qstore_ha", "recover", "-b", c.address(0)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 1 and "cluster manager only" in out.stderr
