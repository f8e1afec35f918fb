"""qstore.client against a real 3-broker HA cluster: finding the primary past backups, fail-over
after kill -9 and promotion with nothing acknowledged lost, and heartbeats noticing a primary that
is alive but silent (SIGSTOP).

Every wait is bounded; the cluster harness kills every broker at the end, and a stopped broker is
continued in a finally.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter

from proton import Message

from qstore.client import Connection, Empty

T = 20.0  # bound on each blocking call across a fail-over
N = 300  # numbered messages
QUEUE = "numbers; {create: always, node: {durable: True, x-declare: {arguments: {'qpid.replicate': all}}}}"  # noqa: E501


def test_fail_over_loses_nothing_acknowledged(cluster) -> None:
    c = cluster(3, auth=True)  # the client logs in again on every broker it tries
    # Backups first: the client must walk past them (they drop the socket) to the primary.
    urls = [c.address(1), c.address(2), c.address(0)]
    options = dict(
        reconnect=True, reconnect_urls=urls, heartbeat=2, reconnect_interval_max=0.5,
        **c.client_options(),
    )  # fmt: skip
    producer = Connection.establish(urls[0], timeout=T, **options)
    consumer = Connection.establish(urls[0], timeout=T, **options)
    stop = threading.Event()
    failures: list[BaseException] = []
    acked_through = [-1]  # every number up to this one was acknowledged by the cluster
    received: Counter[int] = Counter()
    try:
        assert producer.url == c.address(0) and consumer.url == c.address(0)
        snd = producer.session().sender(QUEUE, capacity=50, timeout=T)
        rssn = consumer.session()
        rcv = rssn.receiver(QUEUE, capacity=20, timeout=T)

        def produce() -> None:
            try:
                for i in range(N):
                    sync = i % 10 == 9
                    snd.send(Message(body=i, durable=True), sync=sync, timeout=T)
                    if sync:
                        acked_through[0] = i
                snd.sync(timeout=T)
                acked_through[0] = N - 1
            except BaseException as exc:
                failures.append(exc)

        def consume() -> None:
            try:
                while not stop.is_set():
                    with contextlib.suppress(Empty):
                        received[rcv.fetch(timeout=0.2).body] += 1
                        rssn.acknowledge()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
        for t in threads:
            t.start()
        _until(lambda: acked_through[0] >= N // 3 or failures, "a third acknowledged")
        c.kill(0)  # kill -9 the primary in the middle of the stream
        code, desc = c.promote(1)
        assert code == 200, desc
        threads[0].join(T * 2)
        assert not threads[0].is_alive(), "the sender did not finish"
        assert not failures, failures
        assert acked_through[0] == N - 1 and snd.unsettled == 0
        _until(lambda: set(received) >= set(range(N)) or failures, "every number received")
        stop.set()
        threads[1].join(T)
        assert not failures, failures
        assert producer.url == c.address(1) and producer.reconnects >= 1
        assert sorted(received) == list(range(N))  # no gaps, nothing unexpected
        duplicates = sum(received.values()) - N
        print(f"resent={snd.resent} duplicates={duplicates}")  # counted, allowed (seed 1.12.1.1)
    finally:
        stop.set()
        producer.close(timeout=2)
        consumer.close(timeout=2)


def test_heartbeat_detects_stopped_primary(cluster) -> None:
    c = cluster(3)
    heartbeat = 1.0
    urls = [c.address(i) for i in range(3)]
    conn = Connection.establish(
        urls[0], reconnect=True, reconnect_urls=urls, heartbeat=heartbeat, timeout=T
    )
    pid = c.members[0].pid
    stopped = False
    try:
        snd = conn.session().sender("hb; {create: always}", timeout=T)
        snd.send(Message(body="before"), timeout=T)
        os.kill(pid, signal.SIGSTOP)  # alive to TCP, silent to AMQP
        stopped = True
        t0 = time.monotonic()
        _until(lambda: not conn.connected, "the client notices", timeout=5 * heartbeat)
        noticed = time.monotonic() - t0
        # the seed's promise: no later than twice the heartbeat (plus scheduling slack)
        assert noticed <= 2 * heartbeat + 1.5, noticed
        snd.send(Message(body="during"), sync=False, timeout=T)  # buffered while failing over
        c.kill(0)
        stopped = False
        code, desc = c.promote(1)
        assert code == 200, desc
        snd.sync(timeout=T)
        assert conn.url == c.address(1)
        rcv = conn.session().receiver("hb", timeout=T)
        assert [rcv.fetch(timeout=T).body for _ in range(2)] == ["before", "during"]
    finally:
        if stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        conn.close(timeout=2)


def _until(predicate, what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
