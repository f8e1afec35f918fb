"""`qstore-drill` with small counts: the real cluster, the real client, the report. The drills run
against a cluster that requires a login (as `make run`'s), one of them against an open one. Each
drill sends the same numbers to a queue without a dedup window and to one with it: nothing
acknowledged may be lost from either, and the window queue may hold no duplicate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIELDS = {"sent", "acknowledged", "received", "lost", "unexpected", "duplicated",
          "recovery_seconds", "queues"}  # fmt: skip
QUEUE_FIELDS = {"dedup_window", "sent", "acknowledged", "received", "lost", "unexpected",
                "duplicated", "redelivered", "resent", "lost_examples"}  # fmt: skip


def drill(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "recovery.drill", *args, "--json", "--timeout", "40"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report) >= FIELDS
    assert set(report["queues"]) == {"drill", "drill-dedup"}
    for q in report["queues"].values():
        assert set(q) >= QUEUE_FIELDS
    return report


def check_queues(r: dict, sent: int, window: int = 100000) -> None:
    """Both queues got the same numbers and lost none acknowledged; the window queue has no
    duplicate; nothing consumed during the faults, so nothing was redelivered; the top-level
    figures are the plain queue's."""
    plain, dedup = r["queues"]["drill"], r["queues"]["drill-dedup"]
    assert plain["dedup_window"] == 0 and dedup["dedup_window"] == window
    for q in (plain, dedup):
        assert q["lost"] == 0 and q["unexpected"] == 0 and q["lost_examples"] == []
        assert q["redelivered"] == 0
        assert q["sent"] >= sent and q["received"] >= q["acknowledged"]
    assert abs(plain["sent"] - dedup["sent"]) <= 1  # the sender stops between the two at most
    assert dedup["duplicated"] == 0
    for k in ("sent", "acknowledged", "received", "lost", "unexpected", "duplicated", "resent"):
        assert r[k] == plain[k], k


@pytest.mark.parametrize("extra", [[], ["--one-at-a-time", "--auth", "no"]])
def test_total_failure_loses_nothing(extra: list[str], tmp_path: Path) -> None:
    root = tmp_path / "drill"
    r = drill("total-failure", "--messages", "400", "--seed", "3", "--data-dir", str(root), *extra)
    assert r["lost"] == 0 and r["unexpected"] == 0
    assert r["acknowledged"] == r["sent"] == 400
    assert r["received"] == 400
    assert r["recovery_seconds"] is not None and r["recovery_seconds"] < 20
    check_queues(r, 400)
    assert r["queues"]["drill-dedup"]["acknowledged"] == r["queues"]["drill-dedup"]["sent"] == 400
    assert r["queues"]["drill-dedup"]["received"] == 400
    # who the brokers let in: the drill's clients as admin, or anonymous in an open cluster
    logs = "".join(p.read_text(errors="replace") for p in root.glob("node*.log"))
    if "--auth" in extra:
        assert not (root / "credentials").exists() and "user=anonymous" in logs
    else:
        assert (root / "credentials").exists()
        assert "user=admin@QPID opened" in logs and "user=anonymous" not in logs


def test_rolling_kills_lose_nothing() -> None:
    # seed 2 kills node0, node1, node2 in turn: the first primary and, as a rule, the next, so
    # the sender re-sends hundreds of messages that the window queue must not enqueue twice
    r = drill("rolling", "--messages", "300", "--kills", "3", "--seed", "2",
              "--dedup-window", "50000")  # fmt: skip
    assert r["lost"] == 0 and r["unexpected"] == 0
    assert r["kills"] == 3 and r["received"] >= 300
    check_queues(r, 300, window=50000)


def test_bad_window_is_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "recovery.drill", "rolling", "--dedup-window", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "--dedup-window must be >= 1" in out.stderr
    assert "Traceback" not in out.stderr
