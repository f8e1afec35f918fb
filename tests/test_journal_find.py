"""`qstore-journal find`: messages found by what the application set, in every queue of one or
several journals, with their life there; journals without them explained by their positions.
Journals are real (written through `Journal`, as a primary and its backups write them), and one
case reads the journals of a real three-broker cluster."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import lmdb
import pytest
from inspect_support import DAMAGED_SEQ, MAP, copy_fixture, encoded, one_error_line, run
from proton import Message, ulong

from qstore.journal import (
    Delivery,
    Dequeue,
    Enqueue,
    Journal,
    JournalReader,
    QueueDeclare,
    QueueDelete,
)
from qstore.journal.records import KEY

QA, QB = uuid.UUID(int=1), uuid.UUID(int=2)
NODE_A = uuid.UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
BIG = "".join(f"line {i} of a long order\n" for i in range(400))  # stored zstd-compressed


def order(n: int, **kw: object) -> bytes:
    fields = {"id": f"order-{n}", "subject": "order.created", "durable": True}
    fields.update(properties={"customer": "acme" if n % 2 else "zeta", "n": n}, body=f"order {n}")
    fields.update(kw)
    return encoded(**fields)


@pytest.fixture
def node(tmp_path: Path) -> Path:
    d = tmp_path / "node0"
    with Journal(d, map_size=MAP) as j:
        j.set_compaction_horizon(0)  # every record stays: each life is in the journal
        j.start_epoch(1)
        j.append_many([QueueDeclare("orders", QA), QueueDeclare("audit", QB)])
        j.append_many([Enqueue("orders", i, order(i)) for i in range(1, 5)])
        j.append_many([Delivery("orders", 1, 1), Delivery("orders", 1, 2), Dequeue("orders", 2)])
        j.append_many(
            [
                Enqueue("audit", 1, order(1, body=BIG)),  # the same message-id, another queue
                Enqueue("audit", 2, encoded(id=uuid.UUID(int=77), body=b"\x00\x01")),
                Enqueue("audit", 3, encoded(id=ulong(300), body="numbered")),
                Enqueue("audit", 4, b"no message at all"),
            ]
        )
        j.append(Enqueue("orders", 3, order(3, body="order 3, again")))  # same msgid: replaced
        j.append(QueueDelete("audit", QB))
    return d


def table(cp_stdout: str) -> list[list[str]]:
    """The rows of find's table (the header, and the lines under the table, left out)."""
    rows = [line.split(None, 7) for line in cp_stdout.splitlines()[1:]]
    return [r for r in rows if len(r) == 8 and not r[0].endswith(":") and r[1] != "match(es)"]


def test_find_by_message_id_shows_each_life(node: Path) -> None:
    cp = run("find", node, "--message-id", "order-1")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0].split() == [
        "NODE", "QUEUE", "MSGID", "SEQ", "EPOCH", "ORIGIN", "MESSAGE-ID", "LIFE",
    ]  # fmt: skip
    rows = [line.split(None, 7) for line in lines[1:3]]
    assert rows[0][:7] == ["node0", "orders", "1", "4", "1", "4", "order-1"]
    assert rows[0][7] == "enqueued at seq 4, delivered 2 times, still queued"
    assert rows[1][:7] == ["node0", "audit", "1", "11", "1", "11", "order-1"]  # compressed
    assert rows[1][7] == "enqueued at seq 11, gone with its queue at seq 16 (epoch 1, origin 16)"
    assert lines[-1] == "2 match(es) for message-id order-1 in 1 of 1 journal(s)"


def test_lives_dequeued_and_replaced(node: Path) -> None:
    out = run("find", node, "--message-id", "order-2").stdout
    assert "enqueued at seq 5, dequeued at seq 10 (epoch 1, origin 10)" in out
    rows = table(run("find", node, "--message-id", "order-3").stdout)
    assert (
        rows[0][7] == "enqueued at seq 6, replaced by a new enqueue at seq 15 (epoch 1, origin 15)"
    )
    assert rows[1][3] == "15" and rows[1][7] == "enqueued at seq 15, still queued"


def test_other_criteria_and_their_combination(node: Path) -> None:
    def hits(*args: str) -> list[tuple[str, str]]:
        cp = run("find", "--json", node, *args)
        rows = [json.loads(x) for x in cp.stdout.splitlines()]
        return [(r["queue"], r["msgid"]) for r in rows if "state" in r]

    assert hits("--property", "customer=zeta") == [("orders", 2), ("orders", 4)]
    assert hits("--property", "n=3") == [("orders", 3), ("orders", 3)]
    assert hits("--property", "customer=acme", "--property", "n=1") == [("orders", 1), ("audit", 1)]
    assert hits("--subject", "order.created", "--queue", "audit") == [("audit", 1)]
    assert hits("--body-contains", "line 399 of a long") == [("audit", 1)]
    assert hits("--body-contains", "again") == [("orders", 3)]
    assert hits("--message-id", str(uuid.UUID(int=77))) == [("audit", 2)]
    assert hits("--message-id", "300") == [("audit", 3)]
    assert hits("--message-id", "order-1", "--subject", "nope") == []


def test_json_fields(node: Path) -> None:
    cp = run("find", "--json", node, "--message-id", "order-2")
    hit, summary = (json.loads(x) for x in cp.stdout.splitlines())
    assert hit["node"] == "node0" and hit["data_dir"] == str(node)
    assert (hit["queue"], hit["msgid"], hit["seq"], hit["epoch"], hit["origin"]) == (
        "orders", 2, 5, 1, 5,
    )  # fmt: skip
    assert hit["state"] == "dequeued" and hit["ended_by"] == {"seq": 10, "epoch": 1, "origin": 10}
    assert hit["message"]["properties"] == {"customer": "zeta", "n": 2}
    assert summary == {
        "node": "node0",
        "data_dir": str(node),
        "node_id": hit["node_id"],
        "matches": 1,
        "listed": 1,
        "damaged": 0,
        "position": [1, 16],
    }


def test_nothing_found_and_the_limit(node: Path) -> None:
    cp = run("find", node, "--message-id", "order-99")
    assert (cp.returncode, cp.stdout) == (
        1,
        "no message with message-id order-99 in 1 journal(s)\n",
    )
    cp = run("find", node, "--subject", "order.created", "--limit", "2")
    assert cp.returncode == 0
    assert len(table(cp.stdout)) == 2
    assert "node0: 4 more match(es) not listed (--limit 2)" in cp.stdout


def test_a_damaged_record_is_counted_not_fatal(tmp_path: Path) -> None:
    damaged = copy_fixture("damaged", tmp_path)
    cp = run("find", damaged, "--subject", "order.created")
    assert cp.returncode == 1 and cp.stderr == ""
    assert "damaged: 1 damaged record(s) skipped (run verify)" in cp.stdout
    assert f"\n{damaged.name}  orders  3" not in cp.stdout  # seq 10 is order-3's enqueue
    assert [r[2] for r in table(cp.stdout) if r[0] == "damaged"] == ["1", "2", "4", "5"]
    assert DAMAGED_SEQ == 10


def test_usage_errors_are_one_line(node: Path) -> None:
    cp = run("find", node)
    assert cp.returncode == 2 and "find needs --message-id" in one_error_line(cp)
    cp = run("find", node, node, "--subject", "x")
    assert cp.returncode == 2 and "given twice" in one_error_line(cp)
    cp = run("find", node, "--property", "novalue")
    assert cp.returncode == 2 and "not K=V: 'novalue'" in cp.stderr.splitlines()[-1]


# -- three nodes ------------------------------------------------------------------------------


def follow(leader: JournalReader, d: Path, upto: int | None = None) -> None:
    """A backup's journal: the leader's records up to origin `upto`, with their positions."""
    with Journal(d, map_size=MAP) as j:
        j.set_compaction_horizon(0)
        for e in leader.entries():
            if upto is None or e.origin <= upto:
                j.append_many([e.record], epoch=e.epoch, origin=e.origin, replica=True)


def test_where_is_my_message_over_three_nodes(tmp_path: Path) -> None:
    """node0 (the primary) compacted order-1 away after its dequeue; node1 followed it to the
    end, compaction held back; node2 stopped following before the dequeue."""
    n0, n1, n2 = (tmp_path / f"node{i}" for i in range(3))
    with Journal(n0, map_size=MAP) as j:
        j.set_compaction_horizon(0)
        j.start_epoch(1, NODE_A)
        j.append(QueueDeclare("orders", QA))
        j.append_many([Enqueue("orders", i, order(i)) for i in (1, 2)])  # origins 3, 4
        j.append(Delivery("orders", 1, 1))
        j.append(Dequeue("orders", 1))  # origin 6
    with JournalReader.open(n0) as r:
        follow(r, n1)
        follow(r, n2, upto=4)
    with Journal(n0, map_size=MAP) as j:
        j.append(Enqueue("orders", 3, order(3)))  # (compaction keeps the newest record)
        assert j.compact() == 3
    cp = run("find", n0, n1, n2, "--message-id", "order-1")
    assert cp.returncode == 0, cp.stderr
    rows = table(cp.stdout)
    assert rows[0][:7] == ["node1", "orders", "1", "3", "1", "3", "order-1"]
    assert (
        rows[0][7] == "enqueued at seq 3, delivered 1 time, dequeued at seq 6 (epoch 1, origin 6)"
    )
    assert rows[1][:7] == ["node2", "orders", "1", "3", "1", "3", "order-1"]
    assert rows[1][7] == "enqueued at seq 3, still queued"
    assert rows[2][:7] == ["node0", "orders", "1", "-", "-", "-", "order-1"]
    assert rows[2][7] == (
        "not here any more: compacted away (this journal went past (1, 3): it is at (1, 7))"
    )
    assert cp.stdout.splitlines()[-1] == "2 match(es) for message-id order-1 in 2 of 3 journal(s)"


def find_json(*args: object) -> list[dict]:
    return [json.loads(x) for x in run("find", "--json", *args).stdout.splitlines()]


def test_find_in_a_real_clusters_journals(cluster) -> None:
    """Three brokers replicate `orders`; order-1 is consumed, order-2 stays. Each node's journal
    holds order-2 at the same queue, msgid and position; order-1 is nowhere still queued."""
    c = cluster(3)
    m = c.management(0)
    try:
        code, desc, _ = m.request("CREATE", "queue", "orders", {"durable": True})
        assert code == 201, desc
    finally:
        m.close()
    conn = c.client(0)
    try:
        s = conn.create_sender("orders")
        for i in (1, 2):
            s.send(Message(id=f"order-{i}", subject="order.created", body=f"o{i}", durable=True))
        r = conn.create_receiver("orders")
        assert r.receive(timeout=10).id == "order-1"
        r.accept()
    finally:
        conn.close()
    positions = lambda: {tuple(c.status(i)["position"]) for i in range(3)}  # noqa: E731
    c.wait(lambda: len(positions()) == 1, "the backups at the primary's position")
    for i in range(3):
        assert c.members[i].terminate() == 0
    dirs = [c.data_dir(i) for i in range(3)]
    rows = find_json(*dirs, "--message-id", "order-2")
    hits = [r for r in rows if "state" in r]
    assert sorted(h["node"] for h in hits) == ["node0", "node1", "node2"]
    assert {(h["queue"], h["msgid"], h["epoch"], h["origin"], h["state"]) for h in hits} == {
        (hits[0]["queue"], hits[0]["msgid"], hits[0]["epoch"], hits[0]["origin"], "queued")
    }
    rows = find_json(*dirs, "--message-id", "order-1")
    lives = [r.get("state") or r.get("absent") for r in rows if "state" in r or "absent" in r]
    assert len(lives) == 3 and set(lives) <= {"dequeued", "compacted"}, rows


def cut_value(data_dir: Path, seq: int, length: int) -> None:
    """Damage a closed journal as a torn write might: record `seq` cut to `length` bytes."""
    env = lmdb.open(str(data_dir / "journal"), max_dbs=4, map_size=MAP)
    try:
        db = env.open_db(b"records", create=False)
        with env.begin(write=True, db=db) as txn:
            txn.put(KEY.pack(seq), txn.get(KEY.pack(seq))[:length])
    finally:
        env.close()


@pytest.mark.parametrize("length", [0, 1, 10, 27])
def test_cut_records_are_damage_for_every_scan(node: Path, tmp_path: Path, length: int) -> None:
    cut_value(node, 4, length)  # order-1's enqueue
    cp = run("find", node, "--message-id", "order-1")
    assert cp.returncode == 1 and "Traceback" not in cp.stderr
    assert "node0: 1 damaged record(s) skipped (run verify)" in cp.stdout
    cp = run("verify", node)
    assert cp.returncode == 1 and cp.stdout.startswith("seq 4: ")
    cp = run("salvage", node, tmp_path / "s", "--skip-damaged")
    assert cp.returncode == 1 and "skipped:  seq 4: " in cp.stdout
