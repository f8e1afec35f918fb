"""A full journal refuses new durable work with `rejected`, and the broker keeps serving: what was
accepted is all there, what was refused is not queued, and consumers drain as usual."""

from __future__ import annotations

from broker_clients import TIMEOUT, body, depth, fetch, receive_n
from flood import flood, journal_status, qstore_stat, stat_journal, wait_journal
from proton import Message
from proton.utils import BlockingConnection, SendException


def test_full_journal_rejects_new_durable_messages_and_keeps_serving(brokers) -> None:
    b = brokers.start(args=["--auto-create", "yes", "--journal-max-size", "1MiB"])
    conn = BlockingConnection(b.url, timeout=20)
    snd = conn.create_sender("fill")
    accepted: list[int] = []
    refused = 0
    for n in range(3000):
        try:
            snd.send(Message(body=n, durable=True, properties={"pad": "x" * 2048}))
            accepted.append(n)
        except SendException:
            refused += 1
            if refused >= 5:
                break
    assert refused, "a 1 MiB journal took 6 MB of durable messages"
    assert len(accepted) > 50
    assert depth(b.url, "fill") == len(accepted)  # nothing refused was queued
    rcv = conn.create_receiver("fill")
    got = [m.body for m in receive_n(rcv, len(accepted))]
    assert sorted(got) == accepted  # nothing accepted lost, nothing refused delivered
    # Drained, the journal takes durable work again, without a restart.
    for n in range(10_000, 10_050):
        snd.send(Message(body=n, durable=True, properties={"pad": "x" * 2048}))
    again = []
    for _ in range(50):
        again.append(rcv.receive(timeout=10).body)
        rcv.accept()
    conn.close()
    assert again == list(range(10_000, 10_050))
    assert "Traceback" not in b.log()


def test_a_drained_journal_is_writable_again_without_a_restart_and_keeps_every_dequeue(
    brokers,
) -> None:
    """Small messages and a prefetching consumer: its acknowledgements reach the journal in
    batches of hundreds of dequeues, more than the reserve holds in one transaction. Every one
    is journaled, the journal takes work again by itself, and none comes back after a restart."""
    args = ["--auto-create", "yes", "--journal-max-size", "1MiB"]
    b = brokers.start(args=args)
    out = flood(b.url, "q", range(100_000), pad=100)
    assert out.refused and len(out.accepted) > 1000, (len(out.accepted), out.refused[:1])
    for _, condition, text in out.refused:
        assert condition == "amqp:resource-limit-exceeded"
        assert text.startswith("not stored: journal is full (LMDB map of 1.0 MiB reached)"), text
    status = journal_status(b.url)
    assert status["state"] == "full" and status["map-size"] == 1 << 20, status
    assert "Journal: full (LMDB map of 1.0 MiB reached)" in qstore_stat(b.url, "-b")

    conn = BlockingConnection(b.url, timeout=TIMEOUT)
    rcv = conn.create_receiver("q", credit=1000)
    got = []
    for _ in out.accepted:
        got.append(body(rcv.receive(timeout=TIMEOUT)))
        rcv.accept()
    conn.close()
    assert sorted(got) == sorted(out.accepted)

    status = wait_journal(b.url, "writable", timeout=10)
    assert status["used"] < (1 << 20) // 2 and status["unjournaled"] == 0, status
    assert stat_journal(b.url)["state"] == "writable"
    again = flood(b.url, "q", range(200_000, 200_100), pad=100)
    assert not again.refused and sorted(again.accepted) == list(range(200_000, 200_100))
    log = b.log()
    assert log.count(" is full (") == 1 and log.count(" is writable again ") == 1, log
    assert "Traceback" not in log and "not journaled" not in log

    assert b.terminate() == 0
    b = brokers.start(data_dir=b.data_dir, args=args)
    assert sorted(fetch(b.url, "q")) == list(range(200_000, 200_100))  # nothing consumed is back
