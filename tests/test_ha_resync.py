"""A backup caught up by a snapshot keeps the position and the epoch history the snapshot gave it
(issue 13): restarted, it catches up by a tail; promoted, its history is the cluster's, so the old
primary rejoins it by a tail too. Real `qstored --ha-cluster` processes, stock proton clients,
the backups' journals read from their data directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster_harness import Cluster, browse

from qstore.journal import JournalReader

QUEUE = "kept"


def catch_ups(c: Cluster, i: int) -> dict[str, Any]:
    st = c.status(i)
    assert st is not None, f"member {i} does not answer"
    return dict(st["catch-ups"])


def journal_history(data_dir: Path) -> tuple[tuple[int, int], list[tuple[int, str, int]]]:
    """The position and epochs a data directory's journal holds (read-only, as the tools do)."""
    with JournalReader.open(data_dir) as r:
        st = r.replay(keep_bodies=False)
    return st.position, [(e.number, str(e.node), e.origin) for e in st.epochs]


def wait_caught_up(c: Cluster, backup: int, primary: int) -> None:
    c.wait(
        lambda: c.position(backup) == c.position(primary),
        f"member {backup} at the position of member {primary}",
    )


def resynced_backup(c: Cluster, events_after: bool) -> list[str]:
    """Member 1 of a 2-member cluster, caught up by a snapshot: both are stopped, member 1's data
    directory is wiped, and the restarted member 0's recent log starts after what it holds.
    `events_after`: messages sent once it is ready (else its position is the snapshot's).
    Returns the bodies on the queue."""
    m = c.management(0)
    try:
        m.call("CREATE", "queue", QUEUE, {"durable": True})
    finally:
        m.close()
    first = [f"a{n}" for n in range(10)]
    c.send_durable(0, QUEUE, first)
    wait_caught_up(c, 1, 0)
    c.restart_all(0, empty=(1,), kill=False)
    assert catch_ups(c, 1) == {"snapshot": 1, "tail": 0}
    more = [f"b{n}" for n in range(5)] if events_after else []
    c.send_durable(
        0, QUEUE, more
    )  # events after the snapshot: the backup's position moves on from it
    wait_caught_up(c, 1, 0)
    return first + more


def test_a_backup_resynced_by_snapshot_and_restarted_catches_up_by_tail(cluster) -> None:
    c = cluster(2)
    bodies = resynced_backup(c, events_after=False)  # the case: ready, then restarted
    at_stop = c.position(0)
    assert c.members[1].terminate() == 0  # type: ignore[union-attr]
    # what the backup's journal says of its history is the primary's, not (0, 0)
    pos, epochs = journal_history(c.data_dir(1))
    assert list(pos) == at_stop and pos != (0, 0)
    assert epochs == journal_history(c.data_dir(0))[1]
    later = [f"c{n}" for n in range(5)]
    c.send_durable(0, QUEUE, later)  # it comes back behind
    c.start(1)
    c.wait_states({0: "active", 1: "ready"})
    assert catch_ups(c, 1) == {"snapshot": 0, "tail": 1}
    wait_caught_up(c, 1, 0)
    a = c.admin(1)
    try:
        assert browse(a, QUEUE) == bodies + later
    finally:
        a.close()


def test_a_resynced_backup_promoted_is_rejoined_by_the_old_primary_with_a_tail(cluster) -> None:
    c = cluster(2)
    bodies = resynced_backup(c, events_after=True)
    c.kill(0)
    code, desc = c.promote(1)
    assert code == 200, desc
    c.wait_states({1: "active"})
    later = [f"c{n}" for n in range(5)]
    c.send_durable(1, QUEUE, later)
    c.start(0)  # its history is a prefix of member 1's (the snapshot gave member 1 all of it)
    c.wait_states({1: "active", 0: "ready"})
    assert catch_ups(c, 0) == {"snapshot": 0, "tail": 1}
    a = c.admin(0)
    try:
        assert browse(a, QUEUE) == bodies + later
    finally:
        a.close()
    # the new epoch is above every epoch the cluster had, and both histories agree
    epochs = journal_history(c.data_dir(1))[1]
    assert [n for n, _, _ in epochs] == sorted({n for n, _, _ in epochs})
    assert journal_history(c.data_dir(0))[1] == epochs
