"""`ocf:qstore:qstored` under real Corosync and Pacemaker: a single-node cluster on this machine
with a globally-unique promotable clone of 3 instances (3 brokers on 3 ports), started in a private
mount namespace so that each run begins with an empty CIB and writes nothing outside its tmp dir
(recovery/pacemaker.py; shared/notes/pacemaker.md records how this was found to work).

It asserts that exactly one instance is promoted, that kill -9 of the primary's process makes a
different, ready instance primary while a qstore.client sender with all three URLs loses nothing
acknowledged, that the killed one returns as a ready backup, and that after a total failure the
instance with the highest journal position becomes primary: the promotion scores and the liveness
probe are what this catches (ocf-tester cannot).

Needs root, unshare, and the packages pacemaker and corosync; skipped otherwise with the reason.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery.drill import ADDRESS, Load, QueueReport, compare
from recovery.localcluster import consecutive_free_ports, drain_marked
from recovery.pacemaker import PacemakerCluster, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


def beyond(pos: tuple[int, int] | None, old: tuple[int, int] | None) -> tuple[int, int] | None:
    return pos if pos is not None and old is not None and pos > old else None


def wait_for(what: str, pred: Callable[[], Any], timeout: float, cluster: PacemakerCluster) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}: {cluster.roles()}"
            )
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[PacemakerCluster]:
    c = PacemakerCluster(tmp_path, consecutive_free_ports(3))
    try:
        yield c
    finally:
        c.stop()


def test_pacemaker_promotes_one_and_fails_over_to_a_ready_backup(cluster: PacemakerCluster) -> None:
    t0 = time.monotonic()
    first = wait_for("exactly one primary", lambda: cluster.promoted(), 30, cluster)
    assert len(first) == 1
    up = time.monotonic() - t0
    primary = first[0]
    backups = [i for i in range(3) if i != primary]
    assert cluster.state(primary) in ("recovering", "active")
    wait_for(
        "two ready backups",
        lambda: all(cluster.state(i) == "ready" for i in backups),
        30,
        cluster,
    )
    assert cluster.promoted() == [primary]

    # kill -9 the primary under load: a different, ready instance becomes primary
    load = Load(cluster.addresses, 200)
    load.more.set()
    load.start()
    wait_for("100 messages sent", lambda: load.sent >= 100 or load.error, 30, cluster)
    t1 = time.monotonic()
    os.kill(cluster.pid(primary), signal.SIGKILL)
    second = wait_for(
        "a different primary",
        lambda: [p for p in cluster.promoted() if p != primary],
        20,
        cluster,
    )
    failover = time.monotonic() - t1
    assert len(second) == 1 and second[0] in backups
    assert cluster.state(second[0]) in ("recovering", "active")
    at_failover = load.sent
    wait_for("100 more sent", lambda: load.sent >= at_failover + 100 or load.error, 30, cluster)
    load.more.clear()
    load.thread.join(60)
    assert not load.thread.is_alive() and load.error is None, load.error
    acked = load.acknowledged()
    load.close()

    # the killed instance returns as a ready backup
    wait_for(
        "the killed instance back as a ready backup",
        lambda: cluster.roles().get(primary) == "Unpromoted" and cluster.state(primary) == "ready",
        30,
        cluster,
    )
    assert cluster.promoted() == second
    report = QueueReport()
    compare(report, load.sent, acked, drain_marked(cluster.addresses, ADDRESS))
    assert report.lost == 0 and report.unexpected == 0, report
    assert report.acknowledged >= at_failover + 100
    print(f"cluster up in {up:.1f}s; fail-over in {failover:.2f}s; {report.acknowledged} acked")

    # total failure, with one journal left behind: Pacemaker unmanaged (maintenance mode) while
    # instance `stale` dies and the primary takes messages that only the other two hold
    primary = second[0]
    stale = 0 if primary != 0 else next(i for i in range(3) if i != primary)
    cluster.maintenance(True)
    wait_for("maintenance mode", cluster.in_maintenance, 20, cluster)
    positions = {stale: cluster.position(stale)}
    os.kill(cluster.pid(stale), signal.SIGKILL)
    send = Load([cluster.addresses[primary]], 50)
    send.start()
    send.thread.join(60)
    assert send.error is None and send.sent == 50, send.error
    send.close()
    for i in range(3):
        if i != stale:  # the journal each comes back with
            positions[i] = wait_for(
                f"instance {i} holding the 50",
                lambda i=i: beyond(cluster.position(i), positions[stale]),
                10,
                cluster,
            )
    killed = {cluster.pid(i) for i in range(3)}
    for i in range(3):
        if i != stale:
            os.kill(cluster.pid(i), signal.SIGKILL)
    cluster.maintenance(False)

    # Pacemaker restarts all three; every one is joining; the best journal wins (crm_mon shows
    # the old primary as promoted until Pacemaker has looked again: wait for a broker to say so)
    def new_primary() -> list[int]:
        return [
            i
            for i in cluster.promoted()
            if cluster.pid(i) not in killed and cluster.state(i) in ("recovering", "active")
        ]

    third = wait_for("a primary after the total failure", new_primary, 60, cluster)
    assert len(third) == 1 and third[0] != stale
    assert positions[third[0]] == max(positions.values()) > positions[stale], positions
    assert cluster.promoted() == third
