"""qstore-ha as a cluster manager and an operator run it: subprocesses against real qstored
processes (a 3-broker cluster from cluster_harness, a standalone broker from broker_harness)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster_harness import Cluster, free_ports

from tools import qstore_ha

ROOT = Path(__file__).resolve().parent.parent
TOOL_TIMEOUT = 30.0
SCRIPT = Path(sys.executable).parent / "qstore-ha"


def command(*args: str) -> list[str]:
    """The console script when installed (`pip install -e .`), else the module."""
    if SCRIPT.exists():
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "tools.qstore_ha", *args]


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def ha(*args: str) -> Run:
    """The tool's whole path (argument parsing, connection, output, exit status) run in this
    process: a process start per call would cost more than the call itself."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            qstore_ha.main(list(args))
        except SystemExit as exc:
            code = exc.code
    assert isinstance(code, int), code
    return Run(list(args), code, out.getvalue(), err.getvalue())


def ha_process(*args: str) -> Run:
    """The installed command as a user runs it."""
    p = subprocess.run(
        command(*args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    return Run(list(args), p.returncode, p.stdout, p.stderr)


def ha_many(*runs: Sequence[str]) -> list[Run]:
    return [ha(*args) for args in runs]


def clean(p: Run) -> None:
    assert "Traceback" not in p.stderr, p.stderr


def yes(p: Run) -> str:
    clean(p)
    assert p.returncode == 0, (p.args, p.returncode, p.stdout, p.stderr)
    assert p.stderr == "", p.stderr
    return p.stdout


def silent_no(p: Run) -> None:
    clean(p)
    assert p.returncode == 1, (p.args, p.returncode, p.stdout, p.stderr)
    assert p.stdout == "" and p.stderr == "", (p.stdout, p.stderr)


def one_line_failure(p: Run, text: str) -> None:
    clean(p)
    assert p.returncode == 1, (p.args, p.returncode, p.stdout, p.stderr)
    assert p.stdout == "", p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qstore-ha: "), p.stderr
    assert text in lines[0], lines[0]


def test_cluster_status_and_promote(cluster) -> None:
    c: Cluster = cluster(3)
    a = [c.address(i) for i in range(3)]

    # status on each; options before and after the verb; --expect / --is-primary exit codes.
    r = ha_many(
        ("-b", a[0], "status"),
        ("status", "-b", a[1]),
        ("status", "--broker", a[2], "--timeout", "5"),
        ("-b", a[0], "status", "--expect=primary"),
        ("-b", a[1], "status", "--expect=primary"),
        ("-b", a[0], "status", "--expect=backup"),
        ("-b", a[2], "status", "--expect", "backup"),
        ("-b", a[0], "status", "--expect=active"),
        ("-b", a[1], "status", "--expect=ready"),
        ("-b", a[1], "status", "--expect=catchup"),
        ("-b", a[1], "status", "--expect=catch-up"),
        ("-b", a[0], "status", "--is-primary"),
        ("-b", a[2], "status", "--is-primary"),
        ("-b", a[1], "ping"),
        ("-b", a[1], "ready"),
        ("-b", a[0], "ready"),
    )
    assert [yes(p) for p in r[:3]] == ["active\n", "ready\n", "ready\n"]
    for p in (r[3], r[6], r[7], r[8], r[11], r[13], r[14]):
        assert yes(p) == ""
    for p in (r[4], r[5], r[9], r[10], r[12], r[15]):
        silent_no(p)

    # --all asks each broker of the brokers URL, from whichever broker is given.
    r = ha_many(
        ("-b", a[2], "status", "--all"),
        ("-b", a[0], "status", "--all", "--json"),
        ("-b", a[1], "status", "--json"),
        ("-b", a[0], "query"),
        ("-b", a[0], "query", "--all", "--json"),
    )
    lines = yes(r[0]).splitlines()
    assert lines == [f"{a[0]} active", f"{a[1]} ready", f"{a[2]} ready"]
    rows = json.loads(yes(r[1]))
    assert [(x["address"], x["state"]) for x in rows] == [
        (a[0], "active"),
        (a[1], "ready"),
        (a[2], "ready"),
    ]
    st = json.loads(yes(r[2]))
    assert st["state"] == "ready"
    assert set(st) >= {"name", "state", "epoch", "position", "brokers_url", "members"}
    assert st["brokers_url"] == c.url
    assert len(st["position"]) == 2 and st["position"][0] == st["epoch"] >= 1
    query = [(line[:20].strip(), line[21:]) for line in yes(r[3]).splitlines()]
    fields = dict(query)
    assert fields["Status:"] == "active" and fields["Brokers URL:"] == c.url
    members = [v.split()[-1] for k, v in query if k in ("Members:", "")]
    assert members == ["active", "ready", "ready"]
    assert {x["state"] for x in json.loads(yes(r[4]))} == {"active", "ready"}

    # promote without --cluster-manager: the seed's warning, exit 1, nothing changes.
    p = ha_process("-b", a[1], "promote")
    one_line_failure(p, "promote is a cluster manager only command")
    assert "--cluster-manager" in p.stderr
    # promote of the active primary is refused by the broker, with its reason.
    one_line_failure(ha("--cluster-manager", "-b", a[0], "promote"), "promote refused")
    assert [c.state(i) for i in range(3)] == ["active", "ready", "ready"]

    # The primary dies: its address is reported as unreachable in --all, and a cluster manager
    # promotes a ready backup, which becomes active.
    c.kill(0)
    lines = yes(ha("-b", a[1], "status", "--all")).splitlines()
    assert lines[0].startswith(f"{a[0]} cannot connect to {a[0]}"), lines
    assert lines[1:] == [f"{a[1]} ready", f"{a[2]} ready"]
    dead, *alive = json.loads(yes(ha("-b", a[2], "status", "--all", "--json")))
    assert dead["address"] == a[0] and "cannot connect" in dead["error"] and "state" not in dead
    assert [x["state"] for x in alive] == ["ready", "ready"]
    assert yes(ha_process("-b", a[1], "promote", "--cluster-manager")) == ""
    c.wait_states({1: "active", 2: "ready"})
    assert yes(ha_process("-b", a[1], "status", "--expect=primary")) == ""
    r = ha_many(("-b", a[2], "status", "--expect=backup"), ("-b", a[1], "status"))
    assert yes(r[0]) == "" and yes(r[1]) == "active\n"


def test_standalone_broker(brokers) -> None:
    url = brokers.start().url
    r = ha_many(
        ("-b", url, "status"),
        ("-b", url, "status", "--expect=standalone"),
        ("-b", url, "status", "--expect=primary"),
        ("-b", url, "status", "--expect=backup"),
        ("-b", url, "status", "--all"),
        ("-b", url, "ping"),
        ("-b", url, "query", "--json"),
    )
    assert yes(r[0]) == "standalone\n"
    assert yes(r[1]) == ""
    silent_no(r[2])
    silent_no(r[3])
    assert yes(r[4]) == f"{url} standalone\n"
    assert yes(r[5]) == ""
    assert json.loads(yes(r[6]))["state"] == "standalone"
    one_line_failure(
        ha("-b", url, "--cluster-manager", "promote"), "not a cluster broker (--ha-cluster no)"
    )


def test_unreachable_broker_and_usage() -> None:
    (port,) = free_ports(1)  # nothing listens there
    where = f"127.0.0.1:{port}"
    r = ha_many(
        ("-b", where, "status"),
        ("-b", where, "ping"),
        ("-b", where, "query", "--all"),
        ("-b", where, "status", "--expect=primary"),
        ("-b", where, "status", "--expect=nonsense"),
        ("status", "--expect=primary", "--json"),
        ("-b", "host:notaport", "status"),
        ("--help",),
        ("--cluster-manager", "--help"),
    )
    for p in [*r[:3], ha_process("-b", where, "status")]:
        one_line_failure(p, f"cannot connect to {where}")
    # --expect prints nothing on stdout; why it could not ask goes to stderr, exit 1.
    one_line_failure(r[3], f"cannot connect to {where}")
    for p in r[4:7]:
        clean(p)
        assert p.returncode == 2 and p.stdout == "", (p.args, p.stderr)
    assert "nonsense" in r[4].stderr.splitlines()[-1]
    assert "--json" in r[5].stderr.splitlines()[-1]
    assert "notaport" in r[6].stderr.splitlines()[-1]
    user_help, manager_help = yes(r[7]), yes(r[8])
    assert "status" in user_help and "promote" not in user_help
    assert "promote" in manager_help and "[cluster manager only]" in manager_help


def stat_state(address: str) -> str:
    """The state `qstore-stat -b` shows for a broker, run as a user runs it (`--ha-admin`: a
    backup lets only HA tools in)."""
    args = ["--ha-admin", "--broker", address, "-b", "--json"]
    p = subprocess.run(
        [sys.executable, "-m", "tools.qstore_stat", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=TOOL_TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert p.returncode == 0 and "Traceback" not in p.stderr, (p.returncode, p.stderr)
    [row] = json.loads(p.stdout)
    return str(row["state"])


def test_qstore_stat_and_qstore_ha_agree_on_every_broker(cluster) -> None:
    """`qstore-stat -b` reads the HA state live from the role (it showed `standalone` on every
    cluster broker: a copy taken before HA started), through a fail-over too."""
    c: Cluster = cluster(3)
    a = [c.address(i) for i in range(3)]

    def both(i: int) -> tuple[str, str]:
        return stat_state(a[i]), yes(ha("-b", a[i], "status")).strip()

    assert [both(i) for i in range(3)] == [("active",) * 2, ("ready",) * 2, ("ready",) * 2]
    c.kill(0)
    assert yes(ha_process("-b", a[1], "promote", "--cluster-manager")) == ""
    c.wait_states({1: "active", 2: "ready"})
    assert [both(i) for i in (1, 2)] == [("active",) * 2, ("ready",) * 2]
