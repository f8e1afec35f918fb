"""`qstore-journal` run as a subprocess on copies of the committed fixtures (fixtures/README.md).

The fixtures are copied to tmp_path first (data.mdb only), so the repository is never touched.
Journals built here for a case the fixtures lack are real ones, written through `Journal`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from inspect_support import (
    CLEAN_NODE,
    DAMAGED_SEQ,
    FIXTURES,
    MAP,
    TIMEOUT,
    copy_fixture,
    one_error_line,
    run,
)

from qstore.journal import (
    Dequeue,
    Enqueue,
    Journal,
    JournalReader,
    QueueDeclare,
    Record,
)
from tools._inspect_common import Progress

SHARED = 8  # diverge-a and diverge-b share origin seqs 1..8
NODE_A = uuid.UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
NODE_B = uuid.UUID("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb")


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    return copy_fixture("clean", tmp_path)


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    return copy_fixture("damaged", tmp_path)


# -- summary ----------------------------------------------------------------------------------


def test_summary_text(clean: Path) -> None:
    cp = run("summary", clean)
    assert cp.returncode == 0, cp.stderr
    assert cp.stderr == ""
    out = cp.stdout
    assert f"node id:   {CLEAN_NODE}" in out
    assert "format:    1" in out
    assert "records:   20 (seq 1..20)" in out
    assert "position:  (epoch 1, seq 20)" in out
    assert f"1      {CLEAN_NODE}  1" in out  # epoch 1, its node, from seq 1
    assert "enqueue           8" in out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if line[:4] == "  or"}
    assert rows["orders"] == ["3", "189"]
    assert "  audit   2      5700" in out
    assert "events  topic" in out
    assert "events    orders  order.#" in out
    assert "scratch" not in out  # deleted


def test_summary_json_before_or_after_the_verb(clean: Path) -> None:
    after, before = run("summary", clean, "--json"), run("--json", "summary", clean)
    assert after.returncode == before.returncode == 0
    assert after.stdout == before.stdout
    s = json.loads(after.stdout)
    assert s["node_id"] == CLEAN_NODE
    assert s["format_version"] == 1
    assert s["records"] == 20 and s["seq_range"] == [1, 20]
    assert s["epochs"] == [{"number": 1, "node": CLEAN_NODE, "origin": 1, "seq": 1}]
    assert s["records_by_type"]["enqueue"] == 8 and s["records_by_type"]["dequeue"] == 3
    queues = {q["name"]: q for q in s["queues"]}
    assert set(queues) == {"orders", "audit"}
    assert (queues["orders"]["depth"], queues["orders"]["bytes"]) == (3, 189)
    assert queues["orders"]["arguments"] == {"qpid.replicate": "all", "qpid.max_count": 1000}
    assert s["exchanges"][0]["name"] == "events" and s["exchanges"][0]["type"] == "topic"
    assert len(s["bindings"]) == 2
    assert s["size_on_disk"] >= (clean / "journal" / "data.mdb").stat().st_size


def test_reading_leaves_a_lockless_copy_untouched(clean: Path) -> None:
    before = sorted(p.name for p in clean.rglob("*"))
    for verb in ("summary", "verify", "dump", "export"):
        assert run(verb, clean).returncode == 0
    assert run("messages", clean, "--queue", "orders").returncode == 0
    assert sorted(p.name for p in clean.rglob("*")) == before == ["data.mdb", "journal"]


def test_summary_of_a_journal_a_writer_holds_open(clean: Path) -> None:
    with Journal(clean, map_size=MAP) as j:
        j.append_many([QueueDeclare("live", uuid.UUID(int=99)), Enqueue("live", 1, b"hello")])
        cp = run("summary", "--json", clean)
        assert cp.returncode == 0, cp.stderr
        s = json.loads(cp.stdout)
        live = {q["name"]: q for q in s["queues"]}["live"]
        assert (live["depth"], live["bytes"]) == (1, 5)
        # (the writer compacts what the fixture's dequeues cancelled: fewer records, same state)
        orders = {q["name"]: q for q in s["queues"]}["orders"]
        assert (orders["depth"], orders["bytes"]) == (3, 189)
        # The writer still owns its journal after the tool read it.
        j.append(Dequeue("live", 1))
        assert run("messages", clean, "--queue", "live").stdout.startswith("MSGID")


# -- dump / export ----------------------------------------------------------------------------


def test_dump_lines(clean: Path) -> None:
    cp = run("dump", clean)
    assert cp.returncode == 0 and cp.stderr == ""
    lines = cp.stdout.splitlines()
    assert len(lines) == 20
    assert lines[0] == f"seq=1 epoch=1 origin=1 type=epoch flags=- number=1 node={CLEAN_NODE}"
    assert lines[7].startswith("seq=8 epoch=1 origin=8 type=enqueue flags=- queue=orders msgid=1 ")
    assert lines[7].endswith(
        ' size=63 message-id=order-1 subject=order.created durable=true body="order 1: 1 x widget"'
    )
    # the record's priority (7) is what the broker uses; the header's is shown when it differs
    assert " priority=7 " in lines[10] and " amqp-priority=4 " in lines[10]
    assert "type=enqueue flags=compressed queue=audit msgid=3" in lines[12]
    assert lines[15].endswith("type=delivery flags=- queue=orders msgid=3 delivery_count=1")


def test_dump_filters(clean: Path) -> None:
    seqs = [
        int(x.split()[0][4:])
        for x in run("dump", clean, "--from", 5, "--to", 9).stdout.split("\n")
        if x
    ]
    assert seqs == [5, 6, 7, 8, 9]
    lines = run("dump", clean, "--type", "dequeue", "--type", "delivery").stdout.splitlines()
    assert [x.split()[3] for x in lines] == ["type=dequeue"] * 2 + ["type=delivery", "type=dequeue"]
    lines = run("dump", clean, "--queue", "orders", "--type", "enqueue").stdout.splitlines()
    assert [x.split()[6] for x in lines] == [f"msgid={i}" for i in range(1, 6)]
    lines = run("dump", clean, "--queue", "scratch").stdout.splitlines()
    assert [x.split()[3] for x in lines] == ["type=queue-declare", "type=queue-delete"]


def test_dump_json_and_export(clean: Path) -> None:
    dump = run("dump", "--json", clean)
    export = run("export", clean)
    assert dump.returncode == export.returncode == 0
    head, rest = export.stdout.split("\n", 1)  # export: a header line first (import's node id)
    assert json.loads(head)["journal"]["node_id"] == CLEAN_NODE
    assert dump.stdout == rest
    records = [json.loads(x) for x in rest.splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 21))
    enq = records[12]
    assert enq["type"] == "enqueue" and enq["flags"] == ["compressed"]
    body = base64.b64decode(enq["record"]["body"])
    assert len(body) == 5647 and b"line 0199 of a long invoice" in body
    assert records[1]["record"] == {
        "name": "orders",
        "uuid": "00000000-0000-4000-8000-000000000001",
        "arguments": {"qpid.max_count": 1000, "qpid.replicate": "all"},
    }


def test_dump_and_export_flag_the_damaged_record(damaged: Path) -> None:
    cp = run("dump", damaged)
    assert cp.returncode == 1
    assert f"seq={DAMAGED_SEQ} DAMAGED: crc32c mismatch" in cp.stdout
    assert len(cp.stdout.splitlines()) == 20  # the others are still shown
    assert "1 damaged record" in one_error_line(cp)
    cp = run("export", damaged)
    assert cp.returncode == 1
    bad = [json.loads(x) for x in cp.stdout.splitlines() if "damaged" in json.loads(x)]
    assert [b["seq"] for b in bad] == [DAMAGED_SEQ]
    assert base64.b64decode(bad[0]["value"])


# -- verify -----------------------------------------------------------------------------------


def test_verify_clean(clean: Path) -> None:
    cp = run("verify", clean)
    assert (cp.returncode, cp.stdout, cp.stderr) == (0, "ok: 20 records\n", "")


def test_verify_damaged_names_the_seq(damaged: Path) -> None:
    cp = run("verify", damaged)
    assert cp.returncode == 1
    lines = cp.stdout.splitlines()
    assert lines[0].startswith(f"seq {DAMAGED_SEQ}: crc32c mismatch")
    assert lines[-1] == "damaged: 1 of 20 records"
    assert f"**seq {DAMAGED_SEQ}**" in (FIXTURES / "README.md").read_text()


@pytest.mark.parametrize("verb", [["summary"], ["messages", "--queue", "orders"]])
def test_replaying_a_damaged_journal_is_one_line_naming_the_seq(
    damaged: Path, verb: list[str]
) -> None:
    cp = run(verb[0], damaged, *verb[1:])
    assert cp.returncode == 1
    assert cp.stdout == ""
    assert f"seq={DAMAGED_SEQ} is damaged" in one_error_line(cp)


# -- messages ---------------------------------------------------------------------------------


def test_messages(clean: Path) -> None:
    cp = run("messages", clean, "--queue", "orders")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0].split() == [
        "MSGID",
        "SEQ",
        "SIZE",
        "PRIORITY",
        "EXPIRY",
        "DELIVERIES",
        "POSITION",
        "MESSAGE-ID",
        "SUBJECT",
        "BODY",
    ]
    assert lines[1].split()[:8] == ["3", "10", "63", "4", "never", "1", "(1,", "10)"]
    assert lines[1].split()[8:] == ["order-3", "order.created", '"order', "3:", "3", "x", 'widget"']
    assert [x.split()[0] for x in lines[1:4]] == ["3", "4", "5"]
    assert lines[-1] == "3 messages, 189 bytes in queue 'orders'"
    msgs = [
        json.loads(x)
        for x in run("messages", "--json", clean, "--queue", "audit").stdout.splitlines()
    ]
    message = msgs[0].pop("message")
    assert msgs[0] == {
        "msgid": 1,
        "seq": 11,
        "size": 53,
        "priority": 7,
        "expiry": 0,
        "delivery_count": 0,
        "position": [1, 11],
    }
    assert (message["message_id"], message["subject"], message["body"]) == (
        "audit-1",
        "audit.login",
        "login alice",
    )
    assert [m["msgid"] for m in msgs] == [1, 3]


def test_messages_of_an_unknown_queue(clean: Path) -> None:
    cp = run("messages", clean, "--queue", "nope")
    assert cp.returncode == 1 and cp.stdout == ""
    assert "no queue 'nope'" in one_error_line(cp) and "'orders'" in cp.stderr


# -- diff -------------------------------------------------------------------------------------


def test_diff_identical(tmp_path: Path, clean: Path) -> None:
    other = copy_fixture("clean", tmp_path / "other")
    for a, b in ((clean, other), (clean, clean)):
        cp = run("diff", a, b)
        assert (cp.returncode, cp.stdout, cp.stderr) == (0, "identical\n", "")


def test_diff_skips_what_compaction_removed(tmp_path: Path, clean: Path) -> None:
    compacted = copy_fixture("clean", tmp_path / "other")
    with Journal(compacted, map_size=MAP) as j:
        j.compact()
    with JournalReader.open(compacted) as r:
        assert r.count() < 20
    for a, b in ((clean, compacted), (compacted, clean)):
        cp = run("diff", a, b)
        assert (cp.returncode, cp.stdout) == (0, "identical\n")


def test_diff_diverged_fixtures(tmp_path: Path) -> None:
    a, b = copy_fixture("diverge-a", tmp_path), copy_fixture("diverge-b", tmp_path)
    cp = run("diff", a, b)
    assert cp.returncode == 1 and cp.stderr == ""
    head, side_a, side_b = cp.stdout.splitlines()
    assert head.startswith(f"diverge at (epoch 1, seq {SHARED + 1}): different epochs")
    assert str(NODE_A) in head and str(NODE_B) in head
    assert side_a.startswith(f"  {a}: seq={SHARED + 1} epoch=1 origin={SHARED + 1} type=enqueue")
    assert side_b.startswith(f"  {b}: seq={SHARED + 3} epoch=2 origin={SHARED + 1} type=epoch")
    back = run("diff", b, a)
    assert back.returncode == 1
    assert back.stdout.startswith(f"diverge at (epoch 2, seq {SHARED + 1}):")
    j = json.loads(run("diff", "--json", a, b).stdout)
    assert j["result"] == "diverge" and j["message"].startswith("diverge at (epoch 1, seq 9)")


def test_diff_prefix_reports_replicated_state(tmp_path: Path) -> None:
    a = copy_fixture("diverge-a", tmp_path)
    behind = copy_fixture("diverge-a", tmp_path / "behind")
    with Journal(behind, map_size=MAP) as j:
        j.truncate_after(SHARED)  # A as it was when B was promoted
    cp = run("diff", a, behind)
    assert cp.returncode == 1
    line = cp.stdout.strip()
    assert line == (
        "replicated state differs: queue 'orders': 3 vs 2 messages; "
        f"msgid 4, 5 only in {a}; msgid 3 only in {behind}"
    )
    j = json.loads(run("diff", a, behind, "--json").stdout)
    assert j["result"] == "state-differs"


def test_diff_damaged_is_one_line_naming_the_seq(clean: Path, damaged: Path) -> None:
    cp = run("diff", clean, damaged)
    assert cp.returncode == 1
    line = one_error_line(cp)
    assert str(damaged) in line and f"seq={DAMAGED_SEQ} is damaged" in line


def build(data_dir: Path, node: uuid.UUID, batches: list[list[Record]]) -> Journal:
    """A journal (left open, compaction held back) whose records are `batches`, after epoch 1."""
    j = Journal(data_dir, map_size=MAP)
    j.set_compaction_horizon(0)
    j.start_epoch(1, node)
    for batch in batches:
        j.append_many(batch)
    return j


def follow(data_dir: Path, leader: JournalReader) -> Journal:
    """A backup's journal: the leader's records, replicated (leader's epochs and origin seqs)."""
    j = Journal(data_dir, map_size=MAP)
    j.set_compaction_horizon(0)
    for e in leader.entries():
        j.append_many([e.record], epoch=e.epoch, origin=e.origin, replica=True)
    return j


Q = uuid.UUID(int=1)


def test_diff_different_record_at_the_same_position(tmp_path: Path) -> None:
    declare = [QueueDeclare("q", Q)]
    with build(tmp_path / "a", NODE_A, [declare, [Enqueue("q", 1, b"one")]]):
        pass
    with build(tmp_path / "b", NODE_A, [declare, [Enqueue("q", 1, b"uno")]]):
        pass
    cp = run("diff", tmp_path / "a", tmp_path / "b")
    assert cp.returncode == 1
    assert cp.stdout.startswith(
        "diverge at (epoch 1, seq 3): different records at the same position"
    )


def test_diff_finds_a_new_epoch_where_the_other_side_compacted(tmp_path: Path) -> None:
    a = build(tmp_path / "a", NODE_A, [[QueueDeclare("q", Q)]])
    with follow(tmp_path / "b", a) as b:
        b.start_epoch(2, NODE_B)  # origin 3
        b.append_many([Enqueue("q", 9, b"b"), Enqueue("q", 10, b"b")])
    with a:
        a.append_many([Enqueue("q", 1, b"a")])  # origin 3 ...
        a.append(Dequeue("q", 1))  # ... cancelled at origin 4
        a.append(Enqueue("q", 2, b"a"))
        a.set_compaction_horizon(None)
        a.compact()
    with JournalReader.open(tmp_path / "a") as r:
        assert [e.origin for e in r.entries()] == [1, 2, 5]
    cp = run("diff", tmp_path / "a", tmp_path / "b")
    assert cp.returncode == 1
    lines = cp.stdout.splitlines()
    assert lines[0].startswith("diverge at (epoch 1, seq 3): different epochs")
    assert "no record at this seq" in lines[1]
    assert "type=epoch" in lines[2]


@pytest.mark.parametrize(("level", "identical"), [("none", True), ("all", False)])
def test_diff_compares_only_replicated_state(tmp_path: Path, level: str, identical: bool) -> None:
    with (
        build(tmp_path / "a", NODE_A, [[QueueDeclare("q", Q)]]) as a,
        follow(tmp_path / "b", a) as b,
    ):
        b.append(QueueDeclare("private", uuid.UUID(int=2), {"qpid.replicate": level}))
    cp = run("diff", tmp_path / "a", tmp_path / "b")
    if identical:
        assert (cp.returncode, cp.stdout) == (0, "identical\n")
    else:
        assert cp.returncode == 1
        assert (
            cp.stdout.strip()
            == f"replicated state differs: queue 'private' only in {tmp_path / 'b'}"
        )


# -- errors and usage -------------------------------------------------------------------------


def test_missing_or_foreign_directory(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage" / "journal"
    garbage.mkdir(parents=True)
    (garbage / "data.mdb").write_bytes(os.urandom(8192))
    for d in (tmp_path / "nope", tmp_path, tmp_path / "garbage"):
        for verb in (["summary"], ["verify"], ["dump"], ["diff", d], ["messages", "--queue", "q"]):
            cp = run(verb[0], d, *verb[1:])
            assert cp.returncode == 2, (verb, d, cp.stderr)
            assert cp.stdout == ""
            assert one_error_line(cp).startswith("qstore-journal: ")


def test_bad_usage(clean: Path) -> None:
    for args in (
        [],
        ["frobnicate", clean],
        ["dump", clean, "--type", "bogus"],
        ["dump", clean, "--from", "x"],
        ["messages", clean],
        ["dump", clean, "--from", "5", "--to", "2"],
        ["diff", clean],
    ):
        cp = run(*args)
        assert cp.returncode == 2, args
        assert "Traceback" not in cp.stderr
        assert cp.stderr.startswith("usage: qstore-journal")
        assert cp.stderr.splitlines()[-1].startswith("qstore-journal")
    assert "unknown record type 'bogus'" in run("dump", clean, "--type", "bogus").stderr


# -- progress ---------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """What the bar writes to, taken for a terminal (as stderr is when a person runs the tool)."""

    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_shows_records_per_second_and_clears() -> None:
    out = Terminal()
    p = Progress(10_000, "reading", stream=out, delay=0)
    p(4096)
    shown = out.getvalue()
    assert shown.startswith("\r") and "reading:" in shown and "/10.0k" in shown
    assert " records/s" in shown
    p.clear()
    assert out.getvalue().endswith("\r")  # the line was erased (leave=False)
    assert out.getvalue()[len(shown) :].strip() == ""


def test_progress_waits_before_it_shows() -> None:
    out = Terminal()
    with Progress(10, stream=out, delay=3600) as p:
        p(10)
    assert out.getvalue() == ""


def test_progress_is_silent_when_stderr_is_not_a_terminal() -> None:
    out = io.StringIO()
    with Progress(10, stream=out, delay=0) as p:
        p(10)
    assert out.getvalue() == "" and p.done == 10


def test_progress_of_an_unknown_total_counts_with_a_rate() -> None:
    out = Terminal()
    with Progress(None, "importing", stream=out, delay=0) as p:
        p(5)
    assert "importing: 0" in out.getvalue() and " records/s" in out.getvalue()


# -- the fixtures' generator ------------------------------------------------------------------


def test_make_fixtures_reproduces_the_committed_fixtures(tmp_path: Path) -> None:
    gen = tmp_path / "gen"
    cp = subprocess.run(
        [sys.executable, str(FIXTURES / "make_fixtures.py"), "--out", str(gen)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    assert f"seq {DAMAGED_SEQ}" in cp.stdout
    assert (gen / "README.md").read_text() == (FIXTURES / "README.md").read_text()
    committed = tmp_path / "committed"
    for name in ("clean", "damaged", "diverge-a", "diverge-b"):
        ours = copy_fixture(name, committed)
        assert run("export", gen / name).stdout == run("export", ours).stdout, name
        if name != "damaged":
            s1, s2 = (json.loads(run("summary", "--json", d).stdout) for d in (gen / name, ours))
            for s in (s1, s2):
                del s["data_dir"], s["size_on_disk"]
            assert s1 == s2, name


def test_progress_line_is_erased_when_the_scan_fails() -> None:
    out = Terminal()
    with pytest.raises(RuntimeError), Progress(10, "x", stream=out, delay=0) as p:
        p(5)
        raise RuntimeError("damaged")
    assert "x:" in out.getvalue() and out.getvalue().endswith("\r")
