"""Every way a stock proton receiver can give credit, against a real broker: automatic windows,
credit topped up by hand (with the disposition, and later), drain, credit taken back, credit
before and after the queue has messages. The client runs as its own process with PN_TRACE_FRM=1,
so each failure shows the frames exchanged. Also first-acquirer and delivery-count in the header
of first deliveries and redeliveries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from proton import Message
from proton.utils import BlockingConnection

CLIENT = Path(__file__).with_name("credit_client.py")
RUN_TIMEOUT = 20.0


def fill(url: str, queue: str, n: int) -> list[str]:
    bodies = [f"m{i}" for i in range(n)]
    conn = BlockingConnection(url, timeout=10)
    try:
        sender = conn.create_sender(queue)
        for b in bodies:
            sender.send(Message(body=b, durable=True))
    finally:
        conn.close()
    return bodies


def run_client(url: str, queue: str, pattern: str, n: int) -> tuple[dict, str]:
    """The client's result and its frame trace."""
    env = dict(os.environ, PN_TRACE_FRM="1")
    proc = subprocess.run(
        [sys.executable, str(CLIENT), url, queue, pattern, str(n)],
        capture_output=True,
        text=True,
        env=env,
        timeout=RUN_TIMEOUT,
    )
    frames = "\n".join(
        line for line in proc.stderr.splitlines() if "SASL" not in line and "sasl" not in line
    )
    assert proc.returncode == 0, f"client failed ({proc.returncode}):\n{frames}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), frames


def sender_link_flows(frames: str) -> list[tuple[int, str]]:
    """Each link flow the broker sent: (transfers received before it, the flow's fields)."""
    out, transfers = [], 0
    for line in frames.splitlines():
        if "<- @transfer" in line:
            transfers += 1
        elif "<- @flow" in line and "handle=" in line:
            out.append((transfers, line.split("@flow(19) ", 1)[1]))
    return out


@pytest.mark.parametrize("window", [1, 2, 1000])
def test_automatic_window_receives_everything(broker_proc, window: int) -> None:
    sent = fill(broker_proc.url, "q", 10)
    result, frames = run_client(broker_proc.url, "q", f"window{window}", 10)
    assert result["got"] == sent, f"window {window}: got {result['got']}\nframes:\n{frames}"
    if window == 1:
        # proton's FlowController tops up on a delivery before the message is read (credit
        # still 1), so a window of 1 refills only on a flow from the broker: one after each
        # delivery, with the delivery-count the receiver has (else it would count the
        # difference as drained and never refill again) and no credit left.
        flows = sender_link_flows(frames)
        assert len(flows) >= 9, frames  # the last may come after the client has closed
        for transfers, fields in flows:
            assert f"delivery-count=0x{transfers:x}," in fields, frames
            assert "link-credit=0x0," in fields and "next-incoming-id=" in fields, frames
    else:  # a window that refills itself gets no extra frames
        assert sender_link_flows(frames) == [], frames


@pytest.mark.parametrize("pattern", ["one_same_batch", "one_later"])
def test_credit_one_topped_up_by_hand(broker_proc, pattern: str) -> None:
    sent = fill(broker_proc.url, "q", 5)
    result, frames = run_client(broker_proc.url, "q", pattern, 5)
    assert result["got"] == sent, f"{pattern}: got {result['got']}\nframes:\n{frames}"


def test_drain_returns_the_credit_left(broker_proc) -> None:
    sent = fill(broker_proc.url, "q", 3)
    result, frames = run_client(broker_proc.url, "q", "drain", 3)
    detail = f"{result}\nframes:\n{frames}"
    assert result["got"] == sent, detail
    assert result["credit"] == 0 and result["drained"] == 5, detail
    assert "drain=true" in frames, detail


def test_credit_withdrawn_stops_deliveries(broker_proc) -> None:
    result, frames = run_client(broker_proc.url, "q", "withdrawn", 4)
    detail = f"{result}\nframes:\n{frames}"
    assert result["phase"] == 0, "messages came while the link credit was 0: " + detail
    assert len(result["got"]) == 1, "one credit granted again, one message: " + detail


def test_credit_granted_before_messages(broker_proc) -> None:
    result, frames = run_client(broker_proc.url, "q", "before_messages", 4)
    assert sorted(result["got"]) == [f"late-{i}" for i in range(4)], f"{result}\n{frames}"


def test_window_of_one_with_messages_sent_on_its_session(broker_proc) -> None:
    """The broker's link flows carry the session's next-incoming-id: wrong, the client would
    think its own transfers (on the same session) are outside the broker's window."""
    result, frames = run_client(broker_proc.url, "q", "window1_late", 6)
    assert sorted(result["got"]) == [f"late-{i}" for i in range(6)], f"{result}\n{frames}"
    assert len(sender_link_flows(frames)) >= 5, frames


def test_window_of_one_on_several_links_and_sessions(broker_proc) -> None:
    """Each link flow goes on its own link's handle and session's channel (two links on the
    first session, one on a second)."""
    sent = [b for q in ("q", "q-b", "q-c") for b in fill(broker_proc.url, q, 5)]
    result, frames = run_client(broker_proc.url, "q", "window1_many", 5)
    assert sorted(result["got"]) == sorted(sent), f"{result}\n{frames}"
    links = {
        (line.split("AMQP:FRAME:")[1].split()[0], line.split("handle=")[1].split(",")[0])
        for line in frames.splitlines()
        if "<- @flow" in line and "handle=" in line
    }
    assert links == {("0", "0x0"), ("0", "0x1"), ("1", "0x0")}, frames


def test_credit_granted_after_messages(broker_proc) -> None:
    sent = fill(broker_proc.url, "q", 4)
    result, frames = run_client(broker_proc.url, "q", "after_messages", 4)
    assert result["got"] == sent, f"{result}\n{frames}"


# -- first-acquirer and delivery-count ------------------------------------------------------------


def receive(conn: BlockingConnection, queue: str) -> tuple[object, Message]:
    rcv = conn.create_receiver(queue, credit=1)
    msg = rcv.receive(timeout=10)
    return rcv, msg


def test_first_delivery_is_first_acquirer(broker_proc) -> None:
    fill(broker_proc.url, "q", 1)
    conn = BlockingConnection(broker_proc.url, timeout=10)
    try:
        rcv, msg = receive(conn, "q")
        assert msg.first_acquirer is True and msg.delivery_count == 0
        rcv.accept()
    finally:
        conn.close()


def test_redelivery_after_consumer_died(broker_proc) -> None:
    fill(broker_proc.url, "q", 1)
    first = BlockingConnection(broker_proc.url, timeout=10)
    _, msg = receive(first, "q")
    assert msg.first_acquirer is True and msg.delivery_count == 0
    first.close()  # unsettled: it goes back, count + 1
    conn = BlockingConnection(broker_proc.url, timeout=10)
    try:
        rcv, again = receive(conn, "q")
        assert again.body == msg.body
        assert again.first_acquirer is False and again.delivery_count == 1
        rcv.accept()
    finally:
        conn.close()


@pytest.mark.parametrize(("failed", "count"), [(False, 0), (True, 1)])
def test_redelivery_after_release_or_modified(broker_proc, failed: bool, count: int) -> None:
    fill(broker_proc.url, "q", 1)
    conn = BlockingConnection(broker_proc.url, timeout=10)
    try:
        rcv, msg = receive(conn, "q")
        assert msg.first_acquirer is True
        if failed:  # modified with delivery-failed (set: not every proton sets it by default)
            rcv.fetcher.unsettled[0].local.failed = True
        rcv.release(delivered=failed)
        rcv.flow(1)
        again = rcv.receive(timeout=10)
        assert again.body == msg.body
        assert again.first_acquirer is False and again.delivery_count == count
        rcv.accept()
    finally:
        conn.close()
