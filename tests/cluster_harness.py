"""A real HA cluster for tests: N `qstored --ha-cluster yes` processes on 127.0.0.1, each with its
own data directory under tmp_path, fast timings, stopped by pid at the end (also on failure).

Ports come from the OS (bind to port 0, read it, close) because every broker must know the whole
`--ha-brokers-url` before it starts.

`cluster(3, auth=True)` runs the members with `--auth yes`: a user database with a client user
(`USER`) and the HA identity (`HA_USER`, its password in a file); the harness's status polls,
promotes and `admin()` log in as the HA identity, `client()` as the client user, and
`client_options()` gives qstore.client the same login. Without it the members are open
(`--auth no`), as most HA tests need nothing else.

    def test_x(cluster):                          # 3 brokers, one promoted, backups ready
        c = cluster(3)
        p = c.primary                             # BrokerProcess
        c.kill(p); c.promote(c.members[1]); c.wait_states(...)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from broker_clients import body, drain
from broker_harness import BrokerProcess, Brokers
from proton import Message, symbol
from proton.reactor import Copy
from proton.utils import BlockingConnection

from qstore.ha import ADMIN_PROPERTY
from qstore.sasl.userdb import MIN_ITERATIONS, UserDb
from recovery.localcluster import free_ports
from tools._mgmt import ManagementClient, ToolError, parse_broker

FAST = [
    "--link-maintenance-interval",
    "0.1",
    "--link-heartbeat-interval",
    "1",
    "--ha-backup-timeout",
    "3",
]
WAIT = 20.0
USER, PASSWORD = "admin", "admin-secret"  # the client user of an auth=True cluster
HA_USER, HA_PASSWORD = "qstore-ha", "ha-secret"


class Cluster:
    def __init__(
        self, brokers: Brokers, n: int, replicate: str, extra: list[str], auth: bool = False
    ) -> None:
        self.brokers = brokers
        self.ports = free_ports(n)
        self.url = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        self.replicate = replicate
        self.extra = extra
        self.auth = self._auth_args() if auth else []
        # how the harness itself logs in: as the HA identity (status, promote, admin)
        self.ha_login: dict[str, Any] = (
            {"user": HA_USER, "password": HA_PASSWORD, "mechanism": "PLAIN"} if auth else {}
        )
        self.members: list[BrokerProcess | None] = [None] * n
        # one admin client per member for status polls (a new proton Container costs ~0.1 s)
        self._status_clients: dict[int, ManagementClient] = {}
        with ThreadPoolExecutor(n) as pool:  # each start waits for its port: start them at once
            list(pool.map(self.start, range(n)))

    def _auth_args(self) -> list[str]:
        db, password_file = self.brokers.tmp_path / "sasl-db", self.brokers.tmp_path / "ha-pass"
        users = UserDb()
        for user, password in ((USER, PASSWORD), (HA_USER, HA_PASSWORD)):
            users.set_password(user, password, iterations=MIN_ITERATIONS)
        users.save(db)
        password_file.write_text(HA_PASSWORD + "\n")
        return ["--auth", "yes", "--sasl-db", str(db), "--ha-username", HA_USER,
                "--ha-password-file", str(password_file)]  # fmt: skip

    def client_options(self) -> dict[str, Any]:
        """Login keywords of `qstore.client.Connection` (none for an open cluster)."""
        return {"username": USER, "password": PASSWORD} if self.auth else {}

    def _proton_login(self, user: str, password: str) -> dict[str, Any]:
        if not self.auth:
            return {}
        return {"user": user, "password": password, "allowed_mechs": "PLAIN"}

    def args(self, i: int) -> list[str]:
        return [
            "--ha-cluster",
            "yes",
            "--ha-brokers-url",
            self.url,
            "--ha-replicate",
            self.replicate,
            "--auto-create",
            "yes",
            *FAST,
            *self.auth,
            *self.extra,
        ]

    def data_dir(self, i: int) -> Path:
        return self.brokers.tmp_path / f"node{i}"

    def start(self, i: int, extra: list[str] | None = None) -> BrokerProcess:
        """Start (or restart, with the same data directory and port) member i; `extra` options
        for this start only (later options win, so they override the cluster's)."""
        # BrokerProcess directly (Brokers.start numbers logs, not thread-safe); one log per member
        b = BrokerProcess(
            self.data_dir(i),
            self.args(i) + list(extra or []),
            self.brokers.tmp_path / f"node{i}.log",
            self.ports[i],
        )
        self.brokers.started.append(b)  # stopped (SIGKILL) by the `brokers` fixture
        self.members[i] = b
        self._status_clients.pop(i, None)  # a kept connection is to the previous run, if any
        return b

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def status(self, i: int, timeout: float = 3.0) -> dict[str, Any] | None:
        """Member i's HA status, or None if it does not answer. A kept connection is used, and
        replaced once if it broke (the member was restarted)."""
        for _ in range(2):
            client = self._status_clients.pop(i, None)
            try:
                if client is None:
                    client = ManagementClient(
                        parse_broker(self.address(i)),
                        ha_admin=True,
                        timeout=timeout,
                        **self.ha_login,
                    )
                code, _, body = client.request("READ", "ha")
            except ToolError:
                if client is not None:
                    client.close()
                continue
            self._status_clients[i] = client
            if code == 200 and isinstance(body, dict):
                return {str(k): v for k, v in body.items()}
            return None
        return None

    def close(self) -> None:
        """Close the kept status connections (the brokers are stopped by the fixture)."""
        for i, client in self._status_clients.items():
            if self.alive(i):
                client.close()
        self._status_clients.clear()

    def state(self, i: int) -> str | None:
        st = self.status(i)
        return None if st is None else str(st["state"])

    def promote(self, i: int) -> tuple[int, str]:
        client = ManagementClient(
            parse_broker(self.address(i)), ha_admin=True, timeout=15, **self.ha_login
        )
        try:
            code, desc, _ = client.request("PROMOTE", "ha")
        finally:
            client.close()
        return code, desc

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (ToolError, OSError):
                pass
            time.sleep(0.05)
        states = {i: self.state(i) for i in range(len(self.ports)) if self.alive(i)}
        raise AssertionError(f"timed out waiting for {what}; states now {states}")

    def wait_states(self, expected: dict[int, str], timeout: float = WAIT) -> None:
        self.wait(
            lambda: all(self.state(i) == s for i, s in expected.items()),
            f"states {expected}",
            timeout,
        )

    def alive(self, i: int) -> bool:
        b = self.members[i]
        return b is not None and b.alive()

    def kill(self, i: int) -> None:
        b = self.members[i]
        if b is not None:
            b.kill()
        # dropped, not closed: a graceful close to a dead peer waits out its timeout
        self._status_clients.pop(i, None)

    def pid(self, i: int) -> int:
        b = self.members[i]
        assert b is not None and b.alive(), f"member {i} is not running"
        return b.pid

    def log(self, i: int) -> str:
        """Member i's log, every run of it (read from the file: works after a kill too)."""
        path = self.brokers.tmp_path / f"node{i}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def restart_all(
        self, primary: int = 0, *, empty: tuple[int, ...] = (), kill: bool = True
    ) -> None:
        """A total restart: every member stopped (SIGKILL; or SIGTERM with exit 0 asserted),
        the data directories of `empty` removed, every member started again and joining, then
        `primary` promoted. The promoted member's recent log starts at its restart, so a member
        that comes back empty catches up by snapshot."""
        for i in reversed(range(len(self.ports))):  # backups first: they lose no primary
            if kill:
                self.kill(i)
            else:
                member = self.members[i]
                assert member is not None and member.terminate() == 0, f"member {i} exit"
        for i in empty:
            shutil.rmtree(self.data_dir(i))
        for i in range(len(self.ports)):
            self.start(i)
        self.wait(lambda: all(self.state(i) == "joining" for i in range(len(self.ports))),
                  "every member joining")  # fmt: skip
        self.start_primary(primary)

    def start_primary(self, i: int = 0) -> None:
        """Promote member i of a new cluster and wait until every other member is ready."""
        code, desc = self.promote(i)
        assert code == 200, desc
        expected = {j: "ready" for j in range(len(self.ports)) if j != i and self.alive(j)}
        expected[i] = "active"
        self.wait_states(expected)

    def client(self, i: int, **kw: Any) -> BlockingConnection:
        """A stock proton connection (as the client user of an auth=True cluster)."""
        return BlockingConnection(
            self.address(i), timeout=10, **{**self._proton_login(USER, PASSWORD), **kw}
        )

    def send_durable(self, i: int, queue: str, bodies: list[Any]) -> None:
        """Durable messages with these bodies to `queue` on member i, each settled."""
        conn = self.client(i)
        try:
            s = conn.create_sender(queue)
            for b in bodies:
                s.send(Message(body=b, durable=True))
        finally:
            conn.close()

    def position(self, i: int) -> list[int]:
        """Member i's stream position [epoch, seq], from its HA status (it must answer)."""
        st = self.status(i)
        assert st is not None, f"member {i} does not answer"
        return list(st["position"])

    def admin(self, i: int) -> BlockingConnection:
        return BlockingConnection(
            self.address(i),
            timeout=10,
            properties={symbol(ADMIN_PROPERTY): True},
            **self._proton_login(HA_USER, HA_PASSWORD),
        )

    def management(self, i: int) -> ManagementClient:
        return ManagementClient(
            parse_broker(self.address(i)), ha_admin=True, timeout=10, **self.ha_login
        )


def browse(conn: BlockingConnection, queue: str) -> list[Any]:
    """The bodies on `queue` now, in order, without consuming (a `copy` receiver): as many as
    the broker says it holds, asked with a drain (broker_clients.drain), not guessed from a
    silence; so a `c.wait(lambda: browse(...) == want)` retries on a snapshot of the queue."""
    r = conn.create_receiver(queue, options=Copy())
    try:
        return [body(m) for m in drain(r)]
    finally:
        r.close()


@pytest.fixture
def cluster(brokers: Brokers) -> Iterator[Callable[..., Cluster]]:
    """cluster(n=3, replicate="all", extra=[...], primary=0, auth=False): started, promoted,
    backups ready. primary=None leaves every member joining; auth=True: logins required."""

    def make(
        n: int = 3,
        replicate: str = "all",
        extra: list[str] | None = None,
        primary: int | None = 0,
        auth: bool = False,
    ) -> Cluster:
        c = Cluster(brokers, n, replicate, list(extra or []), auth)
        made.append(c)
        c.wait(lambda: all(c.state(i) == "joining" for i in range(n)), "every member joining")
        if primary is not None:
            c.start_primary(primary)
        return c

    made: list[Cluster] = []
    try:
        yield make
    finally:
        for c in made:
            c.close()


__all__ = [
    "FAST", "HA_PASSWORD", "HA_USER", "PASSWORD", "USER", "Cluster", "Path", "browse", "cluster",
    "free_ports",
]  # fmt: skip
