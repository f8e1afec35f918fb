"""A 3-broker cluster end to end: promotion, replication, fail-over."""

from cluster_harness import browse
from proton import Message


def test_replicate_then_fail_over(cluster):
    c = cluster(3)
    conn = c.client(0)
    s = conn.create_sender("q1")
    for i in range(20):
        s.send(Message(body=f"m{i}", durable=True))
    r = conn.create_receiver("q1")
    for _ in range(15):
        r.receive(timeout=5)
        r.accept()
    conn.close()
    for i in (1, 2):
        a = c.admin(i)
        c.wait(lambda a=a: len(browse(a, "q1")) == 5, f"backup {i} holds the last 5")
        a.close()
    c.kill(0)
    code, desc = c.promote(1)
    assert code == 200, desc
    c.wait_states({1: "active", 2: "ready"})
    conn = c.client(1)
    r = conn.create_receiver("q1")
    got = [r.receive(timeout=5).body for _ in range(5)]
    assert got == [f"m{i}" for i in range(15, 20)]
    conn.close()
