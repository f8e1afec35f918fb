"""Fail-over with real processes: kill -9 the primary, promote a backup (seed 1.12.1.1, 1.12.8).

Nothing a sender saw accepted is lost; a stock client given every URL moves to the new primary
and re-sends what was not settled; the other backup follows the new primary, and the old primary
comes back as a backup of it. A hung backup
(SIGSTOP) holds senders up for at most about two heartbeats (seed 1.12.12.3).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from broker_clients import body, drain
from cluster_harness import Cluster, browse
from proton import Delivery, Message, Timeout
from proton.handlers import MessagingHandler
from proton.reactor import ApplicationEvent, Backoff, Container, EventInjector


class FailoverSender(MessagingHandler):
    """Sends messages 0..total-1 (durable, body = id) to `address` over one connection with every
    member's URL, `window` unsettled at most. Keeps what was accepted; after a reconnect it
    re-sends what was in flight (at-least-once, as the seed's clients do)."""

    def __init__(self, urls: list[str], address: str, total: int, window: int = 20) -> None:
        super().__init__(auto_settle=True)
        self.urls = urls
        self.address = address
        self.total = total
        self.window = window
        self.next_id = 0
        self.resend: list[int] = []
        self.in_flight: dict[Any, int] = {}
        self.accepted: set[int] = set()
        self.reconnects = 0
        self.injector = EventInjector()
        self.sender: Any = None
        self.conn: Any = None

    def on_start(self, event: Any) -> None:
        event.container.selectable(self.injector)
        self.conn = event.container.connect(urls=self.urls, reconnect=Backoff(max_delay=0.3))
        self.sender = event.container.create_sender(self.conn, self.address)

    def on_connection_opened(self, event: Any) -> None:
        self.reconnects += 1

    def on_disconnected(self, event: Any) -> None:
        # what was in flight is unknown: send it again on the next connection
        self.resend = sorted(set(self.in_flight.values()) | set(self.resend))
        self.in_flight.clear()

    def on_sendable(self, event: Any) -> None:
        s = event.sender
        while s.credit and len(self.in_flight) < self.window:
            if self.resend:
                n = self.resend.pop(0)
            elif self.next_id < self.total:
                n = self.next_id
                self.next_id += 1
            else:
                return
            self.in_flight[s.send(Message(body=n, durable=True))] = n

    def on_settled(self, event: Any) -> None:
        n = self.in_flight.pop(event.delivery, None)
        if n is None:
            return
        if event.delivery.remote_state == Delivery.ACCEPTED:
            self.accepted.add(n)
        else:
            self.resend.append(n)
        if len(self.accepted) == self.total:
            self.stop()
        else:
            self.on_sendable(event)

    def on_stop_request(self, event: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.injector.close()

    def request_stop(self) -> None:
        """From another thread."""
        self.injector.trigger(ApplicationEvent("stop_request"))


def consume_all(c: Cluster, i: int, address: str) -> list[Any]:
    """Every body on member i's `address`, accepted: as many as the broker says it holds (a
    drain, broker_clients.drain), not until a silence."""
    conn = c.client(i)
    try:
        return [body(m) for m in drain(conn.create_receiver(address))]
    finally:
        conn.close()


def test_kill_primary_nothing_accepted_is_lost(cluster) -> None:
    c = cluster(3)
    handler = FailoverSender([f"amqp://{c.address(i)}" for i in range(3)], "orders", total=600)
    t = threading.Thread(target=Container(handler).run, daemon=True)
    t.start()
    try:
        c.wait(lambda: len(handler.accepted) >= 150, "150 messages accepted by the primary")
        c.kill(0)  # kill -9, mid-stream
        at_kill = len(handler.accepted)
        code, desc = c.promote(1)
        assert code == 200, desc
        c.wait_states({1: "active", 2: "ready"})  # the other backup follows the new primary
        c.wait(lambda: len(handler.accepted) == 600, "every message accepted", timeout=40)
    finally:
        handler.request_stop()
        t.join(10)
    assert not t.is_alive()
    assert at_kill < 600, "the primary was killed after everything was sent: no fail-over"
    assert handler.reconnects >= 2, "the client never moved to the new primary"
    got = consume_all(c, 1, "orders")
    assert set(handler.accepted) <= set(got), sorted(set(handler.accepted) - set(got))[:20]
    assert set(got) <= set(range(600))
    # what the new primary consumed is gone from the backups too, the old primary included
    c.start(0)
    c.wait_states({0: "ready"})
    for i in (0, 2):
        a = c.admin(i)
        try:
            c.wait(lambda a=a: browse(a, "orders") == [], f"member {i} to see the drain")
        finally:
            a.close()


def test_new_primary_without_queues_goes_active(cluster) -> None:
    c = cluster(3)
    c.kill(0)
    code, desc = c.promote(1)
    assert code == 200, desc
    c.wait_states({1: "active", 2: "ready"})
    st = c.status(1)
    assert st is not None and st["epoch"] >= 2  # a new epoch for the new primary
    conn = c.client(1)
    try:
        conn.create_sender("after").send(Message(body="x", durable=True))
    finally:
        conn.close()


def test_stopped_backup_does_not_block_senders(cluster) -> None:
    """SIGSTOP a backup: the primary stops waiting for it after missing its heartbeats (2 x 1 s
    here), so senders are held up by about that long, not forever. SIGCONT: it catches up."""
    c = cluster(3)
    conn = c.client(0)
    try:
        s = conn.create_sender("work")
        s.send(Message(body="before", durable=True))
        stopped = c.pid(2)
        os.kill(stopped, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            for n in range(5):
                s.send(Message(body=f"during-{n}", durable=True), timeout=15)
            held = time.monotonic() - t0
            # bounded by the heartbeat timeout, not by the (absent) stopped backup: generous
            # slack for a loaded machine, far below "never"
            assert held < 10, held
            # later sends are not held at all by the dropped backup
            s.send(Message(body="after-drop", durable=True), timeout=5)
        finally:
            os.kill(stopped, signal.SIGCONT)
    finally:
        conn.close()
    c.wait_states({0: "active", 1: "ready", 2: "ready"})
    want = ["before", *[f"during-{n}" for n in range(5)], "after-drop"]
    for i in (1, 2):
        a = c.admin(i)
        try:
            c.wait(lambda a=a: browse(a, "work") == want, f"member {i} to hold every message")
        finally:
            a.close()


def test_consumer_ack_releases_a_held_sender(cluster) -> None:
    """Both backups hung (and heartbeats long, so the primary keeps waiting for them): a sender's
    message is held, until a consumer on the primary acknowledges it; then nobody needs it."""
    c = cluster(3, extra=["--link-heartbeat-interval", "30"])
    conn = c.client(0)
    try:
        s = conn.create_sender("g")
        s.send(Message(body="warm-up", durable=True))
        r = conn.create_receiver("g", credit=10)
        assert r.receive(timeout=10).body == "warm-up"
        r.accept()
        stopped = [c.pid(1), c.pid(2)]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            dlv = s.link.send(Message(body="held", durable=True))
            with pytest.raises(Timeout):
                conn.wait(lambda: dlv.settled, timeout=1.5, msg="held for the backups")
            assert r.receive(timeout=10).body == "held"
            r.accept()
            conn.wait(lambda: dlv.settled, timeout=10, msg="released by the consumer's ack")
            assert dlv.remote_state == Delivery.ACCEPTED
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
    finally:
        conn.close()
    for i in (1, 2):
        a = c.admin(i)
        try:
            c.wait(lambda a=a: browse(a, "g") == [], f"member {i}: nothing left on g")
        finally:
            a.close()
