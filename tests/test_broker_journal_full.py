"""A full journal refuses new durable work with `rejected`, and the broker keeps serving: what was
accepted is all there, what was refused is not queued, and consumers drain as usual."""

from __future__ import annotations

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
    rcv = conn.create_receiver("fill")
    got = []
    try:
        while True:
            got.append(rcv.receive(timeout=2).body)
            rcv.accept()
    except Exception:
        pass
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
