"""qstore.client against a real standalone qstored (no --auto-create: addresses must ask to create),
plus its pure parts: the address grammar and the reconnect policy.

Every blocking call has a timeout; broker processes are stopped by the harness, also on failure.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_clients import Mgmt, depth
from broker_harness import BrokerProcess, Brokers
from proton import Message
from security_support import PASSWORDS, start_secure

from qstore.client import (
    AddressError,
    AuthenticationError,
    Connection,
    ConnectionError,
    Empty,
    InsufficientCapacity,
    NotFound,
    SendError,
    parse,
)
from qstore.client.reconnect import GiveUp, ReconnectPolicy

T = 10.0  # bound on every blocking call


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the module's tests that do not stop it (each uses its own queue names)."""
    bs = Brokers(tmp_path_factory.mktemp("client"))
    try:
        yield bs.start()
    finally:
        bs.stop_all()


@pytest.fixture
def conn(broker: BrokerProcess) -> Iterator[Connection]:
    c = Connection.establish(broker.url, timeout=T)
    try:
        yield c
    finally:
        c.close(timeout=2)


def qname() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def create(name: str, options: str = "") -> str:
    return f"{name}; {{create: always{', ' + options if options else ''}}}"


def fetch_n(rcv, n: int) -> list:
    """The bodies of the next `n` messages, each within T; fails saying how many came."""
    out = []
    for _ in range(n):
        try:
            out.append(rcv.fetch(timeout=T).body)
        except Empty:
            raise AssertionError(f"{len(out)} of {n} messages came") from None
    return out


def wait_empty(url: str, queue: str) -> None:
    """`queue` ends up with nothing queued and nothing held by a consumer (the broker's depth
    counts acquired messages), once the acknowledgements, which the client sends without
    waiting, are in: the broker's count, not a receiver's silence, says nothing more is there."""
    deadline = time.monotonic() + T
    while (d := depth(url, queue)) != 0:
        assert time.monotonic() < deadline, f"the depth of {queue} is still {d}"
        time.sleep(0.05)


# -- against a broker ---------------------------------------------------------------------------


def test_round_trip_and_fetch_timeout(conn: Connection) -> None:
    q = qname()
    ssn = conn.session()
    snd = ssn.sender(create(q), timeout=T)
    for i in range(3):
        snd.send(Message(body=f"m{i}", properties={"i": i}), timeout=T)
    assert (snd.sent, snd.acknowledged, snd.unsettled, snd.resent) == (3, 3, 0, 0)
    rcv = ssn.receiver(q, timeout=T)
    got = [rcv.fetch(timeout=T) for _ in range(3)]
    assert [(m.body, m.properties["i"]) for m in got] == [("m0", 0), ("m1", 1), ("m2", 2)]
    ssn.acknowledge()
    t0 = time.monotonic()
    with pytest.raises(Empty):
        rcv.fetch(timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    with pytest.raises(Empty):
        rcv.fetch(timeout=0)


def test_sender_gives_each_message_an_id_and_leaves_the_applications_message_as_it_was(
    broker: BrokerProcess, conn: Connection
) -> None:
    q = qname()
    ssn = conn.session()
    dedup = "node: {x-declare: {arguments: {'qstore.dedup-window': 100}}}"
    snd = ssn.sender(create(q, dedup), timeout=T)
    m = Message(body="same object")
    snd.send(m, timeout=T)
    snd.send(m, timeout=T)  # the same object sent again is a new message: a new id
    assert m.id is None
    snd.send(Message(id="mine", body="own id"), timeout=T)
    snd.send(Message(id="mine", body="own id again"), timeout=T)  # the application's resend
    rcv = ssn.receiver(q, timeout=T)
    got = [rcv.fetch(timeout=T) for _ in range(3)]
    ssn.acknowledge()
    assert [g.body for g in got] == ["same object", "same object", "own id"]
    a, b = got[0].id, got[1].id
    assert isinstance(a, str) and a != b and a.rsplit(":", 1)[0] == b.rsplit(":", 1)[0]
    wait_empty(broker.url, q)


def test_sync_and_async_sends(broker: BrokerProcess, conn: Connection) -> None:
    q = qname()
    ssn = conn.session()
    snd = ssn.sender(create(q), capacity=50, timeout=T)
    for i in range(20):
        snd.send(Message(body=i), sync=False, timeout=T)
    snd.send(Message(body=20), sync=True, timeout=T)  # waits for this one and all before it
    assert snd.unsettled == 0 and snd.acknowledged == 21
    assert depth(broker.url, q) == 21  # each once: nothing more to fetch
    rcv = ssn.receiver(q, timeout=T)
    assert fetch_n(rcv, 21) == list(range(21))


def test_capacity_blocks_until_acknowledged(brokers: Brokers) -> None:
    b = brokers.start()
    conn = Connection.establish(b.url, timeout=T)
    stopped = False
    try:
        snd = conn.session().sender(create("cap"), capacity=2, timeout=T)
        os.kill(b.pid, signal.SIGSTOP)  # the broker acknowledges nothing while stopped
        stopped = True
        snd.send(Message(body=1), sync=False, timeout=T)
        snd.send(Message(body=2), sync=False, timeout=T)
        assert snd.unsettled == 2
        with pytest.raises(InsufficientCapacity):
            snd.send(Message(body=3), sync=False, timeout=0.2)
        assert snd.sent == 2
        os.kill(b.pid, signal.SIGCONT)
        stopped = False
        snd.send(Message(body=3), sync=True, timeout=T)
        assert (snd.unsettled, snd.acknowledged) == (0, 3)
    finally:
        if stopped:
            os.kill(b.pid, signal.SIGCONT)
        conn.close(timeout=2)


def test_acknowledge_one_then_all(broker: BrokerProcess, conn: Connection) -> None:
    q = qname()
    ssn = conn.session()
    snd = ssn.sender(create(q), timeout=T)
    for i in range(4):
        snd.send(Message(body=i), timeout=T)
    rcv = ssn.receiver(q, timeout=T)
    msgs = [rcv.fetch(timeout=T) for _ in range(4)]
    ssn.acknowledge(msgs[1])
    ssn.acknowledge(msgs[1])  # twice is harmless
    rcv.close()  # the broker puts back what was not acknowledged
    with Connection.establish(broker.url, timeout=T) as other:
        s2 = other.session()
        r2 = s2.receiver(q, timeout=T)
        assert [r2.fetch(timeout=T).body for _ in range(3)] == [0, 2, 3]
        s2.acknowledge()
        r2.close()
        wait_empty(broker.url, q)


def test_release_and_reject(broker: BrokerProcess, conn: Connection) -> None:
    q = qname()
    ssn = conn.session()
    snd = ssn.sender(create(q), timeout=T)
    for i in range(2):
        snd.send(Message(body=i), timeout=T)
    rcv = ssn.receiver(q, capacity=1, timeout=T)
    first = rcv.fetch(timeout=T)
    ssn.reject(first)  # gone for good
    second = rcv.fetch(timeout=T)
    ssn.release(second)  # comes again
    again = rcv.fetch(timeout=T)
    assert (first.body, second.body, again.body) == (0, 1, 1)
    ssn.acknowledge()
    wait_empty(broker.url, q)  # the rejected one is gone, the released one came once


def test_address_creates_durable_replicated_queue(brokers: Brokers) -> None:
    b = brokers.start()
    address = (
        "dq; {create: always, node: {durable: True, "
        "x-declare: {arguments: {'qpid.replicate': all, qpid.max_count: 100}}}}"
    )
    with Connection.establish(b.url, timeout=T) as c:
        c.session().sender(address, timeout=T).send(Message(body="kept", durable=True), timeout=T)
    m = Mgmt(b.url)
    try:
        read = m.call("READ", "queue", "dq")
    finally:
        m.conn.close()
    assert read.code == 200 and read.body["durable"] is True
    assert read.body["arguments"]["qpid.replicate"] == "all"
    assert read.body["arguments"]["qpid.max_count"] == 100
    b.kill()
    b = brokers.start(data_dir=b.data_dir)  # durable: the queue and the message are still there
    with Connection.establish(b.url, timeout=T) as c:
        assert c.session().receiver("dq", timeout=T).fetch(timeout=T).body == "kept"


def test_not_found_without_create(conn: Connection) -> None:
    ssn = conn.session()
    with pytest.raises(NotFound, match="amqp:not-found"):
        ssn.sender("no-such-queue", timeout=T)
    with pytest.raises(NotFound):
        ssn.receiver("no-such-queue; {create: sender}", timeout=T)  # create is for senders only
    assert ssn.senders == [] and ssn.receivers == []
    snd = ssn.sender(create(qname()), timeout=T)  # the session is still fine
    snd.send(Message(body=1), timeout=T)


def test_rejected_message_raises_send_error(conn: Connection) -> None:
    q = qname()
    opts = "node: {x-declare: {arguments: {'qpid.max_count': 1, 'qpid.policy_type': reject}}}"
    snd = conn.session().sender(create(q, opts), timeout=T)
    snd.send(Message(body="fits"), timeout=T)
    with pytest.raises(SendError, match="resource-limit-exceeded") as err:
        snd.send(Message(body="sync"), timeout=T)
    assert err.value.condition == "amqp:resource-limit-exceeded"
    assert err.value.message.body == "sync"
    snd.send(Message(body="async"), sync=False, timeout=T)  # refused later...
    with pytest.raises(SendError) as err:
        snd.sync(timeout=T)  # ...and reported here
    assert err.value.message.body == "async"
    snd.sync(timeout=T)  # reported once
    assert snd.acknowledged == 1


def test_browse_does_not_consume(broker: BrokerProcess, conn: Connection) -> None:
    q = qname()
    ssn = conn.session()
    snd = ssn.sender(create(q), timeout=T)
    for i in range(3):
        snd.send(Message(body=i), timeout=T)
    assert depth(broker.url, q) == 3  # all a browser can see
    browser = ssn.receiver(f"{q}; {{mode: browse}}", timeout=T)
    assert fetch_n(browser, 3) == [0, 1, 2]
    ssn.acknowledge()  # browsed messages need no acknowledgement: nothing happens
    assert fetch_n(ssn.receiver(q, timeout=T), 3) == [0, 1, 2]  # after the acknowledge


def test_exchange_subject_and_dynamic_queue(conn: Connection) -> None:
    ssn = conn.session()
    news = ssn.receiver("amq.topic/news.#", timeout=T)
    reply = ssn.receiver("#", timeout=T)  # a broker-named private queue
    assert reply.source and reply.source != "#"
    snd = ssn.sender("amq.topic/news.today", timeout=T)  # the subject is each message's default
    snd.send(Message(body="n1"), timeout=T)
    snd.send(Message(body="w1", subject="weather.today"), timeout=T)
    snd.send(Message(body="n2"), timeout=T)  # after w1: had w1 matched news.#, it came first
    got = news.fetch(timeout=T)
    assert (got.body, got.subject) == ("n1", "news.today")
    ssn.sender(reply.source, timeout=T).send(Message(body="r"), timeout=T)
    assert reply.fetch(timeout=T).body == "r"
    assert news.fetch(timeout=T).body == "n2"  # not w1
    ssn.acknowledge()


def test_bad_input_is_one_line(conn: Connection) -> None:
    ssn = conn.session()
    for bad in ("q; {create: sometimes}", "q; {node: {x-bindings: []}}", "q; {create: always"):
        with pytest.raises(AddressError) as err:
            ssn.sender(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="capacity"):
        ssn.sender(create(qname()), capacity=0)
    with pytest.raises(TypeError, match=r"proton\.Message"):
        ssn.sender(create(qname()), timeout=T).send("not a message")  # type: ignore[arg-type]
    with pytest.raises(AddressError, match="bad broker URL"):
        Connection("127.0.0.1:99999")
    with pytest.raises(ValueError, match="heartbeat"):
        Connection("127.0.0.1", heartbeat=0)


def test_bad_credentials_are_not_retried(brokers: Brokers) -> None:
    # A wrong password cannot succeed on the next try either: the client gives up at once.
    b = start_secure(brokers)
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError, match="unauthorized-access"):
        Connection.establish(f"alice/not-her-password@{b.url}", reconnect=True, timeout=T)
    assert time.monotonic() - t0 < T
    conn = Connection.establish(f"alice/{PASSWORDS['alice']}@{b.url}", timeout=T)
    conn.close(timeout=T)


def test_no_broker_without_reconnect(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match="reconnect is off"):
        Connection.establish(f"127.0.0.1:{_closed_port()},127.0.0.1:{_closed_port()}", timeout=T)


def test_reconnect_gives_up_after_timeout(brokers: Brokers) -> None:
    b = brokers.start()
    conn = Connection.establish(b.url, reconnect=True, reconnect_timeout=0.5, timeout=T)
    try:
        snd = conn.session().sender(create("gone"), timeout=T)
        b.kill()
        deadline = time.monotonic() + T
        with pytest.raises(ConnectionError, match="reconnect_timeout"):
            while time.monotonic() < deadline:
                snd.send(Message(body=1), timeout=T)
        assert isinstance(conn.error, ConnectionError)
    finally:
        conn.close(timeout=1)


def test_restarted_broker_gets_unacknowledged_messages_again(brokers: Brokers) -> None:
    """One URL, the broker crashes and comes back on the same port: the sender re-sends what was
    not acknowledged, the receiver's stale acknowledgement is dropped and the message comes back."""
    b = brokers.start()
    conn = Connection.establish(b.url, reconnect=True, reconnect_interval_max=0.2, timeout=T)
    stopped = False
    try:
        ssn = conn.session()
        snd = ssn.sender(create("rs", "node: {durable: True}"), capacity=10, timeout=T)
        snd.send(Message(body=0, durable=True), timeout=T)
        rcv = ssn.receiver("rs", timeout=T)
        fetched = rcv.fetch(timeout=T)
        os.kill(b.pid, signal.SIGSTOP)  # hold the next messages unacknowledged...
        stopped = True
        for i in (1, 2):
            snd.send(Message(body=i, durable=True), sync=False, timeout=T)
        b.kill()  # ...and crash
        stopped = False
        b = brokers.start(data_dir=b.data_dir, port=b.port)
        ssn.acknowledge(fetched)  # a delivery of the lost connection: dropped, not sent
        snd.sync(timeout=T)
        assert snd.resent >= 1 and snd.unsettled == 0 and conn.reconnects >= 1
        got = sorted(rcv.fetch(timeout=T).body for _ in range(3))
        ssn.acknowledge()
        assert got == [0, 1, 2]
        wait_empty(b.url, "rs")  # none came twice
    finally:
        if stopped:
            os.kill(b.pid, signal.SIGCONT)
        conn.close(timeout=2)


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- the address grammar ------------------------------------------------------------------------


def test_address_grammar() -> None:
    a = parse(
        "myqueue; {create: always, node: {durable: True, x-declare: {auto-delete: False, "
        "arguments: {'qpid.replicate': all, n: -2, f: 1.5, l: [a, 'b c'], e: {}}}}, "
        'link: {name: "l1", reliability: unreliable}, mode: browse}'
    )
    assert (a.name, a.subject, a.create, a.browse, a.link_name, a.unreliable) == (
        "myqueue",
        None,
        "always",
        True,
        "l1",
        True,
    )
    assert a.creates_for("sender") and a.creates_for("receiver")
    assert a.node_properties() == {
        "durable": True,
        "auto-delete": False,
        "arguments": {"qpid.replicate": "all", "n": -2, "f": 1.5, "l": ["a", "b c"], "e": {}},
    }
    t = parse("amq.topic/news.#; {create: sender, node: {type: topic, x-declare: {type: fanout}}}")
    assert (t.name, t.subject, t.creates_for("receiver")) == ("amq.topic", "news.#", False)
    assert t.node_properties() == {"type": "topic", "exchange-type": "fanout"}
    assert parse("'a b'").name == "a b" and parse("#").dynamic


@pytest.mark.parametrize(
    "bad",
    ["", "; {}", "q; {creat: always}", "q; [1]", "q; {a: }", "q; {a: 1", "q; {mode: peek}",
     "q; {node: {durable: yes}}", "q; {assert: always}", "q; {link: {reliability: maybe}}"],
)  # fmt: skip
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(AddressError):
        parse(bad)


# -- the reconnect policy (no network, times given) ---------------------------------------------


def test_policy_walks_urls_in_order_with_bounded_backoff() -> None:
    p = ReconnectPolicy(3, interval_min=0.1, interval_max=0.3)
    p.begin(100.0, start=1)  # lost urls[0]: try the others first
    tried = []
    now = 100.0
    for _ in range(9):
        index, at = p.next(now)
        tried.append((index, round(at - now, 3)))
        now = at
        p.failed(now)
    assert [i for i, _ in tried] == [1, 2, 0, 1, 2, 0, 1, 2, 0]
    # no pause inside a pass; after each full pass 0.1, 0.2, then capped at 0.3
    assert [w for _, w in tried] == [0, 0, 0, 0.1, 0, 0, 0.2, 0, 0]
    assert p.next(now)[1] - now == pytest.approx(0.3)
    p.connected()
    p.begin(now, start=0)
    assert p.next(now) == (0, now)


def test_policy_gives_up() -> None:
    p = ReconnectPolicy(2, timeout=1.0)
    p.begin(0.0)
    p.failed(0.0)
    p.failed(0.0)
    assert p.next(0.5) == (0, 0.05)
    with pytest.raises(GiveUp, match="reconnect_timeout"):
        p.next(1.0)
    off = ReconnectPolicy(2, enabled=False)
    off.begin(0.0)
    off.failed(0.0)
    off.next(0.0)
    off.failed(0.0)
    with pytest.raises(GiveUp, match="reconnect is off"):
        off.next(0.0)
    limited = ReconnectPolicy(2, limit=1)
    limited.begin(0.0)
    limited.failed(0.0)
    with pytest.raises(GiveUp, match="reconnect_limit"):
        limited.next(0.0)
    with pytest.raises(ValueError, match="reconnect intervals"):
        ReconnectPolicy(1, interval_min=2, interval_max=1)
