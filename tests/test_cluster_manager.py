"""The cluster manager: its decisions as plain functions, and `qstore-cluster up` for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cluster_harness import free_ports
from freezegun import freeze_time

from recovery.localcluster import stop_manager
from tools import cluster_auth
from tools._mgmt import query_status
from tools.cluster_manager import Memory, NodeView, Promote, Restart, decide


def nv(i: int, state: str | None, pos: tuple[int, int] = (0, 0), running: bool = True) -> NodeView:
    return NodeView(i, running, state, pos)


def test_a_primary_means_nothing_to_do() -> None:
    m = Memory()
    assert decide([nv(0, "active"), nv(1, "ready"), nv(2, "ready")], 0.0, m, 10) == []


def test_dead_process_is_restarted_and_the_best_ready_backup_promoted() -> None:
    m = Memory()
    out = decide(
        [nv(0, None, running=False), nv(1, "ready", (2, 10)), nv(2, "ready", (2, 12))], 5.0, m, 10
    )
    assert Restart(0, "its process is not running") in out
    assert [a.index for a in out if isinstance(a, Promote)] == [2]
    # the promote is in flight: the next poll does not promote again
    assert not any(
        isinstance(a, Promote)
        for a in decide([nv(0, "joining"), nv(1, "ready"), nv(2, "ready")], 5.5, m, 10)
    )


def test_catch_up_is_never_promoted_but_restarted() -> None:
    m = Memory()
    out = decide([nv(0, None, running=False), nv(1, "catch-up", (3, 50))], 1.0, m, 10)
    assert not any(isinstance(a, Promote) for a in out)
    assert Restart(1, "catch-up with no primary: restart it to recover from its journal") in out


def test_total_failure_waits_for_everyone_then_promotes_the_highest_position() -> None:
    m = Memory()
    with freeze_time("2026-11-27 10:00:00") as clock:
        now = time.time()
        # node 2 does not answer yet: wait (within recovery-wait)
        nodes = [nv(0, "joining", (3, 90)), nv(1, "joining", (3, 120)), nv(2, None)]
        assert decide(nodes, now, m, 10) == []
        clock.tick(5)
        assert decide(nodes, time.time(), m, 10) == []
        clock.tick(6)  # the wait is over: the best of those present, naming who is missing
        out = decide(nodes, time.time(), m, 10)
    assert len(out) == 1 and isinstance(out[0], Promote) and out[0].index == 1
    assert "[2]" in out[0].why


def test_everyone_present_promotes_at_once_the_newest_journal() -> None:
    m = Memory()
    nodes = [nv(0, "joining", (4, 10)), nv(1, "joining", (3, 500)), nv(2, "joining", (4, 9))]
    out = decide(nodes, 0.0, m, 10)
    assert [(a.index) for a in out if isinstance(a, Promote)] == [0]


def test_two_primaries_are_reported_not_acted_on() -> None:
    out = decide([nv(0, "active"), nv(1, "recovering")], 0.0, Memory(), 10)
    assert len(out) == 1 and "more than one primary" in out[0].text


def _wait(pred, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _states(ports: list[int], login: dict[str, Any]) -> list[str | None]:
    out = []
    for p in ports:
        st = query_status(f"127.0.0.1:{p}", 1.0, **login)
        out.append(None if st is None else st["state"])
    return out


def test_qstore_cluster_up_keeps_one_primary(tmp_path: Path) -> None:
    base = free_ports(1)[0]
    # three consecutive free ports are likely from a fresh one; retry once if not
    ports = [base, base + 1, base + 2]
    log = open(tmp_path / "manager.log", "wb")  # noqa: SIM115
    mgr = subprocess.Popen(
        [sys.executable, "-m", "tools.qstore_cluster", "up", "--data-dir", str(tmp_path / "d"),
         "--base-port", str(base), "--heartbeat", "0.5", "--poll", "0.1", "--recovery-wait", "5"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    login: dict[str, Any] = {}
    try:
        # authentication is on: the manager makes the HA user's credentials first thing
        _wait(lambda: (tmp_path / "d" / "credentials").exists(), "the credentials", 10)
        login = cluster_auth.load(tmp_path / "d").ha_login()
        _wait(lambda: sorted(map(str, _states(ports, login))) == ["active", "ready", "ready"],
              "a cluster")  # fmt: skip
        primary = _states(ports, login).index("active")
        out = subprocess.run(
            [sys.executable, "-m", "tools.qstore_cluster", "status", "--data-dir",
             str(tmp_path / "d")], capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0 and out.stdout.count("ready") == 2, out.stdout
        # kill -9 the primary: another is promoted and the dead one comes back as a backup
        info = json.loads((tmp_path / "d" / "cluster.json").read_text())
        pid = int(info["brokers"][primary]["pid"])  # this cluster's, not another test's node
        os.kill(pid, signal.SIGKILL)
        _wait(
            lambda: (
                (st := _states(ports, login)).count("active") == 1
                and st[primary] == "ready"
                and st.count("ready") == 2
            ),
            "a new primary and the old one back as a backup",
        )
    finally:
        stop_manager(mgr, tmp_path / "d")  # and any broker it left running
        log.close()
    text = (tmp_path / "manager.log").read_text()
    assert "promoting" in text and "stopping every broker" in text
    assert mgr.returncode == 0
    assert all(s is None for s in _states(ports, login))


def test_a_silent_primary_whose_process_runs_is_waited_for_then_restarted_never_doubled() -> None:
    m = Memory()
    decide([nv(0, "active"), nv(1, "ready"), nv(2, "ready")], 0.0, m, 10, hung_after=4)
    busy = [nv(0, None), nv(1, "ready", (1, 9)), nv(2, "ready", (1, 9))]
    for t in (1.0, 2.0, 4.5):  # busy, not dead: promoting a backup now would make two
        out = decide(busy, t, m, 10, hung_after=4)
        assert not any(isinstance(a, Promote) for a in out)
    assert any(isinstance(a, Restart) and a.index == 0 for a in decide(busy, 5.5, m, 10, 4))
    # once its process is gone, the best ready backup is promoted
    out = decide([nv(0, None, running=False), *busy[1:]], 6.0, m, 10, hung_after=4)
    assert [a.index for a in out if isinstance(a, Promote)] == [1]


def test_a_promote_whose_target_died_before_showing_is_chosen_again() -> None:
    m = Memory()
    out = decide([nv(0, None, running=False), nv(1, "ready", (1, 5)), nv(2, "ready", (1, 4))],
                 0.0, m, 10)  # fmt: skip
    assert [a.index for a in out if isinstance(a, Promote)] == [1]
    # node 1 died before it showed as primary; everyone is back joining
    joining = [nv(0, "joining", (1, 3)), nv(1, None, running=False), nv(2, "joining", (2, 9))]
    assert not any(isinstance(a, Promote) for a in decide(joining, 0.5, m, 10))
    joining[1] = nv(1, "joining", (2, 9))
    out = decide(joining, 1.0, m, 10)
    assert [a.index for a in out if isinstance(a, Promote)] == [1]
