"""A local cluster (`qstore-cluster up`) run as a child process, and what drivers need of it.

Shared by the drills (recovery/drill.py), the fail-over benchmark and the end-to-end tests: each
starts the manager in a process group of its own, watches the brokers' states through their
management nodes, kills brokers by the pids the manager publishes in DATA_DIR/cluster.json, and
stops everything it started, brokers included (they run in sessions of their own, so a manager
that could not stop them would leave them running).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from qstore.client import Connection, Empty
from tools._mgmt import query_status

ROOT = Path(__file__).resolve().parent.parent
States = list[str | None]  # each broker's HA state; None: not answering


def free_ports(n: int) -> list[int]:
    """n distinct ports the OS says are free on 127.0.0.1 (all held while choosing, so distinct:
    each cluster member must know every address up front)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def consecutive_free_ports(n: int) -> int:
    """The first of `n` consecutive ports free on 127.0.0.1 (the cluster takes BASE..BASE+n-1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no run of free ports found")


class LocalCluster:
    """`qstore-cluster up --nodes N` in `root` on BASE_PORT.. as a child process.

    `heartbeat`, `recovery_wait` and `backup_timeout` are passed to `qstore-cluster up` when
    given (None: its defaults).
    """

    def __init__(
        self,
        root: Path,
        base_port: int,
        nodes: int = 3,
        *,
        heartbeat: float | None = None,
        recovery_wait: float | None = None,
        backup_timeout: float | None = 5.0,
        poll: float = 0.1,
    ) -> None:
        self.root = root
        self.addresses = [f"127.0.0.1:{base_port + i}" for i in range(nodes)]
        cmd = [
            sys.executable, "-m", "tools.qstore_cluster", "up", "--nodes", str(nodes),
            "--base-port", str(base_port), "--data-dir", str(root), "--poll", str(poll),
        ]  # fmt: skip
        for flag, value in (
            ("--heartbeat", heartbeat),
            ("--recovery-wait", recovery_wait),
            ("--backup-timeout", backup_timeout),
        ):
            if value is not None:
                cmd += [flag, str(value)]
        self.log = open(root / "manager.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
        )
        self._pool = ThreadPoolExecutor(nodes)

    def states(self) -> States:
        """Each broker's HA state, polled in parallel (a silent broker costs one timeout)."""
        found = self._pool.map(lambda a: query_status(a, timeout=1.0), self.addresses)
        return [None if st is None else str(st["state"]) for st in found]

    def wait(self, pred: Callable[[States], bool], what: str, timeout: float) -> float:
        """Poll until `pred(states)`; return when (time.monotonic()). TimeoutError after
        `timeout`, RuntimeError if the manager exits."""
        deadline = time.monotonic() + timeout
        states: States = []
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qstore-cluster exited ({self.proc.returncode})")
            states = self.states()
            if pred(states):
                return time.monotonic()
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}: states {states}")

    def whole(self, timeout: float) -> States:
        """Wait for one active primary and every other broker ready; return the states."""
        found: States = []

        def whole(states: States) -> bool:
            found[:] = states
            return states.count("active") == 1 and states.count("ready") == len(states) - 1

        self.wait(whole, "an active primary and ready backups", timeout)
        return found

    def pids(self) -> list[int | None]:
        """The brokers' pids from DATA_DIR/cluster.json (re-read: the manager rewrites it)."""
        for _ in range(50):
            with contextlib.suppress(OSError, ValueError):
                info = json.loads((self.root / "cluster.json").read_text())
                return [b.get("pid") for b in info["brokers"]]
            time.sleep(0.02)  # caught mid-write
        raise RuntimeError(f"cannot read {self.root / 'cluster.json'}")

    def kill(self, index: int) -> None:
        """SIGKILL broker `index` (node`index`)."""
        pid = self.pids()[index]
        if not pid:
            raise RuntimeError(f"node{index} has no pid")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _ours(self, pid: int) -> bool:
        """A broker of this cluster (its command line names our data directory), not a reused
        pid."""
        try:
            return os.fsencode(self.root) in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def manager_log(self) -> str:
        return (self.root / "manager.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM the manager (SIGKILL its group if it hangs), then kill any broker of ours
        still running."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
            with contextlib.suppress(RuntimeError):
                for pid in self.pids():
                    if pid and self._ours(pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        finally:
            self._pool.shutdown(wait=False)
            self.log.close()


def drain(addresses: list[str], address: str, idle: float = 3.0) -> list[Any]:
    """Every body left at `address`, through qstore.client (failing over as need be),
    acknowledged; done once nothing arrives for `idle` seconds."""
    conn = Connection.establish(
        addresses[0], reconnect=True, reconnect_urls=addresses, heartbeat=1, timeout=30
    )
    got: list[Any] = []
    try:
        ssn = conn.session()
        rcv = ssn.receiver(address, capacity=1000)
        while True:
            try:
                got.append(rcv.fetch(timeout=idle).body)
            except Empty:
                break
            if len(got) % 500 == 0:
                ssn.acknowledge()
        ssn.acknowledge()
    finally:
        conn.close(timeout=5)
    return got
