"""`qstore-journal import DST FILE` restores what `export` wrote: the round trip export -> import
-> export gives the same lines (the committed fixtures, and journals hypothesis makes through the
real `Journal`), the restored journal is the same node in the same state, and every bad line is
refused with one line naming it, leaving no target behind."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inspect_support import CLEAN_NODE, DAMAGED_SEQ, MAP, copy_fixture, encoded, one_error_line, run

from qstore.journal import (
    Bind,
    Delivery,
    Dequeue,
    Enqueue,
    ExchangeDeclare,
    Journal,
    JournalReader,
    QueueDeclare,
    QueueDelete,
    Record,
    Unbind,
)
from tools.journal_inspect import main


def export_to(d: Path, out: Path) -> str:
    cp = run("export", d)
    assert cp.returncode == 0, cp.stderr
    out.write_text(cp.stdout)
    return cp.stdout


@pytest.mark.parametrize("name", ["clean", "diverge-a", "diverge-b"])
def test_round_trip_of_the_fixtures(tmp_path: Path, name: str) -> None:
    src = copy_fixture(name, tmp_path)
    first = export_to(src, tmp_path / "export.jsonl")
    cp = run("import", tmp_path / "restored", tmp_path / "export.jsonl")
    assert cp.returncode == 0, cp.stderr
    node = json.loads(first.splitlines()[0])["journal"]["node_id"]
    records = len(first.splitlines()) - 1
    assert cp.stdout == f"imported {records} record(s) into {tmp_path / 'restored'} (node {node})\n"
    assert run("export", tmp_path / "restored").stdout == first
    a, b = (json.loads(run("summary", "--json", d).stdout) for d in (src, tmp_path / "restored"))
    for s in (a, b):
        del s["data_dir"], s["size_on_disk"]
    assert a == b
    assert run("diff", src, tmp_path / "restored").stdout == "identical\n"


def test_export_starts_with_the_journal_header(tmp_path: Path) -> None:
    clean = copy_fixture("clean", tmp_path)
    head, *records = run("export", clean).stdout.splitlines()
    assert json.loads(head) == {
        "journal": {
            "node_id": CLEAN_NODE,
            "format_version": 1,
            "created": "2026-01-01T00:00:00+00:00",
            "high_water": None,
        }
    }
    assert "\n".join(records) + "\n" == run("dump", "--json", clean).stdout


def test_a_dump_without_header_gets_a_new_node_id(tmp_path: Path) -> None:
    clean = copy_fixture("clean", tmp_path)
    (tmp_path / "dump.jsonl").write_text(run("dump", "--json", clean).stdout)
    cp = run("import", "--json", tmp_path / "new", tmp_path / "dump.jsonl")
    assert cp.returncode == 0, cp.stderr
    node = json.loads(cp.stdout)["node_id"]
    assert node != CLEAN_NODE and uuid.UUID(node)
    with JournalReader.open(tmp_path / "new") as r:
        assert str(r.node_id) == node and r.count() == 20


def test_import_from_stdin_keeps_the_high_water_mark(tmp_path: Path) -> None:
    clean = copy_fixture("clean", tmp_path)
    with Journal(clean, map_size=MAP) as j:
        j.truncate_after(15)  # seqs 16..20 were used: never again for another record
    text = run("export", clean).stdout
    assert json.loads(text.splitlines()[0])["journal"]["high_water"] == 20
    assert run("import", tmp_path / "restored", "-", stdin=text).returncode == 0
    with Journal(tmp_path / "restored", map_size=MAP) as j:
        assert j.append(Dequeue("orders", 3)) == 21


def test_damaged_records_are_refused_unless_skipped(tmp_path: Path) -> None:
    damaged = copy_fixture("damaged", tmp_path)
    (tmp_path / "d.jsonl").write_text(run("export", damaged).stdout)
    cp = run("import", tmp_path / "out", tmp_path / "d.jsonl")
    assert cp.returncode == 2 and cp.stdout == ""
    line = one_error_line(cp)
    assert f"d.jsonl line {DAMAGED_SEQ + 1}: record seq={DAMAGED_SEQ} is marked damaged" in line
    assert not (tmp_path / "out").exists()
    cp = run("import", tmp_path / "out", tmp_path / "d.jsonl", "--skip-damaged")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines()[1] == f"skipped 1 record(s) marked damaged: seq {DAMAGED_SEQ}"
    assert run("verify", tmp_path / "out").stdout == "ok: 19 records\n"


ENQ = {"queue": "q", "msgid": 1, "body": "", "priority": 4, "expiry": 0, "delivery_count": 0}
DLV = {"queue": "q", "msgid": 1, "delivery_count": 1}
GOOD = {"seq": 5, "epoch": 1, "origin": 5, "type": "dequeue", "flags": [], "size": 0}


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{not json", "line 2: not JSON"),
        ("[1]", "line 2: not a JSON object"),
        (json.dumps({**GOOD, "type": "nope", "record": {}}), "unknown record type 'nope'"),
        (json.dumps({**GOOD, "record": {"queue": "q"}}), "dequeue: field(s) ['msgid'] missing"),
        (json.dumps({**GOOD, "record": {"queue": 1, "msgid": 1}}), "dequeue: queue is not text"),
        (json.dumps({**GOOD, "record": {"queue": "q", "msgid": -1}}), "msgid is not an unsigned"),
        (json.dumps({**GOOD, "seq": 0, "record": {"queue": "q", "msgid": 1}}), "seq 0 is not"),
        (json.dumps({**GOOD, "epoch": 1 << 40, "record": {"queue": "q", "msgid": 1}}), "epoch"),
        (json.dumps({**GOOD, "flags": ["x"], "record": {"queue": "q", "msgid": 1}}), "flag 'x'"),
        (
            json.dumps({**GOOD, "type": "enqueue", "record": {**ENQ, "body": "!!"}}),
            "enqueue: body is not base64",
        ),
        (
            json.dumps({**GOOD, "type": "queue-delete", "record": {"name": "q", "uuid": "u"}}),
            "queue-delete: uuid is not a uuid",
        ),
        (
            json.dumps({**GOOD, "type": "delivery", "record": {**DLV, "delivery_count": 1 << 40}}),
            "delivery: a field out of range",
        ),
    ],
)
def test_bad_lines_are_one_line_errors(tmp_path: Path, line: str, says: str) -> None:
    first = json.dumps({**GOOD, "seq": 1, "origin": 1, "record": {"queue": "q", "msgid": 1}})
    (tmp_path / "f.jsonl").write_text(first + "\n" + line + "\n")
    cp = run("import", tmp_path / "out", tmp_path / "f.jsonl")
    assert cp.returncode == 2, cp.stderr
    assert says in one_error_line(cp)
    assert not (tmp_path / "out").exists()


def test_out_of_order_and_refused_targets(tmp_path: Path) -> None:
    rec = {**GOOD, "record": {"queue": "q", "msgid": 1}}
    (tmp_path / "f.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    cp = run("import", tmp_path / "out", tmp_path / "f.jsonl")
    assert "f.jsonl line 2: seq 5 comes after seq 5: not in order" in one_error_line(cp)
    clean = copy_fixture("clean", tmp_path)
    cp = run("import", clean, tmp_path / "f.jsonl")
    assert cp.returncode == 2 and "not empty" in one_error_line(cp)
    cp = run("import", tmp_path / "out", tmp_path / "missing.jsonl")
    assert cp.returncode == 2 and "missing.jsonl" in one_error_line(cp)
    cp = run("import", tmp_path / "out", tmp_path)
    assert cp.returncode == 2 and "Is a directory" in one_error_line(cp)
    (tmp_path / "latin1.jsonl").write_bytes(json.dumps(rec).encode() + b"\n\xff\xfe\n")
    cp = run("import", tmp_path / "out", tmp_path / "latin1.jsonl")
    assert cp.returncode == 2 and "latin1.jsonl line 2: not UTF-8 text" in one_error_line(cp)
    assert not (tmp_path / "out").exists()


# -- the round trip, property-tested ---------------------------------------------------------

QUEUES = ["a", "b"]


def records() -> st.SearchStrategy[Record]:
    q = st.sampled_from(QUEUES)
    msgid = st.integers(1, 6)
    body = st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda t: encoded(body=t, id="m", durable=True)),
    )
    return st.one_of(
        st.builds(QueueDeclare, q, st.integers(1, 3).map(lambda n: uuid.UUID(int=n))),
        st.builds(QueueDelete, q, st.integers(1, 3).map(lambda n: uuid.UUID(int=n))),
        st.builds(ExchangeDeclare, st.just("x"), st.just(uuid.UUID(int=9)), st.just("topic")),
        st.builds(Bind, st.just("x"), q, st.sampled_from(["k", ""]), st.just({"n": 1})),
        st.builds(Unbind, st.just("x"), q, st.sampled_from(["k", ""])),
        st.builds(
            Enqueue, q, msgid, body, st.integers(0, 9), st.integers(0, 1 << 50), st.integers(0, 3)
        ),
        st.builds(Dequeue, q, msgid),
        st.builds(Delivery, q, msgid, st.integers(0, 5)),
    )


def in_process(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*args])
    assert code in (0, 1), (args, code)
    return out.getvalue()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(records(), min_size=1, max_size=6), max_size=8),
    replica=st.booleans(),
    compact=st.booleans(),
    cut=st.none() | st.integers(0, 40),
)
def test_export_import_export_is_identical(
    batches: list[list[Record]], replica: bool, compact: bool, cut: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst, file = Path(tmp, "src"), Path(tmp, "dst"), Path(tmp, "export.jsonl")
        with Journal(src, map_size=MAP, compress_threshold=64, auto_compact=False) as j:
            origin = 0
            if not replica:
                j.start_epoch(1)
            for batch in batches:  # a backup's journal: the primary's positions, flagged replica
                if replica:
                    j.append_many(batch, epoch=3, origin=origin + 1, replica=True)
                    origin += len(batch)
                else:
                    j.append_many(batch)
            if cut is not None:
                j.truncate_after(cut)  # seqs used and gone: the high-water mark
            if compact:
                j.compact()  # holes in the seqs
        first = in_process("export", str(src))
        file.write_text(first)
        in_process("import", str(dst), str(file))
        assert in_process("export", str(dst)) == first


def test_a_history_record_round_trips(tmp_path: Path) -> None:
    """A backup resynced by snapshot holds history records (its epochs and position): export
    shows them as JSON, import writes them back, and the restored journal has the same history."""
    from qstore.journal import History

    src = tmp_path / "src"
    node = uuid.uuid4()
    with Journal(src) as j:
        j.append(QueueDeclare("q", uuid.uuid4(), {}), epoch=0, origin=0)
        j.append(History([]), epoch=0, origin=0, replica=True)
        j.append(History([(1, node, 1), (3, node, 40)]), epoch=3, origin=57, replica=True)
    first = export_to(src, tmp_path / "export.jsonl")
    line = json.loads(first.splitlines()[-1])
    assert line["type"] == "history"
    assert line["record"] == {"epochs": [[1, str(node), 1], [3, str(node), 40]]}
    cp = run("import", tmp_path / "restored", tmp_path / "export.jsonl")
    assert cp.returncode == 0, cp.stderr
    assert run("export", tmp_path / "restored").stdout == first
    with JournalReader.open(src) as a, JournalReader.open(tmp_path / "restored") as b:
        sa, sb = (r.replay(keep_bodies=False) for r in (a, b))
    assert sa.position == sb.position == (3, 57)
    assert [(e.number, e.node, e.origin) for e in sb.epochs] == [(1, node, 1), (3, node, 40)]
    assert [(e.number, e.node, e.origin) for e in sa.epochs] == [(1, node, 1), (3, node, 40)]
    dump = run("dump", tmp_path / "restored")
    assert dump.returncode == 0 and f'epochs=[[1,"{node}",1],[3,"{node}",40]]' in dump.stdout
