"""An admin connection on a backup writes nothing into what the primary replicates (seed 1.12.6).

Admin tools (`qpid.ha-admin`) may connect to a backup; with `--auth no` anyone may claim to be
one. Every way such a connection could put a message on, or take one from, a replicated queue is
refused with amqp:not-allowed: a sender's attach, the anonymous relay (each message's `to`), an
exchange (replicated, or local but bound to a replicated queue), a management request whose
reply-to leads there, a consumer, the outcomes of a browser, a dynamic queue that asks to be
replicated. Afterwards the backup's copy equals the primary's. A queue at `qpid.replicate: none`
stays the backup's own, and on the primary the same writes work.
"""

from __future__ import annotations

from typing import Any

import pytest
from cluster_harness import Cluster, browse
from proton import Delivery, Message, symbol
from proton.handlers import MessagingHandler
from proton.reactor import AtMostOnce, Copy, LinkOption
from proton.utils import BlockingConnection, LinkDetached

REPLICATED = "replicated from the primary"


def _setup(c: Cluster) -> None:
    """On the primary: queue `rq` holding m0, m1; direct exchange `rx` bound to it with key `k`.
    On the backup, its own: queue `local` (qpid.replicate none), and bindings it may make since
    they do not replicate: amq.direct `k` and amq.fanout to `rq`, amq.direct `l` to `local`."""
    m = c.management(0)
    try:
        m.call("CREATE", "queue", "rq", {"durable": True})
        m.call("CREATE", "exchange", "rx", {"type": "direct", "durable": True})
        m.call("CREATE", "binding", None, {"exchange": "rx", "queue": "rq", "key": "k"})
    finally:
        m.close()
    p = c.admin(0)
    try:
        s = p.create_sender("rq")
        for body in ("m0", "m1"):
            s.send(Message(body=body, durable=True))
    finally:
        p.close()
    b = c.management(1)
    try:
        c.wait(
            lambda: b.call("QUERY", "binding", None, {"exchange": "rx", "queue": "rq"}),
            "the backup to hold rx -> rq",
        )
        b.call("CREATE", "queue", "local", {"arguments": {"qpid.replicate": "none"}})
        for x, q, key in (("amq.direct", "rq", "k"), ("amq.fanout", "rq", ""),
                          ("amq.direct", "local", "l")):  # fmt: skip
            b.call("CREATE", "binding", None, {"exchange": x, "queue": q, "key": key})
    finally:
        b.close()
    a = c.admin(1)
    try:
        c.wait(lambda: browse(a, "rq") == ["m0", "m1"], "the backup to hold m0, m1")
    finally:
        a.close()


def _send(sender: Any, **kw: Any) -> Delivery:
    """Send one message and return its settled delivery, whatever the outcome."""
    return sender.send(Message(durable=True, **kw), error_states=[])


def _assert_refused(dlv: Delivery, what: str) -> None:
    assert dlv.remote_state == Delivery.REJECTED, (what, dlv.remote_state)
    cond = dlv.remote.condition
    assert cond is not None and cond.name == "amqp:not-allowed", (what, cond)
    assert REPLICATED in (cond.description or ""), (what, cond.description)


def _assert_same(c: Cluster, queue: str, expected: list[Any]) -> None:
    """The primary and the backup both hold exactly `expected` on `queue`."""
    p, b = c.admin(0), c.admin(1)
    try:
        assert browse(p, queue) == expected
        c.wait(lambda: browse(b, queue) == expected, f"the backup's {queue} to be {expected}")
    finally:
        p.close()
        b.close()


def test_backup_refuses_messages_into_replicated_queues(cluster) -> None:
    c = cluster(2)
    _setup(c)
    admin = c.admin(1)
    try:
        relay = admin.create_sender(None)  # the anonymous relay: each message's `to` decides
        _assert_refused(_send(relay, address="rq", body="x"), "relay to a replicated queue")
        _assert_refused(
            _send(relay, address="rx", subject="k", body="x"), "relay to a replicated exchange"
        )
        _assert_refused(
            _send(relay, address="rx", subject="none", body="x"), "a replicated exchange, unrouted"
        )
        _assert_refused(
            _send(relay, address="amq.direct", subject="k", body="x"),
            "relay to a local exchange bound to a replicated queue",
        )
        assert _send(relay, address="local", body="r1").remote_state == Delivery.ACCEPTED
        dlv = _send(relay, address="amq.direct", subject="l", body="r2")
        assert dlv.remote_state == Delivery.ACCEPTED

        # pre-settled (at most once): no outcome to carry the refusal, but nothing is written
        presettled = admin.create_sender(None, options=AtMostOnce())
        presettled.send(Message(address="rq", body="x", durable=True))
        presettled.send(Message(address="amq.fanout", body="x", durable=True))

        with pytest.raises(LinkDetached, match=r"not-allowed.*replicated"):
            admin.create_sender("rx")
        with pytest.raises(LinkDetached, match=r"not-allowed.*replicated"):
            admin.create_sender("rq")
        direct = admin.create_sender("amq.direct")
        _assert_refused(
            _send(direct, subject="k", body="x"), "a local exchange routing to a replicated queue"
        )
        assert _send(direct, subject="l", body="r3").remote_state == Delivery.ACCEPTED
        fanout = admin.create_sender("amq.fanout")
        _assert_refused(_send(fanout, body="x"), "a fanout bound to a replicated queue")
        local = admin.create_sender("local")
        assert _send(local, body="r4").remote_state == Delivery.ACCEPTED
        assert browse(admin, "local") == ["r1", "r2", "r3", "r4"]
    finally:
        admin.close()
    assert "Traceback" not in c.log(1)
    _assert_same(c, "rq", ["m0", "m1"])

    # on the primary the same admin writes go through, and the backup follows
    p = c.admin(0)
    try:
        relay = p.create_sender(None)
        assert _send(relay, address="rq", body="p1").remote_state == Delivery.ACCEPTED
        dlv = _send(relay, address="rx", subject="k", body="p2")
        assert dlv.remote_state == Delivery.ACCEPTED
        assert _send(p.create_sender("rx"), subject="k", body="p3").remote_state == (
            Delivery.ACCEPTED
        )
    finally:
        p.close()
    _assert_same(c, "rq", ["m0", "m1", "p1", "p2", "p3"])


class _ReplicatedNode(LinkOption):
    """Node properties on a dynamic source asking for a replicated queue."""

    def apply(self, link: Any) -> None:
        link.source.properties.put_dict({symbol("qpid.replicate"): "all"})


class _Judge(MessagingHandler):
    """A browser that rejects the first message it sees and accepts the rest, by hand."""

    def __init__(self) -> None:
        super().__init__(prefetch=0, auto_accept=False)
        self.seen: list[tuple[Any, bool]] = []  # (body, whether it came settled)

    def on_message(self, event: Any) -> None:
        dlv = event.delivery
        self.seen.append((event.message.body, dlv.settled))
        dlv.update(Delivery.ACCEPTED if len(self.seen) > 1 else Delivery.REJECTED)
        dlv.settle()


def _request(conn: BlockingConnection, reply_to: str, op: str = "READ", **props: Any) -> Delivery:
    """A management request (stock proton, no tool) whose reply goes to `reply_to`."""
    sender = conn.create_sender("$management")
    try:
        msg = Message(
            id=f"req-{reply_to}-{op}",
            reply_to=reply_to,
            properties={"operation": op, "type": "queue", **props},
            body={},
        )
        return sender.send(msg, error_states=[])
    finally:
        sender.close()


def _queue_names(c: Cluster, i: int) -> list[str]:
    m = c.management(i)
    try:
        return sorted(
            q["name"] for q in m.call("QUERY", "queue") if not q["name"].startswith("qstore.")
        )
    finally:
        m.close()


def _replicated_here(c: Cluster, i: int) -> list[str]:
    """Member i's private (qstore.*) queues that ask to replicate: none should exist."""
    m = c.management(i)
    try:
        return [
            q["name"]
            for q in m.call("QUERY", "queue")
            if q["name"].startswith("qstore.") and q["arguments"].get("qpid.replicate") == "all"
        ]
    finally:
        m.close()


def test_backup_refuses_replies_and_takes_from_replicated_queues(cluster) -> None:
    c = cluster(2)
    _setup(c)
    names = _queue_names(c, 1)
    assert names == ["local", "rq"]
    admin = c.admin(1)
    try:
        # a management reply addressed into what replicates: the request is refused, unrun
        for reply_to in ("rq", "rx", "amq.fanout"):
            _assert_refused(_request(admin, reply_to, name="rq"), f"reply-to {reply_to}")
        _assert_refused(_request(admin, "rq", "CREATE", name="made"), "a create replying to rq")
        assert _queue_names(c, 1) == names  # the refused CREATE did not run
        assert _request(admin, "local", name="rq").remote_state == Delivery.ACCEPTED
        replies = browse(admin, "local")
        assert len(replies) == 1 and replies[0]["name"] == "rq", replies

        # taking: a consumer is refused; a browser's outcomes change nothing
        with pytest.raises(LinkDetached, match=r"not-allowed.*replicated"):
            admin.create_receiver("rq")
        judge = _Judge()
        r = admin.create_receiver("rq", name="browser", options=Copy(), credit=10, handler=judge)
        try:
            admin.wait(lambda: len(judge.seen) == 2, timeout=5, msg="the browser's two messages")
            assert judge.seen == [("m0", True), ("m1", True)]  # the broker settled them: no
        finally:  # outcome of the browser's (rejected, accepted) can take them
            r.close()

        # a dynamic queue that asks to replicate is not made on a backup; a plain one is
        with pytest.raises(LinkDetached, match="not-allowed"):
            admin.create_receiver(None, dynamic=True, options=_ReplicatedNode())
        assert _replicated_here(c, 1) == [], "a replicated dynamic queue was made on the backup"
        plain = admin.create_receiver(None, dynamic=True)
        assert plain.link.remote_source.address
        plain.close()
    finally:
        admin.close()
    assert _queue_names(c, 1) == names
    assert "Traceback" not in c.log(1)
    _assert_same(c, "rq", ["m0", "m1"])

    # on the primary a reply to `rq` is delivered there, and replicated
    p = c.admin(0)
    try:
        assert _request(p, "rq", name="rq").remote_state == Delivery.ACCEPTED
        body = browse(p, "rq")[-1]
        assert body["name"] == "rq", body
    finally:
        p.close()
    b = c.admin(1)
    try:
        c.wait(lambda: len(browse(b, "rq")) == 3, "the backup to hold the primary's reply")
    finally:
        b.close()
