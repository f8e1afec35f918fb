"""Who may connect to which member, and who may be promoted (seed 1.12.6, 1.12.8, 1.12.12.4).

Backups refuse clients by dropping the socket after the client's `open` (so stock clients fail
over to the next URL), and log who they refused; admin tools (`qpid.ha-admin`) are let in, and on
a backup may look at replicated queues but not change them. Promotion is refused to a backup that
is catching up and to a joining broker while another broker is primary or ready.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from typing import Any

import pytest
from cluster_harness import Cluster, browse
from proton import ConnectionException, Message
from proton.handlers import MessagingHandler
from proton.reactor import Backoff, Container
from proton.utils import BlockingConnection, LinkDetached

# -- clients and admins on a backup -----------------------------------------------------------


def test_backup_refuses_client_and_admits_admin(cluster) -> None:
    c = cluster(2)
    conn = c.client(0)
    try:
        s = conn.create_sender("q")
        for n in range(3):
            s.send(Message(body=f"m{n}", durable=True))
    finally:
        conn.close()

    with pytest.raises(ConnectionException):
        BlockingConnection(c.address(1), timeout=10, container_id="plain-client-7")
    log = c.log(1)
    refused = [line for line in log.splitlines() if "container=plain-client-7" in line]
    assert refused, log[-2000:]
    assert "refused client" in refused[0] and "peer=127.0.0.1:" in refused[0], refused[0]

    admin = c.admin(1)
    try:
        c.wait(lambda: browse(admin, "q") == ["m0", "m1", "m2"], "the backup to hold q")
        with pytest.raises(LinkDetached, match="replicated"):
            admin.create_receiver("q")
        with pytest.raises(LinkDetached, match="replicated"):
            admin.create_sender("q")
        assert browse(admin, "q") == ["m0", "m1", "m2"]  # refusals changed nothing
    finally:
        admin.close()


class _FindPrimary(MessagingHandler):
    """A stock client given every member's URL: sends one message to whichever accepts it."""

    def __init__(self, urls: list[str], address: str) -> None:
        super().__init__()
        self.urls = urls
        self.address = address
        self.connected_to: str | None = None
        self.accepted = False
        self.conn: Any = None
        self.timer: Any = None
        self._sent = False

    def on_start(self, event: Any) -> None:
        self.conn = event.container.connect(
            urls=self.urls, reconnect=Backoff(max_delay=0.5), container_id="finder-1"
        )
        event.container.create_sender(self.conn, self.address)
        self.timer = event.container.schedule(30, self)  # the bound: give up after 30 s

    def on_connection_opened(self, event: Any) -> None:
        self.connected_to = str(event.connection.url)

    def on_sendable(self, event: Any) -> None:
        if event.sender.credit and not self._sent:
            self._sent = True
            event.sender.send(Message(body="found you", durable=True))

    def on_accepted(self, event: Any) -> None:
        self.accepted = True
        self.timer.cancel()
        event.connection.close()

    def on_timer_task(self, event: Any) -> None:
        if self.conn is not None:
            self.conn.close()
        event.container.stop()


def test_client_with_every_url_finds_the_primary(cluster) -> None:
    c = cluster(3, primary=2)  # the primary is last in the list: both backups are tried first
    handler = _FindPrimary([f"amqp://{c.address(i)}" for i in range(3)], "found")
    t = threading.Thread(target=Container(handler).run, daemon=True)
    t.start()
    t.join(40)
    assert not t.is_alive(), "client did not finish"
    assert handler.accepted, "message never accepted"
    assert handler.connected_to is not None and str(c.ports[2]) in handler.connected_to
    # both backups dropped it (at least once each) and said so
    for i in (0, 1):
        assert "container=finder-1" in c.log(i), c.log(i)[-2000:]
    a = c.admin(2)
    try:
        assert browse(a, "found") == ["found you"]
    finally:
        a.close()


# -- promotion refused -------------------------------------------------------------------------


def test_promote_refused_to_a_joining_broker_while_a_primary_exists(cluster) -> None:
    c = cluster(3, primary=1)
    c.kill(2)
    # Restarted with a long maintenance interval: its first attempt goes to member 0 (a backup,
    # which refuses it), the next one only in 60 s, so it stays joining while member 1 is primary.
    c.start(2, extra=["--link-maintenance-interval", "60"])
    c.wait_states({2: "joining"})
    code, desc = c.promote(2)
    assert code == 409, desc
    assert "joining" in desc and c.address(1) in desc and c.address(0) in desc, desc
    assert c.state(2) == "joining"
    assert c.state(1) == "active"
    # and a broker that is already primary is not promoted again
    code, desc = c.promote(1)
    assert code == 409 and "already primary" in desc, desc


def test_promote_refused_to_a_catch_up_backup(cluster) -> None:
    """A fresh backup joins a primary holding a large backlog; the primary is stopped (SIGSTOP)
    as soon as the backup says it is in catch-up. The backup stays catch-up, and may not be
    promoted: it does not hold everything the primary acknowledged."""
    c = cluster(2)
    c.kill(1)
    conn = c.client(0)
    try:
        s = conn.create_sender("backlog")
        body = os.urandom(64 << 10)
        for _ in range(300):  # about 20 MB to catch up on: far more than one credit window
            s.send(Message(body=body, durable=True))
    finally:
        conn.close()
    shutil.rmtree(c.data_dir(1))  # joins afresh
    seen = len(c.log(1))
    c.start(1)
    deadline = time.monotonic() + 20
    while "-> catch-up" not in c.log(1)[seen:]:  # the log, not a status request: faster
        assert time.monotonic() < deadline, "member 1 never reached catch-up"
        assert "-> ready" not in c.log(1)[seen:], "member 1 went ready at once"
        time.sleep(0.005)
    os.kill(c.pid(0), signal.SIGSTOP)
    try:
        assert c.state(1) == "catch-up"
        code, desc = c.promote(1)
        assert code == 409, desc
        assert "catch-up" in desc, desc
        assert c.state(1) == "catch-up"
    finally:
        os.kill(c.pid(0), signal.SIGCONT)
    c.wait_states({0: "active", 1: "ready"})


def _queue_names(c: Cluster, i: int) -> list[str]:
    m = c.management(i)
    try:
        queues = m.call("QUERY", "queue")
    finally:
        m.close()
    return sorted(q["name"] for q in queues if not q["name"].startswith("qstore."))


def test_admin_on_backup_cannot_change_what_replicates(cluster) -> None:
    """An admin tool on a backup looks; it does not create, delete or empty what the primary
    replicates (that would make the backup differ from the primary), even by accident."""
    c = cluster(2)
    m = c.management(0)
    try:
        m.call("CREATE", "queue", "ad", {"durable": True, "auto-delete": True})
        m.call("CREATE", "exchange", "x", {"type": "direct", "durable": True})
    finally:
        m.close()
    conn = c.client(0)
    try:
        conn.create_sender("ad").send(Message(body="kept", durable=True))
    finally:
        conn.close()
    c.wait(lambda: "ad" in _queue_names(c, 1), "member 1 to hold `ad`")

    admin = c.admin(1)
    try:
        # browsing an auto-delete queue on a backup does not delete it when the browser goes
        assert browse(admin, "ad") == ["kept"]
        assert browse(admin, "ad") == ["kept"]
        # attaching to a name the backup does not hold creates nothing (even with auto-create)
        with pytest.raises(LinkDetached, match="not-found"):
            admin.create_receiver("no-such-queue")
        with pytest.raises(LinkDetached, match="not-found"):
            admin.create_sender("no-such-queue")
    finally:
        admin.close()
    assert _queue_names(c, 1) == ["ad"]

    m = c.management(1)
    try:
        for op, kind, name, body in (
            ("CREATE", "queue", "made-here", {"durable": True}),
            ("CREATE", "exchange", "made-here", {"type": "fanout"}),
            ("CREATE", "binding", None, {"exchange": "x", "queue": "ad", "key": "k"}),
            ("PURGE", "queue", "ad", {}),
            ("DELETE", "queue", "ad", {"force": True}),
            ("DELETE", "exchange", "x", {}),
        ):
            code, desc, _ = m.request(op, kind, name, body)
            assert code == 403, (op, kind, code, desc)
            assert "replicated" in desc and "backup" in desc, desc
        # what does not replicate is the backup's own business
        code, desc, _ = m.request(
            "CREATE", "queue", "local", {"arguments": {"qpid.replicate": "none"}}
        )
        assert code == 201, desc
        assert m.request("DELETE", "queue", "local")[0] == 204
    finally:
        m.close()
    assert _queue_names(c, 1) == ["ad"]
    a = c.admin(1)
    try:
        assert browse(a, "ad") == ["kept"]
    finally:
        a.close()
