"""The standalone broker end to end: a durable message survives a restart."""

from proton import Message
from proton.utils import BlockingConnection


def test_durable_message_survives_restart(brokers):
    b = brokers.start(args=["--auto-create", "yes"])
    c = BlockingConnection(b.url, timeout=10)
    s = c.create_sender("smoke")
    for i in range(5):
        s.send(Message(body=f"m{i}", durable=True))
    c.close()
    assert b.terminate() == 0
    b2 = brokers.start(data_dir=b.data_dir)
    c = BlockingConnection(b2.url, timeout=10)
    r = c.create_receiver("smoke")
    got = []
    for _ in range(5):
        got.append(r.receive(timeout=5).body)
        r.accept()
    c.close()
    assert got == [f"m{i}" for i in range(5)]
