"""End to end: `qstore-cluster up` with its manager, clients given every broker's URL, and kill -9
of the primary while messages flow (the seed's 1.12.1.1 and 1.12.8).

a) qstore.client: a numbered sender and a concurrent receiver survive three primary kills in a
   row; every number the sender had acknowledged is received (duplicates allowed, counted), and
   the cluster ends with one active primary and two ready backups.
b) A stock proton Container client across one fail-over: it moves to the new primary by itself but
   re-sends nothing, so what was in flight at the kill may be lost. It was never accepted, so the
   cluster's guarantee holds: nothing accepted is lost, nothing is duplicated.

The cluster requires a login, as `make run`'s does: both clients log in as its `admin`.

The manager runs as a child process in its own process group; it is stopped by pid in a fixture's
finally (SIGTERM, then SIGKILL of its group, then SIGKILL of any broker it left behind: brokers
run in sessions of their own). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from proton import Event, Message
from proton.handlers import MessagingHandler
from proton.reactor import Container

from qstore.client import Connection, Empty
from recovery.localcluster import LocalCluster, consecutive_free_ports

T = 30.0  # bound on each wait for the cluster or a client across a fail-over
RATE = 1000  # msg/s of each sender: load without starving the manager's status polls


def address(queue: str) -> str:
    """A durable queue replicated to every backup, created by the first link to it."""
    args = "{arguments: {'qpid.replicate': all}}"
    return f"{queue}; {{create: always, node: {{durable: True, x-declare: {args}}}}}"


def until(pred: Callable[[], object], what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def managed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), consecutive_free_ports(3), recovery_wait=5)
    try:
        c.whole(T)
        yield c
    finally:
        c.stop()


# -- a) qstore.client through three primary kills ---------------------------------------------


def test_client_loses_nothing_acknowledged_across_three_primary_kills(
    managed: LocalCluster,
) -> None:
    c = managed
    urls = c.addresses
    opts: dict[str, Any] = dict(
        reconnect=True, reconnect_urls=urls, heartbeat=0.5, reconnect_interval_max=0.25,
        **c.client_options(),
    )  # fmt: skip
    producer = Connection.establish(urls[0], timeout=T, **opts)
    consumer = Connection.establish(urls[0], timeout=T, **opts)
    stop = threading.Event()
    done_sending = threading.Event()
    failures: list[BaseException] = []
    received: Counter[int] = Counter()
    try:
        snd = producer.session().sender(address("e2e-client"), capacity=500, timeout=T)
        rssn = consumer.session()
        rcv = rssn.receiver(address("e2e-client"), capacity=50, timeout=T)

        def produce() -> None:
            try:
                n, t0 = 0, time.monotonic()
                while not stop.is_set():
                    snd.send(Message(body=n, durable=True), sync=False, timeout=T)
                    n += 1
                    ahead = n / RATE - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                snd.sync(timeout=T)  # now every number sent is acknowledged
            except BaseException as exc:
                failures.append(exc)
            finally:
                done_sending.set()

        def consume() -> None:
            try:
                while not (done_sending.is_set() and set(received) >= set(range(snd.sent))):
                    with contextlib.suppress(Empty):
                        received[rcv.fetch(timeout=0.2).body] += 1
                        rssn.acknowledge()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=f, daemon=True) for f in (produce, consume)]
        for t in threads:
            t.start()
        killed = []
        for _ in range(3):
            states = c.whole(T)  # the next backup is ready again
            acked = snd.acknowledged
            until(lambda a=acked: snd.acknowledged >= a + 200 or failures, "acks on this primary")
            assert not failures, failures
            primary = states.index("active")
            c.kill(primary)
            killed.append(primary)
        c.whole(T)
        acked = snd.acknowledged
        until(lambda: snd.acknowledged >= acked + 200 or failures, "acks on the last primary")
        stop.set()
        threads[0].join(T)
        assert not threads[0].is_alive(), "the sender did not finish"
        assert not failures, failures
        assert snd.unsettled == 0 and snd.acknowledged == snd.sent
        threads[1].join(T)
        assert not threads[1].is_alive(), (
            f"the receiver still misses {sorted(set(range(snd.sent)) - set(received))[:20]}"
        )
        assert not failures, failures

        dup = sum(k - 1 for k in received.values())
        print(
            f"\nqstore.client across kills of node{killed}: sent {snd.sent}, acknowledged "
            f"{snd.acknowledged}, re-sent {snd.resent}, received {len(received)} distinct, "
            f"{dup} duplicates, reconnects producer {producer.reconnects} consumer "
            f"{consumer.reconnects}"
        )
        assert set(received) == set(range(snd.sent)), "a gap, or a number never sent"
        assert producer.reconnects >= 3 and consumer.reconnects >= 3
        states = c.whole(T)
        assert sorted(s or "" for s in states) == ["active", "ready", "ready"]
    finally:
        stop.set()
        done_sending.set()
        for conn in (producer, consumer):
            conn.close(timeout=5)


# -- b) a stock proton Container client across one fail-over -----------------------------------


class StockSender(MessagingHandler):
    """Sends numbered durable messages at RATE (tag = the number) with stock proton fail-over
    (`connect(urls=...)`, default reconnect); records for each number the connection it was sent
    on (1, 2, ...; 0: sent while disconnected) and what was accepted. Runs on the Container's
    thread; the test reads its fields."""

    TICK = 0.02

    def __init__(self, urls: list[str], queue: str, login: dict[str, Any]) -> None:
        super().__init__()
        self.urls = urls
        self.queue = queue
        self.login = login  # user, password, allowed_mechs for Container.connect
        self.generation = 0  # connections opened so far
        self.connected = False
        self.sent: dict[int, int] = {}  # number -> generation it was sent on (0: disconnected)
        self.accepted: list[int] = []
        self.others: list[tuple[str, int]] = []  # any outcome but accepted
        self.pause = threading.Event()  # stop sending (the connection stays)
        self.finish = threading.Event()  # close the connection and end run()
        self.next = 0

    def on_start(self, event: Event) -> None:
        self.conn = event.container.connect(urls=self.urls, heartbeat=2, **self.login)
        self.link = event.container.create_sender(self.conn, self.queue)
        event.container.schedule(self.TICK, self)

    def on_connection_opened(self, event: Event) -> None:
        self.generation += 1
        self.connected = True

    def on_disconnected(self, event: Event) -> None:
        self.connected = False

    def on_timer_task(self, event: Event) -> None:
        if self.finish.is_set():
            self.conn.close()
            return
        budget = int(RATE * self.TICK)
        # while disconnected proton keeps the old link's credit: sends are queued on the link
        while budget and not self.pause.is_set() and self.link.credit > 0:
            n = self.next
            self.link.send(Message(body=n, durable=True), tag=str(n))
            self.sent[n] = self.generation if self.connected else 0
            self.next += 1
            budget -= 1
        event.container.schedule(self.TICK, self)

    def on_accepted(self, event: Event) -> None:
        self.accepted.append(int(event.delivery.tag))

    def on_rejected(self, event: Event) -> None:
        self.others.append(("rejected", int(event.delivery.tag)))

    def on_released(self, event: Event) -> None:
        self.others.append(("released", int(event.delivery.tag)))


END = "end of the queue"  # the marker `drain` sends last and reads up to


def drain(urls: list[str], queue: str, login: dict[str, Any]) -> list[int]:
    """Every number on `queue`, in order, acknowledged. A marker is sent last and read up to (the
    queue is FIFO), so the end is known, not guessed from a silence; a fetch that waits T for the
    next message fails the test, saying how many came."""
    conn = Connection.establish(urls[0], reconnect=True, reconnect_urls=urls, timeout=T, **login)
    got: list[int] = []
    try:
        ssn = conn.session()
        ssn.sender(address(queue), timeout=T).send(Message(body=END, durable=True), timeout=T)
        rcv = ssn.receiver(address(queue), capacity=200, timeout=T)
        while True:
            try:
                body = rcv.fetch(timeout=T).body
            except Empty:
                raise AssertionError(f"no end marker after {len(got)} messages") from None
            ssn.acknowledge()
            if body == END:
                return got
            got.append(body)
    finally:
        conn.close(timeout=5)


def test_stock_container_fails_over_and_resends_nothing(managed: LocalCluster) -> None:
    c = managed
    states = c.whole(T)
    h = StockSender(c.addresses, "e2e-stock", c.proton_options())
    container = Container(h)
    thread = threading.Thread(target=container.run, name="stock-container", daemon=True)
    thread.start()
    try:
        until(lambda: len(h.accepted) >= 300, "accepts from the first primary")
        c.kill(states.index("active"))
        t_kill = time.monotonic()
        until(lambda: h.generation >= 2, "the Container to reconnect")
        print(f"\nstock Container reconnected {time.monotonic() - t_kill:.2f}s after the kill")
        until(
            lambda: sum(1 for n in h.accepted if h.sent[n] >= 2) >= 300,
            "accepts from the new primary",
        )
        h.pause.set()
        time.sleep(3 * StockSender.TICK)  # the timer has seen `pause`: `sent` is final
        queued = {n for n, g in h.sent.items() if g != 1}  # sent while disconnected, or after
        until(lambda: queued <= set(h.accepted), "everything sent since the kill accepted")
    finally:
        h.finish.set()
        thread.join(10)
    assert not thread.is_alive(), "the Container did not stop"

    c.whole(T)  # the restarted broker is ready: drain from a quiet primary
    got = drain(c.addresses, "e2e-stock", c.client_options())
    counts = Counter(got)
    accepted = set(h.accepted)
    old = {n for n, g in h.sent.items() if g == 1}  # written to the primary that was killed
    in_doubt = old - accepted  # in flight at the kill: never settled
    arrived = in_doubt & set(counts)
    between = sum(1 for g in h.sent.values() if g == 0)
    print(
        f"stock Container: sent {len(h.sent)} ({len(old)} to the killed primary, {between} "
        f"while disconnected, {len(h.sent) - len(old) - between} to the new one), accepted "
        f"{len(accepted)}; in flight at the kill {len(in_doubt)}: {len(arrived)} arrived (a "
        f"backup had them), {len(in_doubt - arrived)} lost, none re-sent; duplicates "
        f"{sum(k - 1 for k in counts.values())}; other outcomes {len(h.others)}"
    )
    assert not h.others
    assert len(h.accepted) == len(accepted), "an outcome twice for one message"
    assert accepted <= set(counts), f"accepted and lost: {sorted(accepted - set(counts))[:20]}"
    assert set(counts) <= set(h.sent), "a number that was never sent"
    assert max(counts.values()) == 1, "a duplicate: something was sent twice"
    # Nothing re-sent: what was in flight at the kill never got an outcome, although the link
    # came back and everything sent since (queued while disconnected, or new) was accepted.
    assert queued <= accepted and not (in_doubt & accepted)
    assert set(h.sent) - set(counts) <= in_doubt, "lost something not in flight at the kill"
