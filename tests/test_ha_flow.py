"""Flow control in a cluster: the primary holds its producers back, its backups never hold back
replication (#11).

The backup runs with far smaller limits than the primary (`--max-memory 16K`,
`--default-queue-limit 2K`): replicated messages go into its queues whatever its own limits and
memory alarm say, so it keeps the primary's copy while the primary's queue is flow-stopped, and
drains with it. One cluster, two members: these tests are slow.
"""

from __future__ import annotations

import time
from typing import Any

from cluster_harness import Cluster
from flow_clients import Producer, take
from proton import Delivery
from proton.utils import BlockingConnection


def read(c: Cluster, i: int, *what: str) -> Any:
    m = c.management(i)
    try:
        return m.call("READ", *what)
    finally:
        m.close()


def test_backups_keep_replicating_while_the_primary_holds_a_producer(cluster: Any) -> None:
    c = cluster(2)
    c.kill(1)
    c.start(1, extra=["--max-memory", "16K", "--default-queue-limit", "2K"])
    c.wait_states({0: "active", 1: "ready"})
    m = c.management(0)
    try:
        m.call("CREATE", "queue", "q", {"durable": True, "arguments": {"qpid.max_count": 200}})
        m.call("CREATE", "queue", "big", {"durable": True})  # limited by the default only
    finally:
        m.close()
    big = Producer(c.address(0), "big", pad=100)
    try:  # 5 KB: past the backup's 2K default limit, far under the primary's
        assert big.send_on_credit(50) == 50 and big.states() == {Delivery.ACCEPTED}
    finally:
        big.close()
    c.wait(lambda: read(c, 1, "queue", "big")["depth"] == 50, "the backup to hold all of big")
    p = Producer(c.address(0), "q", pad=100)
    rc = BlockingConnection(c.address(0), timeout=10)

    def stopped() -> bool:
        return bool(read(c, 0, "queue", "q")["flowStopped"])

    try:
        n = p.send_on_credit(400, held=stopped)
        assert 160 < n <= 200, n
        # acknowledged only once the backup has them too: a backup that refused or stalled
        # replication would leave these outcomes hanging
        assert p.states() == {Delivery.ACCEPTED}
        assert read(c, 0, "queue", "q")["flowStopped"] is True
        c.wait(lambda: read(c, 1, "queue", "q")["depth"] == n, "the backup to hold all of them")
        backup = read(c, 1, "broker")["statistics"]
        assert backup["memory_alarm"] is True and backup["bytes"] > 16 * 1024  # took them anyway
        assert read(c, 1, "queue", "q")["flowStopped"] is True  # follows: held at once if promoted

        r = rc.create_receiver("q")
        got = take(r, n - 139)  # below the resume mark (140)
        assert p.credited_within(10)
        deadline = time.monotonic() + 60
        while len(got) < 400:
            assert time.monotonic() < deadline, (p.sent, len(got))
            if p.send_on_credit(400, held=stopped) == 400:
                p.states()
            got += take(r, read(c, 0, "queue", "q")["depth"])
        assert got == [f"m{i}" for i in range(400)]
        assert p.states() == {Delivery.ACCEPTED}
        take(rc.create_receiver("big"), 50)
        c.wait(
            lambda: read(c, 1, "queue", "q")["depth"] == read(c, 1, "queue", "big")["depth"] == 0,
            "the backup to drain with the primary",
        )
        assert read(c, 1, "broker")["statistics"]["memory_alarm"] is False
        log = c.log(1)
        assert "replica apply" not in log and "memory alarm cleared" in log
        assert "flow-stopped" in c.log(0) and "flow resumed" in c.log(0)
    finally:
        rc.close()
        p.close()
