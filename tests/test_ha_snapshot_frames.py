"""A backup caught up by a snapshot whose batches span several frames (issue 13, catch-up speed):
a backup takes frames of up to broker.ha.member.PEER_MAX_FRAME from its primary, so a batch of
a message larger than that arrives in pieces (partial deliveries, which it passes over until the
last). Every message arrives whole, in order, journaled. Real `qstored --ha-cluster` processes,
stock proton clients."""

from __future__ import annotations

import os

from cluster_harness import browse
from proton import Message

from broker.ha.member import PEER_MAX_FRAME
from qstore.journal import Enqueue, JournalReader

QUEUE = "big"
BIG = PEER_MAX_FRAME * 5 // 2  # one batch of its own, in three frames


def test_messages_larger_than_a_frame_cross_a_snapshot_whole(cluster) -> None:
    c = cluster(2)
    m = c.management(0)
    try:
        m.call("CREATE", "queue", QUEUE, {"durable": True})
    finally:
        m.close()
    # incompressible: the batches stay as large on the wire
    bodies = [os.urandom(BIG), *(os.urandom(100) for _ in range(50)), os.urandom(BIG)]
    c.send_durable(0, QUEUE, bodies)
    c.wait(lambda: c.position(1) == c.position(0), "member 1 caught up")
    # member 1 starts again empty, and member 0's recent log starts after these: a snapshot
    c.restart_all(0, empty=(1,), kill=False)
    st = c.status(1)
    assert st is not None and st["catch-ups"] == {"snapshot": 1, "tail": 0}
    a = c.admin(1)
    try:
        assert browse(a, QUEUE) == bodies
    finally:
        a.close()
    assert c.members[1].terminate() == 0  # type: ignore[union-attr]
    with JournalReader.open(c.data_dir(1)) as r:
        journaled = [e.record for e in r.entries() if isinstance(e.record, Enqueue)]
    decoded = []
    for rec in journaled:
        msg = Message()
        msg.decode(rec.body)
        decoded.append(bytes(msg.body))
    assert decoded == bodies
