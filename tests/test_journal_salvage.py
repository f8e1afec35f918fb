"""`qstore-journal salvage SRC DST` on the damaged fixture (fixtures/README.md: seq 10 fails its
crc32c): what it keeps and says, that SRC is never written, and that a real broker starts on DST
and hands a stock proton client the salvaged messages."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from inspect_support import (
    CLEAN_NODE,
    DAMAGED_SEQ,
    MAP,
    TIMEOUT,
    checksums,
    copy_fixture,
    one_error_line,
    run,
    tool,
)
from journal_helpers import rewrite_value
from proton import Message
from proton.utils import BlockingConnection
from small_fs import small_fs

from qstore.journal import Enqueue, Journal, JournalReader, QueueDeclare
from qstore.journal.lock import DataDirLock
from qstore.journal.records import HEADER

RECEIVE_TIMEOUT = 10.0


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    d = copy_fixture("damaged", tmp_path)
    with JournalReader.open(d):  # as a crashed broker leaves it: LMDB's lock.mdb is there too
        pass
    assert (d / "journal" / "lock.mdb").exists()
    return d


def export_lines(d: Path) -> list[dict]:
    """The records of `d`'s export (after its header line)."""
    return [json.loads(x) for x in run("export", d).stdout.splitlines()[1:]]


def high_water(d: Path) -> int | None:
    return json.loads(run("export", d).stdout.splitlines()[0])["journal"]["high_water"]


def test_salvage_stops_at_the_first_damaged_record(tmp_path: Path, damaged: Path) -> None:
    before = checksums(damaged)
    dst = tmp_path / "salvaged"
    cp = run("salvage", damaged, dst)
    assert cp.returncode == 1, cp.stderr  # something was lost: a finding
    assert cp.stderr == ""
    assert cp.stdout.splitlines() == [
        f"salvaged {damaged} -> {dst} (node {CLEAN_NODE})",
        "kept:     9 record(s), seq 1..9, position (epoch 1, seq 9)",
        f"damaged:  seq {DAMAGED_SEQ}: " + cp.stdout.split(": ", 3)[-1].splitlines()[0],
        "lost:     11 record(s) from seq 10 on"
        " (10 of them verify: --skip-damaged would keep those)",
    ]
    assert "crc32c mismatch" in cp.stdout
    assert checksums(damaged) == before  # SRC never written, not even LMDB's reader table
    assert run("verify", dst).stdout == "ok: 9 records\n"
    # the same records, byte for byte, at the same seqs and positions, under the same node id
    src = [r for r in export_lines(damaged) if r["seq"] < DAMAGED_SEQ]
    assert export_lines(dst) == src
    assert json.loads(run("summary", "--json", dst).stdout)["node_id"] == CLEAN_NODE
    assert (high_water(damaged), high_water(dst)) == (None, 20)  # seqs 10..20 not used again


def test_skip_damaged_keeps_the_rest_and_names_what_went(tmp_path: Path, damaged: Path) -> None:
    before = checksums(damaged)
    dst = tmp_path / "salvaged"
    cp = run("salvage", "--json", damaged, dst, "--skip-damaged")
    assert cp.returncode == 1, cp.stderr
    s = json.loads(cp.stdout)
    assert s["kept"] == {"records": 19, "seq_range": [1, 20], "position": [1, 20]}
    assert [d["seq"] for d in s["damaged"]] == [DAMAGED_SEQ]
    assert s["stopped_at"] is None and s["lost"] == {"records": 1, "verify": 0}
    text = run("salvage", damaged, tmp_path / "again", "--skip-damaged").stdout.splitlines()
    assert text[2].startswith(f"skipped:  seq {DAMAGED_SEQ}: crc32c mismatch")
    assert text[3].startswith("lost:     1 damaged record(s); records after them were kept")
    assert checksums(damaged) == before
    src = [r for r in export_lines(damaged) if r["seq"] != DAMAGED_SEQ]
    assert export_lines(dst) == src


def test_salvage_of_a_clean_journal_is_a_copy(tmp_path: Path) -> None:
    clean = copy_fixture("clean", tmp_path)
    cp = run("salvage", clean, tmp_path / "copy")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines()[-1] == "lost:     nothing"
    assert run("export", tmp_path / "copy").stdout == run("export", clean).stdout
    assert run("diff", clean, tmp_path / "copy").stdout == "identical\n"


def test_new_records_stay_above_every_seq_the_source_used(tmp_path: Path, damaged: Path) -> None:
    dst = tmp_path / "salvaged"
    assert run("salvage", damaged, dst).returncode == 1
    with Journal(dst, map_size=MAP) as j:
        assert j.position == (1, 9)
        seq = j.append(QueueDeclare("new", j.node_id))
    assert seq == 21  # not 10: seqs 10..20 name records of the original, lost here


@pytest.mark.parametrize(
    ("skip", "expected"), [(False, ["order-1", "order-2"]), (True, ["order-4", "order-5"])]
)
def test_a_broker_starts_on_the_salvage_and_delivers(
    tmp_path: Path, damaged: Path, brokers, skip: bool, expected: list[str]
) -> None:
    dst = tmp_path / "salvaged"
    cp = run("salvage", damaged, dst, *(["--skip-damaged"] if skip else []))
    assert cp.returncode == 1, cp.stderr
    b = brokers.start(data_dir=dst)
    conn = BlockingConnection(b.url, timeout=RECEIVE_TIMEOUT)
    try:
        r = conn.create_receiver("orders")
        got = []
        for _ in expected:
            m = r.receive(timeout=RECEIVE_TIMEOUT)
            r.accept()
            got.append((m.id, m.subject, m.body))
    finally:
        conn.close()
    assert got == [(i, "order.created", f"order {i[-1]}: {i[-1]} x widget") for i in expected]
    assert b.terminate() == 0


def test_refusals_are_one_line(tmp_path: Path, damaged: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for args, text in (
        ([damaged, full], "not empty"),
        ([damaged, damaged], "the target is the source"),
        ([damaged, a_file], "not a directory"),
        ([tmp_path / "nope", tmp_path / "out"], "no such directory"),
    ):
        cp = run("salvage", *args)
        assert cp.returncode == 2, (args, cp.stderr)
        assert text in one_error_line(cp) and cp.stdout == ""
    assert not (tmp_path / "out").exists()  # nothing left behind by a refused run
    assert (full / "x").read_text() == "x"


def test_a_running_brokers_journal_is_refused(tmp_path: Path, damaged: Path) -> None:
    lock = DataDirLock(damaged)
    lock.acquire()
    try:
        cp = run("salvage", damaged, tmp_path / "out")
    finally:
        lock.release()
    assert cp.returncode == 2
    assert f"in use by a running broker (pid {os.getpid()})" in one_error_line(cp)
    assert not (tmp_path / "out").exists()


def test_a_salvage_that_fails_leaves_no_target(tmp_path: Path) -> None:
    """A target filesystem too small for the journal: one line, and the half-written target
    goes (a broker started on it would take it for a whole journal)."""
    src = tmp_path / "big"
    with Journal(src, map_size=64 << 20) as j:
        j.append(QueueDeclare("q", j.node_id))
        for n in range(0, 6000, 500):
            j.append_many([Enqueue("q", i, os.urandom(1024)) for i in range(n, n + 500)])
    with small_fs(tmp_path / "fs", 4 << 20) as fs:
        cp = subprocess.run(
            [*fs.wrap, *tool(), "salvage", str(src), str(fs.path / "out")],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert cp.returncode == 2, cp.stderr
        assert "journal is full" in one_error_line(cp)
        assert not fs.outside(fs.path / "out").exists()


def test_a_salvaged_backup_rejoins_and_catches_up(tmp_path: Path, cluster) -> None:
    """docs/operations.md's procedure on a real cluster: a backup's journal damaged near its
    end, salvaged and put in place; the node comes back ready and holds the cut-off messages
    again (find over the three journals)."""
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
        for i in range(1, 6):
            s.send(Message(id=f"order-{i}", subject="order.created", body=f"o{i}", durable=True))
    finally:
        conn.close()
    positions = lambda: {tuple(c.status(i)["position"]) for i in range(3)}  # noqa: E731
    c.wait(lambda: len(positions()) == 1, "the backups at the primary's position")
    assert c.members[2].terminate() == 0
    node2 = c.data_dir(2)
    with JournalReader.open(node2) as r:
        enqueues = [e for e in r.entries() if isinstance(e.record, Enqueue)]
    seq = enqueues[-2].seq  # order-4's
    rewrite_value(node2, seq, HEADER.size + 4)  # order-4's enqueue fails its crc32c
    assert run("verify", node2).returncode == 1
    cp = run("salvage", node2, tmp_path / "salvaged")
    assert cp.returncode == 1 and f"damaged:  seq {seq}: crc32c mismatch" in cp.stdout
    assert f"lost:     2 record(s) from seq {seq} on" in cp.stdout  # order-4 and order-5
    node2.rename(tmp_path / "node2.damaged")
    (tmp_path / "salvaged").rename(node2)
    c.start(2)
    c.wait_states({0: "active", 1: "ready", 2: "ready"})
    c.wait(lambda: len(positions()) == 1, "the salvaged backup at the primary's position")
    dirs = [c.data_dir(i) for i in range(3)]
    found = run("find", "--json", *dirs, "--subject", "order.created")
    rows = [json.loads(x) for x in found.stdout.splitlines()]
    held = sorted(
        (r["node"], r["message"]["message_id"]) for r in rows if r.get("state") == "queued"
    )
    assert held == sorted((f"node{i}", f"order-{n}") for i in range(3) for n in range(1, 6)), rows
