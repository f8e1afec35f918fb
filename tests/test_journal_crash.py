"""What a journal survives: a second opener of its data dir, SIGKILL mid-stream, damage."""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import pytest
from journal_helpers import (
    PAYLOAD_OFFSET,
    PROCESS_TIMEOUT,
    LineReader,
    kill,
    rewrite_value,
    run_python,
    start_python,
    uid,
)

from qstore.journal import (
    CorruptRecord,
    Dequeue,
    Enqueue,
    Journal,
    JournalLocked,
    JournalReader,
    QueueDeclare,
)

# -- the data dir's lock ------------------------------------------------------------------------

OPEN_SECOND = """
import sys
from qstore.journal import Journal, JournalLocked
try:
    Journal(sys.argv[1])
except JournalLocked as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
print("opened")
"""


def test_second_journal_in_another_process_is_refused_naming_lock_and_pid(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path) as j:
        j.append(QueueDeclare("q", uid(1)))
        done = run_python(OPEN_SECOND, str(tmp_path))
        assert done.returncode == 3, done
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert f"{tmp_path / 'lock'}" in lines[0]
        assert f"pid {os.getpid()}" in lines[0]
        # The holder is unharmed.
        assert j.append(Dequeue("q", 1)) == 2
    # Once the holder is gone, another process may open it.
    done = run_python(OPEN_SECOND, str(tmp_path))
    assert (done.returncode, done.stdout.strip()) == (0, "opened"), done.stderr


def test_second_journal_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        with pytest.raises(JournalLocked) as exc:
            Journal(tmp_path)
        msg = str(exc.value)
        assert "\n" not in msg
        assert str(tmp_path / "lock") in msg
        assert f"pid {os.getpid()}" in msg
        assert j.append(QueueDeclare("q", uid(1))) == 1  # the refused open broke nothing
    with Journal(tmp_path) as j:
        assert j.count() == 1


def test_lock_of_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    code = """
import sys, threading
from qstore.journal import Journal
j = Journal(sys.argv[1])
print("locked", flush=True)
threading.Event().wait()
"""
    proc = start_python(code, str(tmp_path))
    try:
        lines = LineReader(proc)
        assert lines.get(PROCESS_TIMEOUT) == "locked\n"
        with pytest.raises(JournalLocked, match=f"pid {proc.pid}"):
            Journal(tmp_path)
    finally:
        kill(proc)
    with Journal(tmp_path) as j:  # the flock went with the process; the stale pid is no matter
        assert j.count() == 0


# -- SIGKILL mid-stream ----------------------------------------------------------------------------

WRITER = """
import sys, threading, uuid
from qstore.journal import Enqueue, Journal, QueueDeclare
data_dir, threads, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
j = Journal(data_dir)
if "q" not in j.state.queues:
    j.append(QueueDeclare("q", uuid.UUID(int=1)))
print("ready", flush=True)
out = threading.Lock()

def work(t):
    i = 0
    while True:
        msgid = base + t * 1_000_000 + i
        seq = j.append(Enqueue("q", msgid, b"m" * (i % 300)))
        with out:  # printed only once durable
            sys.stdout.write(f"{seq} {msgid}\\n")
            sys.stdout.flush()
        i += 1

for t in range(threads):
    threading.Thread(target=work, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def _run_and_kill(data_dir: Path, base: int, at_least: int) -> dict[int, int]:
    """Start a writer, SIGKILL it once it reported `at_least` records; return seq -> msgid."""
    proc = start_python(WRITER, str(data_dir), "6", str(base))
    durable: dict[int, int] = {}
    try:
        lines = LineReader(proc)
        assert lines.get(PROCESS_TIMEOUT) == "ready\n", "writer did not start"
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while len(durable) < at_least:
            try:
                line = lines.get(max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"writer reported only {len(durable)} records in time")
            assert line is not None, "writer exited early"
            seq, msgid = map(int, line.split())
            durable[seq] = msgid
    finally:
        kill(proc)
    for line in lines.rest():
        if line.endswith("\n"):  # what was printed before the kill was durable too
            seq, msgid = map(int, line.split())
            durable[seq] = msgid
    assert proc.returncode == -9
    return durable


def _check_journal(data_dir: Path, durable: dict[int, int]) -> int:
    """Every durable record is there and the seqs have no gap; return the last seq."""
    with JournalReader.open(data_dir) as r:
        assert r.verify()[1] == []
        entries = list(r.entries())
        held = {e.seq: e.record.msgid for e in entries if isinstance(e.record, Enqueue)}
        state = r.replay()
    seqs = [e.seq for e in entries]
    assert seqs == list(range(1, len(seqs) + 1)), "gap in seqs"
    missing = {s: m for s, m in durable.items() if held.get(s) != m}
    assert not missing, f"{len(missing)} durable records lost, e.g. {list(missing.items())[:5]}"
    assert len(set(held.values())) == len(held)  # no record twice
    assert set(state.queues["q"].messages) == set(held.values())
    return seqs[-1]


def test_replay_after_sigkill_keeps_every_durable_record(tmp_path: Path) -> None:
    durable = _run_and_kill(tmp_path, base=0, at_least=400)
    last = _check_journal(tmp_path, durable)
    assert last >= max(durable)
    # A restarted writer continues after what the killed one left, and can be killed again.
    more = _run_and_kill(tmp_path, base=100_000_000, at_least=200)
    assert min(more) > last
    _check_journal(tmp_path, {**durable, **more})
    with Journal(tmp_path) as j:
        assert j.append(Dequeue("q", 0)) == j.last_seq


# -- damage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "zstd"])
def test_flipped_payload_byte_is_found_by_replay_and_verify(
    tmp_path: Path, compressed: bool
) -> None:
    body = b"body " * 2000 if compressed else b"small body"
    with Journal(tmp_path) as j:
        j.append(QueueDeclare("q", uid(1)))
        seqs = [j.append(Enqueue("q", i, body)) for i in range(5)]
    bad = seqs[2]
    old = rewrite_value(tmp_path, bad, offset=PAYLOAD_OFFSET + 3)
    with JournalReader.open(tmp_path) as r:
        with pytest.raises(CorruptRecord) as exc:
            r.replay()
        assert exc.value.seq == bad
        assert f"seq={bad}" in str(exc.value)
        assert "crc32c mismatch" in str(exc.value)
        n, damaged = r.verify()
        assert n == 6
        assert [d.seq for d in damaged] == [bad]
        with pytest.raises(CorruptRecord, match=f"seq={bad} "):
            r.check_all()
        # The records before the damage still read.
        assert [e.seq for e in r.entries(end=bad - 1)] == [1, *seqs[:2]]
    with pytest.raises(CorruptRecord, match=f"seq={bad} "):
        Journal(tmp_path)  # a broker does not start on a damaged journal...
    # ...and the refused open left the lock free: after a repair it opens.
    rewrite_value(tmp_path, bad, offset=PAYLOAD_OFFSET + 3)  # flip it back
    assert old
    with Journal(tmp_path) as j:
        assert j.verify() == (6, [])
        assert len(j.replay().queues["q"].messages) == 5


def test_flipped_header_byte_is_found(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append(QueueDeclare("q", uid(1)))
        s = j.append(Enqueue("q", 1, b"x"))
    rewrite_value(tmp_path, s, offset=5)  # inside the epoch field
    with JournalReader.open(tmp_path) as r:
        _, damaged = r.verify()
        assert [d.seq for d in damaged] == [s]
        with pytest.raises(CorruptRecord, match=f"seq={s} "):
            r.replay()
