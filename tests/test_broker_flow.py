"""Producer flow control through a real qstored and stock proton clients (#11).

A producer here sends only on the credit the broker grants (what every proton sender does) and
keeps its deliveries, so a test sees both sides: where the producer stalls (its credit runs out and
is not refilled) and that nothing it sent was refused or lost. The model's decisions have their
own sans-I/O tests (test_model_flow.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from broker_clients import Mgmt, outcome
from broker_harness import Brokers
from flow_clients import QUIET, Producer, T, take
from proton import Delivery, Message
from proton.utils import BlockingConnection
from security_support import wait_for_log

ROOT = Path(__file__).resolve().parent.parent


def queue(url: str, name: str) -> dict[str, Any]:
    with Mgmt(url) as m:
        reply = m.call("READ", "queue", name)
        assert reply.code == 200, reply
        return reply.body


def alarm(url: str) -> bool:
    """The broker's memory alarm, as management reports it."""
    with Mgmt(url) as m:
        reply = m.call("READ", "broker")
    assert reply.code == 200, reply
    return bool(reply.body["statistics"]["memory_alarm"])


def stat(url: str, *view: str) -> list[dict[str, Any]]:
    """qstore-stat as a user runs it."""
    p = subprocess.run(
        [sys.executable, "-m", "tools.qstore_stat", "--broker", url, *view, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_a_producer_stalls_at_the_stop_mark_and_goes_on_once_drained(brokers: Brokers) -> None:
    b = brokers.start(args=["--auto-create", "yes"])
    with Mgmt(b.url) as m:
        m.create_queue("q", durable=True, arguments={"qpid.max_count": 200})
    p = Producer(b.url, "q")
    rc = BlockingConnection(b.url, timeout=T)

    def stopped() -> bool:
        return bool(queue(b.url, "q")["flowStopped"])

    try:
        n = p.send_on_credit(600, held=stopped)
        # held past 80% (160), and its window (the 40 between the marks) kept it off the limit
        assert 160 < n <= 200, n
        assert p.credit == 0 and p.states() == {Delivery.ACCEPTED}  # stalled, nothing refused
        q = queue(b.url, "q")
        assert (q["depth"], q["flowStopped"], q["flowStoppedCount"]) == (n, True, 1)
        line = wait_for_log(b, "queue 'q' flow-stopped at 161 messages")
        assert f"broker={b.url}" in line and "stops above 160 messages, resumes below 140" in line
        [row] = [r for r in stat(b.url, "-q") if r["name"] == "q"]
        assert row["flowStopped"] is True and row["flowStoppedCount"] == 1

        r = rc.create_receiver("q")
        got = take(r, n - 140)  # 140 left: not below the resume mark yet
        assert not p.credited_within(QUIET)
        got += take(r, 1)  # 139
        assert p.credited_within(T)  # credit again at once
        assert "queue 'q' flow resumed at 139 messages" in wait_for_log(b, "flow resumed")
        deadline = time.monotonic() + 60
        while len(got) < 600:
            assert time.monotonic() < deadline, (p.sent, len(got), queue(b.url, "q"))
            if p.send_on_credit(600, held=stopped) == 600:
                p.states()  # every outcome back: all of them reached the broker
            got += take(r, queue(b.url, "q")["depth"])
        assert got == [f"m{i}" for i in range(600)]  # in order, none lost, none twice
        assert p.states() == {Delivery.ACCEPTED}
        assert queue(b.url, "q")["depth"] == 0
    finally:
        rc.close()
        p.close()


def test_ring_and_reject_keep_their_meaning_at_the_limit(brokers: Brokers) -> None:
    b = brokers.start(args=["--auto-create", "yes"])
    with Mgmt(b.url) as m:
        m.create_queue("ring", arguments={"qpid.max_count": 50, "qpid.policy_type": "ring"})
        m.create_queue("rej", arguments={"qpid.max_size": 10000})
        m.create_queue("rej-noflow", arguments={"qpid.max_count": 10, "qpid.flow_stop_count": 0})
    ring = Producer(b.url, "ring")
    conn = BlockingConnection(b.url, timeout=T)
    try:
        assert ring.send_on_credit(300) == 300  # never held: a ring queue drops the oldest
        assert ring.states() == {Delivery.ACCEPTED}
        q = queue(b.url, "ring")
        assert (q["depth"], q["flowStopped"], q["flowStoppedCount"]) == (50, False, 0)
        r = conn.create_receiver("ring")
        assert take(r, 50) == [f"m{i}" for i in range(250, 300)]

        # under the stop mark, a message that would pass the limit is still refused
        rej = conn.create_sender("rej")
        assert outcome(conn, rej, Message(body=b"x" * 7000)).state == Delivery.ACCEPTED
        big = outcome(conn, rej, Message(body=b"x" * 5000))
        assert big.state == Delivery.REJECTED
        assert big.condition == "amqp:resource-limit-exceeded"
        assert "queue 'rej' is full" in (big.description or "")
        assert queue(b.url, "rej")["flowStopped"] is False

        # flow control turned off: the limit rejects, as before flow control existed
        noflow = conn.create_sender("rej-noflow")
        for i in range(10):
            assert outcome(conn, noflow, Message(body=i)).state == Delivery.ACCEPTED
        over = outcome(conn, noflow, Message(body=10))
        assert (over.state, over.condition) == (Delivery.REJECTED, "amqp:resource-limit-exceeded")
    finally:
        conn.close()
        ring.close()


def test_an_exchange_producer_is_held_while_its_messages_reach_a_stopped_queue(
    brokers: Brokers,
) -> None:
    b = brokers.start(args=["--auto-create", "yes"])
    with Mgmt(b.url) as m:
        m.create_exchange("x", "direct")
        m.create_queue("slow", arguments={"qpid.max_count": 100})
        m.create_queue("copy")
        m.create_queue("other")
        m.bind("x", "slow", "k")
        m.bind("x", "copy", "k")
        m.bind("x", "other", "o")
    held = Producer(b.url, "x", subject="k")
    free = Producer(b.url, "x", subject="o")
    rc = BlockingConnection(b.url, timeout=T)
    try:
        n = held.send_on_credit(1000, held=lambda: queue(b.url, "slow")["flowStopped"])
        assert 80 < n <= 100, n
        assert held.states() == {Delivery.ACCEPTED}
        assert queue(b.url, "copy")["depth"] == n  # the fan-out reached both
        assert queue(b.url, "slow")["flowStopped"] is True
        # a producer on the same exchange whose messages never reach the stopped queue goes on
        assert free.send_on_credit(1000) == 1000
        assert free.states() == {Delivery.ACCEPTED}
        assert not held.credited_within(QUIET)
        r = rc.create_receiver("slow")
        take(r, n - 69)  # 69 < 70
        assert held.credited_within(T)
        assert held.send_on_credit(n + 10) == n + 10
    finally:
        rc.close()
        free.close()
        held.close()


def test_max_memory_holds_every_producer_and_lets_them_go(brokers: Brokers) -> None:
    b = brokers.start(
        args=["--auto-create", "yes", "--max-memory", "64K", "--default-queue-limit", "0"]
    )
    producers = [
        Producer(b.url, "a", durable=False, pad=1024),
        Producer(b.url, "b", durable=False, pad=1024),
        Producer(b.url, None, durable=False, pad=1024, address="b"),  # the anonymous relay
    ]
    rc = BlockingConnection(b.url, timeout=T)
    try:
        total = 5000
        for p in producers:
            p.send_on_credit(total, held=lambda: alarm(b.url))
        for p in producers:  # a window past the alarm at most, then held: nothing refused
            assert 0 < p.sent < total and p.credit == 0, (p.sent, p.credit)
            assert p.states() == {Delivery.ACCEPTED}
        line = wait_for_log(b, "memory alarm raised")
        assert f"broker={b.url}" in line and "above --max-memory 65536" in line
        [broker] = stat(b.url, "-b")
        st = broker["statistics"]
        assert (st["max_memory"], st["memory_alarm"], st["memory_alarm_count"]) == (65536, True, 1)
        assert st["bytes"] > 65536

        late = Producer(b.url, "a", durable=False)  # attached during the alarm: no credit
        producers.append(late)
        assert late.credit == 0 and not late.credited_within(QUIET)
        ra, rb = rc.create_receiver("a"), rc.create_receiver("b")
        got_a = take(ra, queue(b.url, "a")["depth"])
        assert not any(p.credited_within(0.1) for p in producers)  # b alone holds too much
        got_b = take(rb, queue(b.url, "b")["depth"])
        for p in producers:
            assert p.credited_within(T)
        assert "memory alarm cleared" in wait_for_log(b, "memory alarm cleared")
        assert len(got_a) == producers[0].sent and late.sent == 0
        assert len(got_b) == producers[1].sent + producers[2].sent
        [broker] = stat(b.url, "-b")
        assert broker["statistics"]["memory_alarm"] is False
        assert b.log().count("memory alarm raised") == 1
    finally:
        rc.close()
        for p in producers:
            p.close()


def test_max_memory_as_a_share_and_bad_values(brokers: Brokers, tmp_path: Path) -> None:
    b = brokers.start(args=["--max-memory", "25%"])
    line = wait_for_log(b, "memory limit:")
    assert "(--max-memory 25%)" in line and "default queue limit 104857600 bytes" in line
    [broker] = stat(b.url, "-b")
    assert broker["statistics"]["max_memory"] > 0
    p = subprocess.run(
        [sys.executable, "-m", "broker.main", "--max-memory", "0.5", "--data-dir",
         str(tmp_path / "d"), "--default-queue-limit", "lots"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == (
        "qstored: error: --default-queue-limit: invalid value 'lots': expected a size in bytes, "
        "e.g. 1048576, 512K, 64MiB or 16GiB"
    )


def test_default_queue_limit_flow_stops_a_queue_that_set_none(brokers: Brokers) -> None:
    b = brokers.start(args=["--auto-create", "yes", "--default-queue-limit", "100K"])
    p = Producer(b.url, "q", durable=False, pad=1000)  # made on attach, no limit of its own
    try:
        n = p.send_on_credit(1000, held=lambda: queue(b.url, "q")["flowStopped"])
        stop = int(100 * 1024 * 0.8 + 0.5)
        q = queue(b.url, "q")
        assert q["flowStopped"] and stop < q["bytes"] <= 100 * 1024, q
        assert n == q["depth"] and p.states() == {Delivery.ACCEPTED}
        assert q["arguments"] == {}  # a setting: not written into the queue's arguments
    finally:
        p.close()
