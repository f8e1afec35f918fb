"""How `qstore-cluster up` watches its brokers: cheaply while idle, at once when one dies.

The manager used to poll every broker's status over a new connection several times a second (a
third of a core, idle). It now sleeps on its children's pidfds (child_watch.py), keeps one
management connection per broker (status_link.py) and polls slowly once the cluster is steady
(cluster_manager.next_poll). These tests hold it to that with real processes: its idle CPU from
/proc, a kill -9 of the primary handled although the steady poll is far away, a kept connection
that outlives its broker's restart, and a dead broker's connection let go of without a timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from broker_harness import Brokers

from recovery.localcluster import LocalCluster, consecutive_free_ports
from tools.child_watch import ChildWatch
from tools.cluster_manager import Memory, NodeView, next_poll, steady
from tools.status_link import StatusLink

T = 60.0  # bound on a cluster's start on a busy 2-core machine
TICK = os.sysconf("SC_CLK_TCK")


def nv(i: int, state: str | None, running: bool = True) -> NodeView:
    return NodeView(i, running, state)


# -- the cadence, a plain function ------------------------------------------------------------


def test_only_an_active_primary_with_ready_backups_and_nothing_pending_is_steady() -> None:
    whole = [nv(0, "active"), nv(1, "ready"), nv(2, "ready")]
    assert steady(whole, Memory())
    assert next_poll(whole, Memory(), 0.1, 1.0) == 1.0
    unsettled = [
        [nv(0, "recovering"), nv(1, "ready"), nv(2, "ready")],
        [nv(0, "active"), nv(1, "catch-up"), nv(2, "ready")],
        [nv(0, "active"), nv(1, None), nv(2, "ready")],
        [nv(0, "active"), nv(1, "ready", running=False), nv(2, "ready")],
        [nv(0, None), nv(1, "ready"), nv(2, "ready")],
        [nv(0, "active"), nv(1, "active"), nv(2, "ready")],
        [nv(0, "joining"), nv(1, "joining"), nv(2, "joining")],
    ]
    for views in unsettled:
        assert not steady(views, Memory()), views
        assert next_poll(views, Memory(), 0.1, 1.0) == 0.1
    promoting = Memory(promoting=1)
    assert not steady(whole, promoting)
    # a steady poll shorter than --poll never speeds polling up
    assert next_poll(whole, Memory(), 0.5, 0.2) == 0.5


# -- ChildWatch on real processes -------------------------------------------------------------


@pytest.fixture
def watch() -> Iterator[ChildWatch]:
    w = ChildWatch()
    try:
        yield w
    finally:
        w.close()


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_child_exit_wakes_the_watch_at_once(watch: ChildWatch) -> None:
    procs = [sleeper(), sleeper()]
    try:
        for p in procs:
            watch.watch(p)
        assert watch.wait(0.05) == []  # both alive: the timeout passes
        procs[1].kill()
        t0 = time.monotonic()
        assert watch.wait(30) == [procs[1].pid]
        assert time.monotonic() - t0 < 5  # woken by the exit, not by the 30 s timeout
        procs[1].wait(5)
        assert watch.wait(0.05) == []  # an exited child is forgotten, not reported forever
    finally:
        for p in procs:
            p.kill()
            p.wait(5)


def test_a_signal_wakes_the_watch(watch: ChildWatch) -> None:
    got: list[int] = []

    def on_usr1(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)

    old = signal.signal(signal.SIGUSR1, on_usr1)
    try:
        killer = subprocess.Popen(
            [sys.executable, "-c", f"import os, signal, time; time.sleep(0.2); "
             f"os.kill({os.getpid()}, signal.SIGUSR1)"],
        )  # fmt: skip
        t0 = time.monotonic()
        assert watch.wait(30) == []
        assert time.monotonic() - t0 < 10 and got == [signal.SIGUSR1]
        killer.wait(5)
    finally:
        signal.signal(signal.SIGUSR1, old)


# -- StatusLink on a real broker --------------------------------------------------------------


def test_a_kept_status_connection_survives_a_restart_and_a_dead_broker_costs_no_timeout(
    brokers: Brokers, tmp_path: Path
) -> None:
    b = brokers.start(data_dir=tmp_path / "d")
    link = StatusLink(b.url, {})
    try:
        first = link.status(timeout=5)
        assert first is not None and first["state"] == "standalone"
        b.kill()
        t0 = time.monotonic()
        link.drop()  # what the manager does once the process exited: no wait for a close frame
        assert time.monotonic() - t0 < 2.5
        t0 = time.monotonic()
        assert link.status(timeout=5) is None  # refused at once
        assert time.monotonic() - t0 < 2.5
        b = brokers.start(data_dir=b.data_dir, port=b.port)
        assert link.status(timeout=5) is not None
        b.kill()
        b = brokers.start(data_dir=b.data_dir, port=b.port)
        # the kept connection is to the process before: the link reconnects in the same call
        again = link.status(timeout=5)
        assert again is not None and again["state"] == "standalone"
        # a stopped broker (TCP alive, AMQP silent): one timeout, then let go (proton's own
        # close would wait on its socket for ever)
        os.kill(b.pid, signal.SIGSTOP)
        found: list[object] = []
        asker = threading.Thread(target=lambda: found.append(link.status(timeout=1)), daemon=True)
        asker.start()
        asker.join(15)
        assert not asker.is_alive(), "a status request on a stopped broker never returned"
        assert found == [None]
    finally:
        link.drop()


# -- the manager for real ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


@pytest.fixture
def lazy_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """An open cluster whose steady poll is far away: whatever it does promptly once whole, it
    does because a process exited."""
    c = LocalCluster(
        tmp_path, consecutive_free_ports(3), heartbeat=0.5, poll=0.1, steady_poll=30, auth=False
    )
    try:
        c.whole(T)
        yield c
    finally:
        c.stop()


def test_an_idle_manager_uses_little_cpu_and_sees_a_kill_at_once(
    lazy_cluster: LocalCluster,
) -> None:
    c = lazy_cluster
    time.sleep(0.5)  # the last settling poll
    before, t0 = cpu_seconds(c.proc.pid), time.monotonic()
    time.sleep(5)
    used = (cpu_seconds(c.proc.pid) - before) / (time.monotonic() - t0)
    assert used < 0.05, f"idle manager used {used:.1%} of a core"  # it used ~35% polling
    primary = c.states().index("active")
    c.kill(primary)
    t_kill = time.monotonic()
    t_new = c.wait(
        lambda s: s[primary] != "active" and s.count("active") + s.count("recovering") == 1,
        "a new primary",
        20,
    )
    assert t_new - t_kill < 5, "the kill was noticed by a poll, not by the process's exit"
    c.whole(T)
    assert "promoting" in c.manager_log()


def test_a_stopped_primary_is_restarted_and_a_backup_promoted(tmp_path: Path) -> None:
    """SIGSTOP: the process runs but never answers; only the polls can tell, and they must not
    hang on it."""
    c = LocalCluster(tmp_path, consecutive_free_ports(3), heartbeat=0.5, auth=False)
    try:
        c.whole(T)
        primary = c.states().index("active")
        pid = c.pids()[primary]
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        c.wait(lambda s: s.count("active") == 1 and s[primary] != "active", "a new primary", 30)
        c.whole(T)  # the stopped one was killed and came back as a backup
        assert "presumed hung" in c.manager_log()
        assert c.pids()[primary] != pid
    finally:
        c.stop()
