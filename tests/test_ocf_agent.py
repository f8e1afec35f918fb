"""The OCF agent `ocf:qstore:qstored`, run as Pacemaker runs it: the installed executable with the
action as argv[1] and OCF_RESKEY_* in its environment, against real qstored processes on ports the
OS chose, in tmp dirs. What ocf-tester does not check: monitor 8 after promote, 7 after kill -9,
9 for a SIGSTOPped primary, the promotion scores; and ocf-tester itself where it is installed.

Every broker an agent started is killed by its pid at teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from proton import Message
from proton.utils import BlockingConnection

from recovery.localcluster import consecutive_free_ports, free_ports
from tools import cluster_auth
from tools._mgmt import query_status
from tools.ocf.decide import SCORE_BEST_JOINING, SCORE_PRIMARY, SCORE_READY, SCORE_UNREADY
from tools.qstore_ocf import install

OCF_TESTER = Path("/usr/sbin/ocf-tester")
INSTALL_HINT = "apt-get install -y resource-agents (Debian; as root)"
AGENT_TIMEOUT = 60.0
# (no --ha-replicate: the agent's default, all, is what these brokers run with)
FAST = "--link-maintenance-interval 0.1 --link-heartbeat-interval 2 --ha-backup-timeout 3"


@dataclass
class Agent:
    """The installed agent and the brokers it started (for the teardown)."""

    path: Path
    params: dict[str, str]
    data_dirs: set[Path] = field(default_factory=set)

    def run(
        self, action: str, clone: int = 0, probe: bool = False, **params: str
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OCF_", "__OCF"))}
        env |= {
            "OCF_ROOT": "/usr/lib/ocf",
            "OCF_RESOURCE_INSTANCE": f"qstored:{clone}",
            "OCF_RESKEY_CRM_meta_clone": str(clone),
            "OCF_RESKEY_CRM_meta_timeout": "30000",
            "OCF_RESKEY_CRM_meta_interval": "0" if probe or action != "monitor" else "2000",
        }
        all_params = self.params | params
        env |= {f"OCF_RESKEY_{k}": v for k, v in all_params.items()}
        self.data_dirs.add(self.data_dir(clone, all_params))
        return subprocess.run(
            [str(self.path), action],
            env=env,
            capture_output=True,
            text=True,
            timeout=AGENT_TIMEOUT,
            check=False,
        )

    def rc(self, action: str, clone: int = 0, **params: str) -> int:
        return self.run(action, clone, **params).returncode

    def data_dir(self, clone: int = 0, params: dict[str, str] | None = None) -> Path:
        p = params or self.params
        base = Path(p.get("data_dir", "/nonexistent"))
        return base / f"inst{clone}" if p.get("per_clone") == "yes" else base

    def pid(self, clone: int = 0) -> int:
        return int((self.data_dir(clone) / "ocf-state" / "pid").read_text())

    def score(self, clone: int = 0) -> int | None:
        path = self.data_dir(clone) / "ocf-state" / "score"
        return int(path.read_text()) if path.exists() else None

    def kill_all(self) -> None:
        for d in self.data_dirs:
            with contextlib.suppress(OSError, ValueError):
                pid = int((d / "ocf-state" / "pid").read_text())
                if os.fsencode(str(d)) in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def agent_dir() -> Iterator[Path]:
    """A provider dir everyone may read: ocf-tester runs meta-data as user nobody (pytest's own
    tmp dirs are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="qstore-ocf-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_agent(agent_dir: Path) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(**params: str) -> Agent:
        a = Agent(install(agent_dir / "qstore", sys.executable), dict(params))
        agents.append(a)
        return a

    try:
        yield make
    finally:
        for a in agents:
            a.kill_all()


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def test_installed_agent_is_executable_with_the_interpreter_as_default(agent_dir: Path) -> None:
    path = install(agent_dir / "qstore", sys.executable)
    assert path == agent_dir / "qstore" / "qstored"
    assert path.stat().st_mode & 0o777 == 0o755
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n") and f"OCF_RESKEY_python:={sys.executable}" in text


def test_qstore_ocf_install_command(agent_dir: Path) -> None:
    target = agent_dir / "prov"
    out = subprocess.run(
        [sys.executable, "-m", "tools.qstore_ocf", "install", "--provider-dir", str(target)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "ocf:qstore:qstored" in out.stdout
    assert os.access(target / "qstored", os.X_OK)


def test_meta_data_is_ocf_1_1_xml(make_agent: Callable[..., Agent]) -> None:
    out = make_agent().run("meta-data")
    assert out.returncode == 0, out.stderr
    root = ET.fromstring(out.stdout)
    assert root.tag == "resource-agent" and root.get("name") == "qstored"
    assert root.findtext("version") == "1.1"
    params = {p.get("name"): p for p in root.iter("parameter")}
    for name in ("python", "binary", "data_dir", "interface", "port", "ha_brokers_url"):
        assert name in params
    for name in ("ha_username", "ha_password_file", "options", "per_clone"):
        assert name in params
    assert params["data_dir"].get("required") == "1"
    default_python = params["python"].find("content")
    assert default_python is not None and default_python.get("default") == sys.executable
    actions = {(a.get("name"), a.get("role")) for a in root.iter("action")}
    for name in ("start", "stop", "promote", "demote", "notify", "validate-all", "meta-data"):
        assert any(n == name for n, _ in actions)
    assert ("monitor", "Promoted") in actions and ("monitor", "Unpromoted") in actions


def test_validate_all_reports_bad_parameters(
    make_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    secret = tmp_path / "ha-password"
    secret.write_text("s3cret\n")
    good = {
        "data_dir": str(tmp_path / "d"),
        "ha_brokers_url": "amqp:127.0.0.1:5672",
        "ha_password_file": str(secret),
    }
    agent = make_agent(**good)
    assert agent.rc("validate-all") == 0
    bad = [
        ({"data_dir": ""}, 6, "data_dir is required"),
        ({"data_dir": "relative/dir"}, 6, "absolute path"),
        ({"ha_brokers_url": ""}, 6, "ha_brokers_url is required"),
        ({"ha_brokers_url": "amqp:host:port:x"}, 6, "ha_brokers_url"),
        ({"port": "70000"}, 6, "port="),
        ({"port": "five"}, 6, "port="),
        ({"per_clone": "maybe"}, 6, "per_clone"),
        ({"ha_replicate": "some"}, 6, "ha_replicate="),
        ({"status_timeout": "-1"}, 6, "status_timeout"),
        ({"options": "--name 'unclosed"}, 6, "options"),
        ({"ha_password_file": str(tmp_path / "missing")}, 6, "no such file"),
        ({"python": str(tmp_path / "no-python")}, 5, "not an executable"),
        ({"binary": "qstored"}, 6, "absolute path"),
        ({"binary": str(tmp_path / "no-qstored")}, 5, "no such executable"),
    ]
    for params, rc, words in bad:
        out = agent.run("validate-all", **params)
        assert out.returncode == rc, (params, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (params, out.stderr)
        assert "s3cret" not in out.stderr
    assert agent.rc("start", data_dir="") == 6  # every action checks, not only validate-all


def test_one_broker_lifecycle_with_the_ha_identity(
    make_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    creds = cluster_auth.ensure(tmp_path, address).credentials
    agent = make_agent(
        data_dir=str(tmp_path / "broker"),
        interface="127.0.0.1",
        port=str(port),
        ha_brokers_url=f"amqp:{address}",
        ha_username=creds.ha_user,
        ha_password_file=str(tmp_path / cluster_auth.HA_PASSWORD),
        options=f"--auth yes --sasl-db {tmp_path / cluster_auth.SASL_DB} {FAST}",
        status_timeout="1",
    )
    assert agent.rc("monitor", probe=True) == 7
    assert agent.rc("monitor") == 7
    assert agent.rc("stop") == 0  # stop of a stopped resource

    t0 = time.monotonic()
    out = agent.run("start")
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 15
    st = query_status(address, 5, **creds.ha_login())
    assert st is not None and st["state"] == "joining"
    assert agent.rc("start") == 0  # already running
    assert agent.rc("monitor") == 0
    assert agent.score() == SCORE_BEST_JOINING  # a lone joining broker: the best journal

    out = agent.run("promote")
    assert out.returncode == 0, out.stderr
    assert agent.rc("monitor") == 8
    assert agent.score() == SCORE_PRIMARY
    assert agent.rc("promote") == 0  # already primary
    assert agent.rc("notify") == 0

    # alive but silent: a failed primary, found within the status timeout; demote kills it
    pid = agent.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        out = agent.run("monitor")
        assert out.returncode == 9, out.stderr
        assert time.monotonic() - t0 < 10
        assert "does not answer" in out.stderr
        assert agent.score() is None  # else on-fail=demote would promote it again
        t0 = time.monotonic()
        out = agent.run("demote")
        assert out.returncode == 0, out.stderr
        assert time.monotonic() - t0 < 10
        assert agent.rc("monitor") == 7
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    # a healthy primary: demote restarts it as a backup
    assert agent.rc("start") == 0
    assert agent.rc("promote") == 0
    pid = agent.pid()
    out = agent.run("demote")
    assert out.returncode == 0, out.stderr
    assert agent.pid() != pid
    assert agent.rc("monitor") == 0
    assert agent.rc("demote") == 0  # already a backup

    # kill -9: not running, score gone (a zombie is dead too)
    assert agent.rc("promote") == 0
    assert agent.rc("monitor") == 8
    os.kill(agent.pid(), signal.SIGKILL)
    wait_for("monitor 7 after kill -9", lambda: agent.rc("monitor") == 7, 10)
    assert agent.score() is None
    assert agent.rc("stop") == 0
    assert agent.rc("stop") == 0


def test_stop_sends_sigterm_then_sigkill(make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    (port,) = free_ports(1)
    agent = make_agent(
        data_dir=str(tmp_path / "broker"),
        interface="127.0.0.1",
        port=str(port),
        ha_brokers_url=f"amqp:127.0.0.1:{port}",
        options="--auth no",
        status_timeout="1",
        stop_timeout="1",
    )
    assert agent.rc("start") == 0
    pid = agent.pid()
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    t0 = time.monotonic()
    out = agent.run("stop")
    assert out.returncode == 0, out.stderr
    assert "SIGKILL" in out.stderr
    assert time.monotonic() - t0 < 10
    assert not Path(f"/proc/{pid}/cmdline").exists() or agent.rc("monitor") == 7


def send_durable(address: str, count: int) -> None:
    """`count` durable messages to queue `q`, each acknowledged by the broker."""
    conn = BlockingConnection(f"amqp://{address}", timeout=20)
    try:
        sender = conn.create_sender("q")
        for i in range(count):
            sender.send(Message(body=f"m{i}", durable=True))
    finally:
        conn.close()


def test_three_instances_scores_follow_state_and_journal(
    make_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    base = consecutive_free_ports(3)
    addresses = [f"127.0.0.1:{base + i}" for i in range(3)]
    agent = make_agent(
        data_dir=str(tmp_path / "cluster"),
        interface="127.0.0.1",
        port=str(base),
        per_clone="yes",
        ha_brokers_url="amqp:" + ",".join(addresses),
        options=f"--auth no --auto-create yes {FAST}",
        status_timeout="1",
        recovery_wait="60",
    )

    def state(i: int) -> str | None:
        st = query_status(addresses[i], 2)
        return None if st is None else str(st["state"])

    # a new cluster: every instance joining; only the best journal (ties: the first) scores, and
    # only once every peer answered
    for i in range(3):
        out = agent.run("start", i)
        assert out.returncode == 0, out.stderr
    assert [state(i) for i in range(3)] == ["joining"] * 3
    assert [agent.rc("monitor", i) for i in range(3)] == [0, 0, 0]
    assert [agent.score(i) for i in range(3)] == [SCORE_BEST_JOINING, None, None]

    assert agent.rc("promote", 0) == 0
    assert agent.rc("monitor", 0) == 8

    def ready(i: int) -> bool:
        return agent.rc("monitor", i) == 0 and agent.score(i) == SCORE_READY

    wait_for("instances 1 and 2 ready", lambda: ready(1) and ready(2))

    # the primary dies: no score; restarted, it joins below the ready backups
    os.kill(agent.pid(0), signal.SIGKILL)
    wait_for("monitor 7 for the killed primary", lambda: agent.rc("monitor", 0) == 7, 10)
    assert agent.score(0) is None
    assert agent.rc("demote", 0) == 0 and agent.rc("stop", 0) == 0
    assert agent.rc("start", 0) == 0
    assert agent.score(0) == SCORE_UNREADY
    assert agent.score(1) == agent.score(2) == SCORE_READY
    assert agent.rc("promote", 1) == 0
    assert agent.rc("monitor", 1) == 8 and agent.score(1) == SCORE_PRIMARY
    wait_for("the restarted instance ready again", lambda: ready(0))

    # instance 0 stops; the primary takes messages that only 1 and 2 hold; then all die
    assert agent.rc("stop", 0) == 0
    wait_for("primary 1 active", lambda: state(1) == "active")
    send_durable(addresses[1], 20)
    for i in (1, 2):
        os.kill(agent.pid(i), signal.SIGKILL)
    for i in range(3):
        wait_for(f"instance {i} gone", lambda i=i: agent.rc("monitor", i) == 7, 10)
        assert agent.rc("stop", i) == 0

    # all restart joining: instance 0 would win a tie, but its journal is older
    for i in range(3):
        assert agent.rc("start", i) == 0
    positions = []
    for i in range(3):
        st = query_status(addresses[i], 2)
        assert st is not None and st["state"] == "joining"
        positions.append(tuple(st["position"]))
    assert agent.rc("monitor", 0) == 0 and agent.rc("monitor", 1) == 0
    assert agent.rc("monitor", 2) == 0
    scores = [agent.score(i) for i in range(3)]
    assert scores.count(SCORE_BEST_JOINING) == 1 and scores.count(None) == 2, scores
    best = scores.index(SCORE_BEST_JOINING)
    assert best != 0 and positions[best] == max(positions) > positions[0], positions
    assert agent.rc("promote", best) == 0
    assert agent.rc("monitor", best) == 8


@pytest.mark.skipif(not OCF_TESTER.exists(), reason=f"{OCF_TESTER} not installed: {INSTALL_HINT}")
def test_ocf_tester_passes(make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    (port,) = free_ports(1)
    data_dir = tmp_path / "ocft"
    agent = make_agent(
        data_dir=str(data_dir),
        interface="127.0.0.1",
        port=str(port),
        ha_brokers_url=f"amqp:127.0.0.1:{port}",
        options="--auth no",
        status_timeout="2",
    )
    agent.data_dirs.add(data_dir)  # the teardown kills by pid what ocf-tester may leave
    cmd = [str(OCF_TESTER), "-n", "qstore-t"]
    for k, v in agent.params.items():
        cmd += ["-o", f"{k}={v}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCF_", "__OCF"))}
    out = subprocess.run(
        [*cmd, str(agent.path)], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "passed all tests" in out.stdout
    assert agent.rc("monitor") == 7  # ocf-tester stopped what it started
