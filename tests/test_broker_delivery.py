"""Deliveries through a real qstored and stock proton clients: credit, competing consumers,
browsing, the outcomes (released, modified, rejected), redelivery after a consumer dies,
at-most-once both ways, large messages, addresses that do not exist or are created on demand,
and delivery counts across a restart.

Receivers made with `credit=0` pull one message per `receive()` (the link gets credit 1 only when
it has none), so what the broker sends next is exactly what the test asks for. Closing a
connection is the barrier that makes sure the broker has seen every outcome sent on it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from broker_clients import (
    QUIET,
    TIMEOUT,
    CreateOnDemand,
    Mgmt,
    Step,
    depth,
    drain,
    fetch,
    outcome,
    run_container,
    send,
    settle,
    take,
    wait_for,
)
from proton import Delivery, Message
from proton.handlers import MessagingHandler
from proton.reactor import AtMostOnce, Copy, DynamicNodeProperties
from proton.utils import BlockingConnection, LinkDetached

NOT_FOUND = "amqp:not-found"


@pytest.fixture
def broker(brokers: Any) -> Any:
    return brokers.start()


def queue_with(url: str, name: str, bodies: list[Any], *, durable: bool = False) -> None:
    """A new queue holding `bodies`. The messages are sent with first-acquirer true (the AMQP
    default is false) so that a consumer sees when the broker rewrote it for a redelivery."""
    with Mgmt(url) as m:
        m.create_queue(name, durable=durable)
    send(url, name, [Message(body=b, durable=durable, first_acquirer=True) for b in bodies])


# -- credit and consumers -----------------------------------------------------------------------


class CreditReceiver(MessagingHandler):
    """Grants 3 credits; once 3 have come, watches a while that no more do, then grants 2."""

    def __init__(self, url: str) -> None:
        super().__init__(prefetch=0)
        self.url = url
        self.got: list[Any] = []
        self.after_first_grant: list[Any] | None = None

    def on_start(self, event: Any) -> None:
        conn = event.container.connect(self.url)
        self.receiver = event.container.create_receiver(conn, "credit")
        self.receiver.flow(3)

    def on_message(self, event: Any) -> None:
        self.got.append(event.message.body)
        if len(self.got) == 3:
            event.container.schedule(QUIET, Step(self.grant_more))
        elif len(self.got) == 5:
            event.connection.close()  # after the accepts of everything received

    def grant_more(self, event: Any) -> None:
        self.after_first_grant = list(self.got)
        self.receiver.flow(2)

    def on_connection_closed(self, event: Any) -> None:
        event.container.stop()


def test_receiver_gets_no_more_than_its_credit(broker: Any) -> None:
    queue_with(broker.url, "credit", list(range(10)))
    handler = CreditReceiver(broker.url)
    run_container(handler)
    assert handler.after_first_grant == [0, 1, 2]
    assert handler.got == [0, 1, 2, 3, 4]
    assert depth(broker.url, "credit") == 5


class CompetingConsumers(MessagingHandler):
    """Two consumers with credit 3 each on one queue; a sender then sends 6 messages."""

    def __init__(self, url: str) -> None:
        super().__init__(prefetch=0)
        self.url = url
        self.got: dict[str, list[Any]] = {"a": [], "b": []}
        self.opened = 0

    def on_start(self, event: Any) -> None:
        conn = event.container.connect(self.url)
        for name in ("a", "b"):
            r = event.container.create_receiver(conn, "rr", name=name)
            r.flow(3)
        self.conn = conn

    def on_link_opened(self, event: Any) -> None:
        if event.receiver is not None:
            self.opened += 1
            if self.opened == 2:  # both have credit: the broker has seen the flows
                sender = event.container.create_sender(self.conn, "rr")
                for i in range(6):
                    sender.send(Message(body=i))

    def on_message(self, event: Any) -> None:
        self.got[event.receiver.name].append(event.message.body)
        if sum(map(len, self.got.values())) == 6:
            event.container.stop()


def test_competing_consumers_share_round_robin(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_queue("rr")
    handler = CompetingConsumers(broker.url)
    run_container(handler)
    assert sorted(handler.got.values()) == [[0, 2, 4], [1, 3, 5]]


def test_browsing_leaves_messages_on_the_queue(broker: Any) -> None:
    queue_with(broker.url, "browse", ["a", "b", "c"])
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        r = conn.create_receiver("browse", options=Copy())
        seen = [m.body for m in drain(r)]  # all the broker has for the browser
    finally:
        conn.close()
    assert seen == ["a", "b", "c"]
    assert fetch(broker.url, "browse") == ["a", "b", "c"]


# -- outcomes -----------------------------------------------------------------------------------


def test_released_messages_return_to_their_place(broker: Any) -> None:
    queue_with(broker.url, "rel", list(range(5)))
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        r = conn.create_receiver("rel", credit=0)
        held = [take(r) for _ in range(4)]
        settle(held[3][1], Delivery.RELEASED)
        settle(held[1][1], Delivery.RELEASED)
        settle(held[0][1], Delivery.ACCEPTED)
        settle(held[2][1], Delivery.ACCEPTED)
    finally:
        conn.close()
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        r = conn.create_receiver("rel", credit=0)
        again = [take(r) for _ in range(3)]
        for _, d in again:
            settle(d, Delivery.ACCEPTED)
    finally:
        conn.close()
    assert [m.body for m, _ in again] == [1, 3, 4]
    # Released is not a failed delivery: the count stays, but the message was acquired before.
    assert [m.delivery_count for m, _ in again] == [0, 0, 0]
    assert [m.first_acquirer for m, _ in again] == [False, False, True]


def test_modified_delivery_failed_counts_a_redelivery(broker: Any) -> None:
    queue_with(broker.url, "mod", ["m0", "m1"])
    for _ in range(2):
        conn = BlockingConnection(broker.url, timeout=TIMEOUT)
        try:
            r = conn.create_receiver("mod", credit=0)
            m, d = take(r)
            assert m.body == "m0"
            settle(d, Delivery.MODIFIED, failed=True)
        finally:
            conn.close()
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        r = conn.create_receiver("mod", credit=0)
        got = [take(r) for _ in range(2)]
        for _, d in got:
            settle(d, Delivery.ACCEPTED)
    finally:
        conn.close()
    (m0, _), (m1, _) = got
    assert (m0.body, m0.delivery_count, m0.first_acquirer) == ("m0", 2, False)
    assert (m1.body, m1.delivery_count, m1.first_acquirer) == ("m1", 0, True)


def test_rejected_message_is_dropped(broker: Any) -> None:
    queue_with(broker.url, "rej", ["bad", "good"])
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        r = conn.create_receiver("rej", credit=0)
        m, d = take(r)
        settle(d, Delivery.REJECTED)
    finally:
        conn.close()
    assert m.body == "bad"
    assert fetch(broker.url, "rej") == ["good"]


def test_settled_without_an_outcome_counts_as_accepted(broker: Any) -> None:
    queue_with(broker.url, "noout", ["done", "next"])
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        r = conn.create_receiver("noout", credit=0)
        m, d = take(r)
        d.settle()  # no outcome: the client is done with it

        def acquired() -> int:
            conn.container.process()  # the settlement goes out with the connection's I/O
            return int(mg.call("READ", "queue", "noout").body["acquired"])

        with Mgmt(broker.url) as mg:  # gone while the consumer is still there, not stuck on it
            wait_for(lambda: acquired() == 0)
            assert mg.call("READ", "queue", "noout").body["depth"] == 1
    finally:
        conn.close()
    assert m.body == "done"
    assert fetch(broker.url, "noout") == ["next"]


CONSUMER = """
import sys
from proton.utils import BlockingConnection
conn = BlockingConnection(sys.argv[1], timeout=10)
n = int(sys.argv[3])
# Exactly n credits: a prefetch window would be topped up as messages arrive, and receive()
# grants one more whenever the link has none left, so how many arrive would depend on timing.
r = conn.create_receiver(sys.argv[2], credit=0)
r.link.flow(n)
conn.wait(lambda: len(r.fetcher.incoming) >= n, timeout=10)
print("holding", flush=True)
sys.stdin.read()  # never settles; the test kills this process
"""


def test_unsettled_messages_come_back_when_the_consumer_dies(broker: Any) -> None:
    queue_with(broker.url, "crash", ["c0", "c1", "c2", "c3"])
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, broker.url, "crash", "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = _readline(proc, TIMEOUT)
        assert line.strip() == "holding"
        with Mgmt(broker.url) as m:
            assert m.call("READ", "queue", "crash").body["acquired"] == 3
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)
        # The broker sees the socket close on its own time; wait until it took them back.
        with Mgmt(broker.url) as m:
            wait_for(lambda: m.call("READ", "queue", "crash").body["acquired"] == 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        r = conn.create_receiver("crash", credit=0)
        got = [take(r) for _ in range(4)]
        for _, d in got:
            settle(d, Delivery.ACCEPTED)
    finally:
        conn.close()
    assert [m.body for m, _ in got] == ["c0", "c1", "c2", "c3"]
    assert [m.delivery_count for m, _ in got] == [1, 1, 1, 0]
    assert [m.first_acquirer for m, _ in got] == [False, False, False, True]


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of the child's output, or fail after `timeout` (the child is killed)."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            raise AssertionError(f"consumer printed nothing within {timeout}s")
    return proc.stdout.readline()


# -- settlement modes and sizes -----------------------------------------------------------------


def test_presettled_sender_and_receiver(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_queue("amo")
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        s = conn.create_sender("amo", options=AtMostOnce())
        for i in range(3):
            s.send(Message(body=i))
        r = conn.create_receiver("amo", credit=10, options=AtMostOnce())
        got = [r.receive(timeout=TIMEOUT) for _ in range(3)]
        assert not r.fetcher.unsettled  # nothing to settle: they came settled
    finally:
        conn.close()
    assert [m.body for m in got] == [0, 1, 2]
    # Sent pre-settled, they were dequeued as they went: closing without any outcome lost them.
    with Mgmt(broker.url) as m:
        q = m.call("READ", "queue", "amo").body
        assert (q["depth"], q["enqueues"], q["dequeues"]) == (0, 3, 3)


def test_large_messages_cross_in_several_frames(broker: Any) -> None:
    with Mgmt(broker.url) as m:
        m.create_queue("big", durable=True)
    blobs = [os.urandom(1 << 20), bytes(range(256)) * 8192]
    send(broker.url, "big", [Message(body=b, durable=True) for b in blobs])
    assert fetch(broker.url, "big") == blobs


# -- addresses ----------------------------------------------------------------------------------


def test_unknown_address_is_refused_with_not_found(broker: Any) -> None:
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        with pytest.raises(LinkDetached, match=NOT_FOUND):
            conn.create_receiver("no-such-queue")
        with pytest.raises(Exception, match=NOT_FOUND):
            conn.create_sender("no-such-queue")
    finally:
        conn.close()
    with Mgmt(broker.url) as m:
        assert m.call("READ", "queue", "no-such-queue").code == 404


def test_create_on_demand_with_node_properties(broker: Any) -> None:
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        props = DynamicNodeProperties({"durable": True, "qpid.replicate": "all"})
        s = conn.create_sender("made", options=[CreateOnDemand(), props])
        assert outcome(conn, s, Message(body="first", durable=True)).state == Delivery.ACCEPTED
        plain = DynamicNodeProperties({"durable": False})
        conn.create_receiver("made-transient", options=[CreateOnDemand(), plain])
        bad = DynamicNodeProperties({"qpid.replicate": "sometimes"})
        with pytest.raises(LinkDetached, match=r"qpid\.replicate"):
            conn.create_sender("made-bad", options=[CreateOnDemand(), bad])
    finally:
        conn.close()
    with Mgmt(broker.url) as m:
        q = m.call("READ", "queue", "made").body
        assert q["durable"] is True
        assert q["arguments"] == {"qpid.replicate": "all"}
        assert q["depth"] == 1
        assert m.call("READ", "queue", "made-transient").body["durable"] is False
        assert m.call("READ", "queue", "made-bad").code == 404


# -- restart ------------------------------------------------------------------------------------


def test_delivery_counts_and_order_survive_a_restart(brokers: Any) -> None:
    b = brokers.start()
    queue_with(b.url, "dc", ["d0", "d1", "d2", "d3"], durable=True)
    for failed in (["d0", "d2"], ["d2"]):
        conn = BlockingConnection(b.url, timeout=TIMEOUT)
        try:
            r = conn.create_receiver("dc", credit=0)
            for m, d in [take(r) for _ in range(3)]:
                if m.body in failed:
                    settle(d, Delivery.MODIFIED, failed=True)
                else:
                    settle(d, Delivery.RELEASED)
        finally:
            conn.close()
    assert b.terminate() == 0
    b2 = brokers.start(data_dir=b.data_dir)
    conn = BlockingConnection(b2.url, timeout=TIMEOUT)
    try:
        r = conn.create_receiver("dc", credit=0)
        got = [take(r) for _ in range(4)]
        for _, d in got:
            settle(d, Delivery.ACCEPTED)
    finally:
        conn.close()
    assert [m.body for m, _ in got] == ["d0", "d1", "d2", "d3"]
    assert [m.delivery_count for m, _ in got] == [1, 0, 2, 0]
    # Only the count is journaled: a message released without a failure looks new after a restart.
    assert [m.first_acquirer for m, _ in got] == [False, True, False, True]
