"""--max-connections in an HA cluster (#11): a client flood cannot keep a restarted backup, or an
admin tool, out of the primary. Real `qstored` processes with --max-connections 20: the primary's
slots are taken by idle sockets (which give their places to newcomers once they have waited past
the 1 s grace), or by opened stock clients (refused at their open with
amqp:resource-limit-exceeded once only the HA reserve is left) plus idle sockets; a killed backup
restarted meanwhile still joins and becomes ready."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

from cluster_harness import Cluster
from proton import ConnectionException, Message
from proton.utils import BlockingConnection
from security_support import wait_for_log

from broker.net.limit import ha_reserve

MOST = 20
EXTRA = ["--max-connections", str(MOST), "--open-timeout", "60"]
JOIN = 30.0  # bound on the backup's join under the flood
RETRY = 10.0  # bound on a newcomer finding a slot under the flood


class Flood:
    """Opens an idle socket (it never says anything) to `port` every `interval` seconds from a
    thread and holds them all, until the `with` block ends (at most `most` sockets)."""

    def __init__(self, port: int, interval: float = 0.04, most: int = 2000) -> None:
        self.port = port
        self.interval = interval
        self.most = most
        self.sockets: list[socket.socket] = []
        self.errors: list[OSError] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="flood")

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.sockets) < self.most:
            try:
                self.sockets.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))
            except OSError as exc:
                self.errors.append(exc)
            self._stop.wait(self.interval)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.sockets:
            s.close()

    def closed_by_broker(self) -> int:
        """How many of the held sockets the broker has closed (refused or dropped)."""
        n = 0
        for s in list(self.sockets):
            s.settimeout(0)
            try:
                if s.recv(1) == b"":
                    n += 1
            except BlockingIOError:
                pass
            except ConnectionResetError:
                n += 1
        return n


def _admin_with_retry(c: Cluster, i: int) -> BlockingConnection:
    """An HA admin connection; under a flood a new socket may be refused at once (while every
    idle socket is younger than the grace): a tool tries again."""
    deadline = time.monotonic() + RETRY
    while True:
        try:
            return c.admin(i)
        except ConnectionException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _rejoin_under_flood(c: Cluster) -> Flood:
    """Kill the backup, flood the primary until it is at the limit, restart the backup and wait
    until it is ready again; an admin tool gets in too. The flood, for its counts."""
    p = c.members[0]
    assert p is not None
    c.kill(1)
    with Flood(c.ports[0]) as flood:
        wait_for_log(p, "at --max-connections: ")
        time.sleep(1.5)  # the flood goes on: every slot left is an idle socket, or a young one
        c.start(1)
        c.wait_states({1: "ready"}, timeout=JOIN)
        admin = _admin_with_retry(c, 0)
        admin.close()
        assert flood.closed_by_broker() >= MOST  # refused at once, or dropped for newcomers
    assert not flood.errors, flood.errors[:3]
    return flood


def test_a_backup_joins_a_primary_whose_slots_are_all_taken_by_idle_sockets(cluster) -> None:
    c = cluster(2, extra=EXTRA)
    flood = _rejoin_under_flood(c)
    log = c.log(0)
    assert log.count("at --max-connections: ") <= 3, "a spell is logged once, not per socket"
    assert len(flood.sockets) > 3 * MOST
    assert "dropped before its AMQP open for a newer socket" in log
    assert "opened as backup" in log.split("at --max-connections: ", 1)[1]
    conn = c.client(0)  # the flood gone, clients are served again
    try:
        conn.create_sender("after").send(Message(body="ok", durable=True))
    finally:
        conn.close()


def test_a_backup_joins_a_primary_full_of_clients_and_idle_sockets(cluster) -> None:
    c = cluster(2, extra=EXTRA)
    clients: list[BlockingConnection] = []
    refusal = ""
    try:
        for _ in range(MOST):
            try:
                clients.append(c.client(0))
            except ConnectionException as exc:
                refusal = str(exc)
                break
        # what a stock client reports: the condition and the option to look at
        assert "amqp:resource-limit-exceeded" in refusal, refusal
        assert "--max-connections 20" in refusal, refusal
        # HA connections (the backup's link, the harness's admin) count as open: clients get
        # at most the limit less the reserve
        assert 0 < len(clients) <= MOST - ha_reserve(MOST, 2)
        p = c.members[0]
        assert p is not None
        assert "WARNING" in wait_for_log(p, "refusing clients at their open")
        _rejoin_under_flood(c)
        for i, conn in enumerate(clients):  # the clients were never disturbed
            conn.create_sender("full").send(Message(body=f"m{i}", durable=True))
    finally:
        for conn in clients:
            conn.close()
    log = c.log(0)
    assert log.count("refusing clients at their open") == 1
    assert "--max-connections 20: clients are refused at their open while 12" in log
