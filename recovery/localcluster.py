"""A local cluster (`qstore-cluster up`) run as a child process, and what drivers need of it.

Shared by the drills (recovery/drill.py), the fail-over benchmark and the end-to-end tests: each
starts the manager in a process group of its own, watches the brokers' states through their
management nodes, kills brokers by the pids the manager publishes in DATA_DIR/cluster.json, and
stops everything it started, brokers included (they run in sessions of their own, so a manager
that could not stop them would leave them running).

The cluster requires a login unless `auth=False`: its credentials are made in DATA_DIR before the
manager starts (which then reuses them, as a second `qstore-cluster up` does), so a driver knows
them at once. Clients log in as `admin` (`client_options()` for qstore.client,
`proton_options()` for stock proton); status polls as the HA user, as the manager does.
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
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from proton import Message

from qstore.client import Connection, Empty
from tools import cluster_auth
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

    `heartbeat`, `recovery_wait`, `backup_timeout` and `steady_poll` are passed to
    `qstore-cluster up` when given (None: its defaults). `auth=False`: an open cluster
    (`--auth no`).
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
        steady_poll: float | None = None,
        auth: bool = True,
    ) -> None:
        self.root = root
        self.addresses = [f"127.0.0.1:{base_port + i}" for i in range(nodes)]
        self.credentials: cluster_auth.ClusterCredentials | None = None
        if auth:
            self.credentials = cluster_auth.ensure(root, self.addresses[0]).credentials
        self._ha_login = self.credentials.ha_login() if self.credentials else {}
        cmd = [
            sys.executable, "-m", "tools.qstore_cluster", "up", "--nodes", str(nodes),
            "--base-port", str(base_port), "--data-dir", str(root), "--poll", str(poll),
            "--auth", "yes" if auth else "no",
        ]  # fmt: skip
        for flag, value in (
            ("--heartbeat", heartbeat),
            ("--recovery-wait", recovery_wait),
            ("--backup-timeout", backup_timeout),
            ("--steady-poll", steady_poll),
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

    def client_options(self) -> dict[str, Any]:
        """Login keywords of `qstore.client.Connection` (none for an open cluster)."""
        return self.credentials.client_options() if self.credentials else {}

    def proton_options(self) -> dict[str, Any]:
        """Login keywords of a stock proton `BlockingConnection` or `Container.connect`."""
        return self.credentials.proton_options() if self.credentials else {}

    def states(self) -> States:
        """Each broker's HA state, polled in parallel (a silent broker costs one timeout)."""
        found = self._pool.map(
            lambda a: query_status(a, timeout=1.0, **self._ha_login), self.addresses
        )
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
        return broker_pids(self.root)

    def kill(self, index: int) -> None:
        """SIGKILL broker `index` (node`index`)."""
        pid = self.pids()[index]
        if not pid:
            raise RuntimeError(f"node{index} has no pid")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def manager_log(self) -> str:
        return (self.root / "manager.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM the manager (SIGKILL its group if it hangs), then kill any broker of ours
        still running."""
        try:
            stop_manager(self.proc, self.root)
        finally:
            self._pool.shutdown(wait=False)
            self.log.close()


def broker_pids(root: Path) -> list[int | None]:
    """The brokers' pids from ROOT/cluster.json (re-read each time: the manager rewrites it)."""
    for _ in range(50):
        with contextlib.suppress(OSError, ValueError):
            info = json.loads((root / "cluster.json").read_text())
            return [b.get("pid") for b in info["brokers"]]
        time.sleep(0.02)  # caught mid-write
    raise RuntimeError(f"cannot read {root / 'cluster.json'}")


def _ours(pid: int, root: Path) -> bool:
    """A broker of the cluster in `root` (its command line names that directory), not a reused
    pid."""
    try:
        return os.fsencode(root) in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_manager(proc: subprocess.Popen[bytes], root: Path) -> None:
    """Stop a `qstore-cluster up` started in a session of its own: SIGTERM (it stops its
    brokers), SIGKILL of its process group if it hangs, then SIGKILL of any broker of `root`
    still running (brokers run in sessions of their own: nothing else would stop them)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(RuntimeError):
        for pid in broker_pids(root):
            if pid and _ours(pid, root):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


END = "qstore: end of the queue"  # the marker `drain` sends last and reads up to


def drain(
    addresses: list[str],
    address: str,
    timeout: float = 30.0,
    *,
    options: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Every body left at `address` (a FIFO queue): those of `drain_marked`."""
    return [body for body, _ in drain_marked(addresses, address, timeout, options=options)]


def drain_marked(
    addresses: list[str],
    address: str,
    timeout: float = 30.0,
    *,
    options: Mapping[str, Any] | None = None,
) -> list[tuple[Any, bool]]:
    """Every body left at `address` (a FIFO queue), through qstore.client (failing over as need
    be), acknowledged, each with whether the broker marked its delivery a redelivery (not the
    first acquirer: an earlier delivery's acknowledgement was lost), which tells a consumer's
    redelivery from a second copy of the message. A marker is sent last and read up to: the end
    is known, not guessed from a silence; TimeoutError if the next message does not come within
    `timeout` seconds. `options`: more keywords of `Connection.establish` (the login:
    `client_options()`). Tuples, not the Messages: a drill drains hundreds of thousands."""
    conn = Connection.establish(
        addresses[0], reconnect=True, reconnect_urls=addresses, heartbeat=1, timeout=30,
        **(options or {}),
    )  # fmt: skip
    got: list[tuple[Any, bool]] = []
    try:
        ssn = conn.session()
        ssn.sender(address, timeout=timeout).send(Message(body=END, durable=True), timeout=timeout)
        rcv = ssn.receiver(address, capacity=1000, timeout=timeout)
        while True:
            try:
                msg = rcv.fetch(timeout=timeout)
            except Empty:
                raise TimeoutError(
                    f"draining {address!r}: no end marker after {len(got)} messages"
                ) from None
            if msg.body == END:
                break
            got.append((msg.body, msg.delivery_count > 0 or not msg.first_acquirer))
            if len(got) % 500 == 0:
                ssn.acknowledge()
        ssn.acknowledge()
    finally:
        conn.close(timeout=5)
    return got
