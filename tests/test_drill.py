"""`qstore-drill` with small counts: the real cluster, the real client, the report. The drills run
against a cluster that requires a login (as `make run`'s), one of them against an open one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIELDS = {"sent", "acknowledged", "received", "lost", "unexpected", "duplicated",
          "recovery_seconds"}  # fmt: skip


def drill(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "recovery.drill", *args, "--json", "--timeout", "40"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report) >= FIELDS
    return report


@pytest.mark.parametrize("extra", [[], ["--one-at-a-time", "--auth", "no"]])
def test_total_failure_loses_nothing(extra: list[str], tmp_path: Path) -> None:
    root = tmp_path / "drill"
    r = drill("total-failure", "--messages", "400", "--seed", "3", "--data-dir", str(root), *extra)
    assert r["lost"] == 0 and r["unexpected"] == 0
    assert r["acknowledged"] == r["sent"] == 400
    assert r["received"] == 400
    assert r["recovery_seconds"] is not None and r["recovery_seconds"] < 20
    # who the brokers let in: the drill's clients as admin, or anonymous in an open cluster
    logs = "".join(p.read_text(errors="replace") for p in root.glob("node*.log"))
    if "--auth" in extra:
        assert not (root / "credentials").exists() and "user=anonymous" in logs
    else:
        assert (root / "credentials").exists()
        assert "user=admin@QPID opened" in logs and "user=anonymous" not in logs


def test_rolling_kills_lose_nothing() -> None:
    r = drill("rolling", "--messages", "300", "--kills", "3", "--seed", "11")
    assert r["lost"] == 0 and r["unexpected"] == 0
    assert r["kills"] == 3 and r["received"] >= 300
