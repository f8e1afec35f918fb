"""Producer flow control in the model (sans I/O): the stop/resume decisions, the marks a queue's
arguments give, --default-queue-limit, the broker-wide memory watermark and what the listener
hears. The AMQP side (credit withheld and granted again) is tests/test_broker_flow.py."""

from __future__ import annotations

import pytest

from broker.model import Broker, InvalidField, Message
from broker.model.arguments import parse_queue_arguments
from broker.model.flow import MESSAGE_OVERHEAD, FlowLimits, Usage, credit_window


class Heard:
    """The flow listener: what it was told, in order, as (queue name or None, stopped)."""

    def __init__(self, broker: Broker) -> None:
        self.events: list[tuple[str | None, bool]] = []
        broker.usage.listener = lambda q, stopped: self.events.append(
            (None if q is None else q.name, stopped)
        )


def put(b: Broker, queue: str, n: int, size: int = 10) -> None:
    for _ in range(n):
        r = b.enqueue(queue, Message(b"x" * size), 0.0)
        assert r.accepted, r.description


def consume(b: Broker, queue: str, n: int) -> None:
    c = b.subscribe(queue, credit=n)
    got = b.dispatch(0.0)
    assert len(got) == n
    for consumer, qm in got:
        b.accept(consumer, qm.id)
    b.unsubscribe(c)


# -- the decisions -----------------------------------------------------------------------------


def test_stops_strictly_above_a_mark_and_resumes_strictly_below_every_mark() -> None:
    f = FlowLimits(stop_count=8, stop_size=800, resume_count=7, resume_size=700)
    assert not f.stops(8, 800)
    assert f.stops(9, 0) and f.stops(0, 801)
    assert not f.resumes(7, 0) and not f.resumes(0, 700)
    assert f.resumes(6, 699)
    count_only = FlowLimits(stop_count=8, resume_count=7)
    assert not count_only.stops(8, 10**12)  # size is not watched
    assert count_only.resumes(6, 10**12)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"qpid.max_count": 10}, FlowLimits(8, 0, 7, 0)),
        ({"qpid.max_size": 1000}, FlowLimits(0, 800, 0, 700)),
        ({"qpid.max_count": 10, "qpid.max_size": 1000}, FlowLimits(8, 800, 7, 700)),
        ({"qpid.max_count": 1}, FlowLimits(1, 0, 1, 0)),  # resume 0 means "at the stop mark"
        ({"qpid.max_count": 100, "qpid.flow_stop_count": 90}, FlowLimits(90, 0, 70, 0)),
        (
            {"qpid.max_count": 100, "qpid.flow_stop_count": "60", "qpid.flow_resume_count": 10},
            FlowLimits(60, 0, 10, 0),
        ),
        ({"qpid.flow_stop_size": 500}, FlowLimits(0, 500, 0, 500)),  # no limit needed
        ({"qpid.max_count": 10, "qpid.flow_stop_count": 0}, None),  # 0 turns it off
        ({"qpid.max_count": 10, "qpid.policy_type": "ring"}, None),  # ring: bounded by design
        ({"qpid.max_count": 10, "qpid.policy_type": "ring", "qpid.flow_stop_count": 5}, None),
        ({}, None),
    ],
)
def test_marks_from_arguments(args: dict, expected: FlowLimits | None) -> None:
    assert parse_queue_arguments(args).flow == expected


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"qpid.max_count": 100, "qpid.flow_stop_count": 50, "qpid.flow_resume_count": 60},
         "qpid.flow_resume_count=60 must be at most qpid.flow_stop_count=50"),
        ({"qpid.max_size": 100, "qpid.flow_stop_size": 101},
         "qpid.flow_stop_size=101 must be at most qpid.max_size=100"),
        ({"qpid.flow_stop_count": -1}, "qpid.flow_stop_count must be a whole number >= 0"),
        ({"qpid.flow_resume_size": "lots"}, "qpid.flow_resume_size must be a whole number"),
    ],
)  # fmt: skip
def test_bad_marks_are_refused_with_the_argument_named(args: dict, words: str) -> None:
    b = Broker()
    with pytest.raises(InvalidField, match=words.replace("(", r"\(")):
        parse_queue_arguments(args)
    with pytest.raises(InvalidField):
        b.declare_queue("q", arguments=args)
    assert "q" not in b.queues


def test_default_queue_limit_applies_only_to_queues_that_set_no_limit() -> None:
    b = Broker()
    b.default_queue_limit = 1000
    plain, _ = b.declare_queue("plain")
    counted, _ = b.declare_queue("counted", arguments={"qpid.max_count": 5})
    opted_out, _ = b.declare_queue("opted-out", arguments={"qpid.max_size": 0})
    sized, _ = b.declare_queue("sized", arguments={"qpid.max_size": 50})
    tmp, _ = b.declare_queue("tmp", auto_delete=True, exclusive_owner="conn-1")
    assert (plain.settings.max_size, plain.settings.default_limit) == (1000, True)
    assert plain.settings.flow == FlowLimits(0, 800, 0, 700)
    assert plain.arguments == {}  # a setting, not written into the (journaled) arguments
    assert (counted.settings.max_count, counted.settings.max_size) == (5, 0)
    assert not opted_out.settings.limited and opted_out.settings.flow is None
    assert sized.settings.max_size == 50 and not sized.settings.default_limit
    assert tmp.settings.max_size == 1000  # temporary queues too: they are what clients abandon
    # a stop mark above a *default* limit is kept, not refused: a restart with a smaller
    # default must not make a journaled queue invalid
    big, _ = b.declare_queue("big", arguments={"qpid.flow_stop_size": 5000})
    assert big.settings.flow == FlowLimits(0, 5000, 0, 700)


# -- a queue's flow state ----------------------------------------------------------------------


def test_a_queue_stops_past_its_mark_and_resumes_below_the_resume_mark_once_each() -> None:
    b = Broker()
    heard = Heard(b)
    q, _ = b.declare_queue("q", arguments={"qpid.max_count": 10})
    put(b, "q", 8)
    assert not q.flow_stopped and heard.events == []
    put(b, "q", 1)  # 9 > 8
    assert q.flow_stopped and heard.events == [("q", True)]
    put(b, "q", 1)  # up to the limit: accepted, no second report
    assert heard.events == [("q", True)]
    r = b.enqueue("q", Message(b"x"), 0.0)  # the limit itself keeps the reject policy
    assert not r.accepted and r.condition == "amqp:resource-limit-exceeded"
    consume(b, "q", 3)  # 7: not below 7 yet
    assert q.flow_stopped and heard.events == [("q", True)]
    consume(b, "q", 1)  # 6 < 7
    assert not q.flow_stopped and heard.events == [("q", True), ("q", False)]
    put(b, "q", 3)  # 9 > 8 again
    assert q.flow_stopped and q.stats().flow_stopped_count == 2
    assert q.stats().flow_stopped and b.stats().flow_stopped_queues == 1


def test_acquired_messages_count_until_settled() -> None:
    b = Broker()
    q, _ = b.declare_queue("q", arguments={"qpid.max_count": 10})
    put(b, "q", 9)
    c = b.subscribe("q", credit=5)
    held = b.dispatch(0.0)
    assert q.flow_stopped  # sent to a consumer is not gone
    for consumer, qm in held:
        b.release(consumer, qm.id)
    assert q.flow_stopped
    b.set_credit(c, 5)
    for consumer, qm in b.dispatch(0.0):
        b.accept(consumer, qm.id)
    assert not q.flow_stopped and q.depth == 4


def test_size_marks() -> None:
    b = Broker()
    heard = Heard(b)
    q, _ = b.declare_queue("q", arguments={"qpid.max_size": 1000})
    put(b, "q", 8, size=100)
    assert not q.flow_stopped
    put(b, "q", 1, size=1)  # 801 bytes > 800
    assert q.flow_stopped
    consume(b, "q", 2)  # 601 < 700
    assert heard.events == [("q", True), ("q", False)]


def test_a_ring_queue_never_stops_and_keeps_dropping_the_oldest() -> None:
    b = Broker()
    heard = Heard(b)
    q, _ = b.declare_queue("q", arguments={"qpid.max_count": 3, "qpid.policy_type": "ring"})
    for i in range(10):
        assert b.enqueue("q", Message(str(i).encode()), 0.0).accepted
    assert [m.message.body for m in q.messages()] == [b"7", b"8", b"9"]
    assert not q.flow_stopped and heard.events == []


def test_replicated_and_restored_messages_are_never_refused_and_set_the_flow_state() -> None:
    """A backup applies what its primary accepted with restore_message: past any limit of its
    own (its --default-queue-limit may be smaller), never refused; the flow state follows, so a
    promoted backup holds its producers back at once."""
    b = Broker()
    b.default_queue_limit = 100
    q, _ = b.declare_queue("q")
    for i in range(1, 21):
        b.restore_message("q", i, Message(b"x" * 10))
    assert q.depth == 20 and q.bytes == 200 and q.flow_stopped


def test_deleting_a_stopped_queue_tells_the_listener() -> None:
    b = Broker()
    heard = Heard(b)
    b.declare_queue("q", arguments={"qpid.max_count": 4})
    put(b, "q", 4)
    b.delete_queue("q")
    assert heard.events == [("q", True), ("q", False)]
    assert b.stats().flow_stopped_queues == 0 and b.usage.bytes == 0


def test_purge_and_expiry_resume_too() -> None:
    b = Broker()
    q, _ = b.declare_queue("q", arguments={"qpid.max_count": 4})
    put(b, "q", 4)
    assert q.flow_stopped
    b.purge("q")
    assert not q.flow_stopped
    for _ in range(4):
        b.enqueue("q", Message(b"x", expiry=5.0), 0.0)
    assert q.flow_stopped
    b.expire(10.0)
    assert not q.flow_stopped


# -- the memory watermark ----------------------------------------------------------------------


def test_memory_alarm_raised_above_the_limit_and_cleared_below_ninety_percent() -> None:
    b = Broker()
    b.usage.overhead = 0  # bytes only, for readable sums (the overhead: the test after next)
    heard = Heard(b)
    b.usage.set_limit(1000)
    b.declare_queue("a")
    b.declare_queue("b")
    put(b, "a", 5, size=100)
    put(b, "b", 5, size=100)  # 1000: not above
    assert not b.usage.alarm and b.usage.bytes == 1000
    put(b, "b", 1, size=1)
    assert b.usage.alarm and heard.events == [(None, True)]
    put(b, "a", 3, size=100)  # nothing refused: producers are held by credit, not rejected
    consume(b, "a", 3)  # 1001
    consume(b, "b", 1)  # 901: not below 900
    assert b.usage.alarm
    consume(b, "a", 1)  # 801
    assert not b.usage.alarm and heard.events == [(None, True), (None, False)]
    st = b.stats()
    assert (st.max_memory, st.memory_alarm, st.memory_alarm_count) == (1000, False, 1)
    assert st.bytes == b.usage.bytes == 801


def test_memory_counts_every_way_a_message_leaves() -> None:
    b = Broker()
    b.usage.overhead = 0
    b.declare_queue("lvq", arguments={"qpid.last_value_queue_key": "k"})
    b.declare_queue("ring", arguments={"qpid.max_count": 2, "qpid.policy_type": "ring"})
    b.declare_queue("fan")
    b.declare_exchange("x", "fanout")
    b.bind("x", "ring")
    b.bind("x", "fan")
    for _ in range(5):
        b.enqueue("lvq", Message(b"v" * 10, properties={"k": "same"}), 0.0)
        b.publish("x", Message(b"f" * 7), 0.0)
    assert b.usage.bytes == 10 + 2 * 7 + 5 * 7 == b.stats().bytes
    b.delete_queue("fan")
    b.purge("ring")
    assert b.usage.bytes == 10


def test_memory_counts_each_message_overhead() -> None:
    """Small messages take far more memory than their bytes: each counts MESSAGE_OVERHEAD more,
    added and taken away with it (a queue's `bytes` statistic stays the messages' own)."""
    b = Broker()
    b.usage.set_limit(10 * MESSAGE_OVERHEAD)
    b.declare_queue("q")
    put(b, "q", 9, size=10)
    assert b.usage.bytes == 9 * (10 + MESSAGE_OVERHEAD) and not b.usage.alarm
    put(b, "q", 1, size=10)
    assert b.usage.alarm  # 100 bytes of messages, but ten of them
    assert b.stats().bytes == 100
    consume(b, "q", 2)
    assert not b.usage.alarm
    b.delete_queue("q")
    assert b.usage.bytes == 0


def test_changing_the_limit_raises_or_clears_at_once() -> None:
    u = Usage()
    heard: list[tuple[object, bool]] = []
    u.listener = lambda q, s: heard.append((q, s))
    u.bytes = 500
    u.set_limit(400)
    assert u.alarm and heard == [(None, True)]
    u.set_limit(0)
    assert not u.alarm and heard == [(None, True), (None, False)]
    with pytest.raises(ValueError):
        u.set_limit(-1)


# -- the credit window -------------------------------------------------------------------------


def test_credit_window_keeps_one_producer_from_carrying_a_queue_past_its_limit() -> None:
    count = FlowLimits(stop_count=80, resume_count=70)
    assert credit_window(count, 100, 0, 1, 1000) == 20
    assert credit_window(None, 100, 0, 1, 1000) == 1000
    size = FlowLimits(stop_size=800_000, resume_size=700_000)
    assert credit_window(size, 0, 1_000_000, 1000, 1000) == 200
    assert credit_window(size, 0, 1_000_000, 100, 1000) == 1000  # capped
    assert credit_window(size, 0, 1_000_000, 10**6, 1000) == 1  # never 0
    assert credit_window(FlowLimits(stop_size=10), 0, 0, 1, 1000) == 1000  # no limit to reach
