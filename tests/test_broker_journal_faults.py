"""Journal I/O faults other than a full map, through a real broker: a full disk (a small tmpfs)
and a write error injected at the journal writer's commit (qstore/journal/faults.py). Each
ends as a refusal the sender can read, never as an accepted message missing from the journal;
the broker says so in its log and in qstore-stat, and takes work again once the fault is gone,
which a restart confirms: every accepted message is there, nothing consumed came back."""

from __future__ import annotations

from pathlib import Path

import pytest
from broker_clients import TIMEOUT, body, fetch
from broker_harness import Brokers
from flood import flood, journal_status, qstore_stat, stat_journal, wait_journal
from proton import Delivery, Message
from proton.utils import BlockingConnection, SendException
from small_fs import small_fs

from qstore.journal import JournalReader
from qstore.journal.faults import ENV_VAR

PAD = 1000


def _consume(url: str, n: int) -> list[int]:
    """Receive and accept `n` messages from `q` (a prefetching consumer)."""
    conn = BlockingConnection(url, timeout=TIMEOUT)
    try:
        rcv = conn.create_receiver("q", credit=100)
        got = []
        for _ in range(n):
            got.append(body(rcv.receive(timeout=TIMEOUT)))
            rcv.accept()
        return got
    finally:
        conn.close()


def _live_in_journal(data_dir: Path) -> int:
    with JournalReader.open(data_dir) as r:
        assert r.verify()[1] == []
        return len(r.replay(keep_bodies=False).queues["q"].messages)


def test_a_full_disk_refuses_new_messages_keeps_serving_and_recovers_when_space_is_freed(
    brokers: Brokers, tmp_path: Path
) -> None:
    with small_fs(tmp_path / "fs", 4 << 20) as fs:
        data = fs.path / "data"
        args = ["--auto-create", "yes", "--journal-max-size", "16MiB"]  # the disk fills first
        b = brokers.start(data_dir=data, args=args, wrap=fs.wrap)
        ballast = fs.outside(fs.path / "ballast")
        ballast.write_bytes(bytes(1536 << 10))
        out = flood(b.url, "q", range(100_000), pad=PAD)
        assert out.refused and len(out.accepted) > 500, (len(out.accepted), out.refused[:1])
        for _, condition, text in out.refused:
            assert condition == "amqp:resource-limit-exceeded", (condition, text)
            assert text.startswith("not stored: journal is full (disk full, "), text
        status = journal_status(b.url)
        assert status["state"] == "full" and status["reason"].startswith("disk full"), status
        assert "Journal: full (disk full, " in qstore_stat(b.url, "-b")
        log = b.log()
        assert log.count(" is full (disk full, ") == 1, log

        # A full disk still takes dequeues: consumers go on (and what they took stays gone).
        consumed = _consume(b.url, 200)
        assert consumed == out.accepted[:200]

        ballast.unlink()  # the fault clears: the broker notices by itself
        wait_journal(b.url, "writable", timeout=10)
        assert stat_journal(b.url)["state"] == "writable"
        again = flood(b.url, "q", range(200_000, 200_050), pad=PAD)
        assert not again.refused and sorted(again.accepted) == list(range(200_000, 200_050))
        log = b.log()
        assert log.count(" is writable again ") == 1 and "not journaled" not in log, log
        assert "Traceback" not in log

        assert b.terminate() == 0
        expected = out.accepted[200:] + again.accepted
        assert _live_in_journal(fs.outside(data)) == len(expected)
        b = brokers.start(data_dir=data, args=args, wrap=fs.wrap)
        assert sorted(fetch(b.url, "q")) == sorted(expected)


def test_a_write_error_at_commit_refuses_with_internal_error_and_clears_when_the_fault_goes(
    brokers: Brokers, tmp_path: Path
) -> None:
    fault = tmp_path / "journal-fault"
    args = ["--auto-create", "yes"]
    b = brokers.start(args=args, env={ENV_VAR: str(fault)})
    before = flood(b.url, "q", range(20), pad=PAD)
    assert before.accepted == list(range(20)) and not before.refused

    fault.write_text("EIO")
    failing = flood(b.url, "q", range(100, 110), pad=PAD, stop_after=10)
    assert not failing.accepted and len(failing.refused) == 10
    for _, condition, text in failing.refused:
        assert condition == "amqp:internal-error", (condition, text)
        assert text == (
            "not stored: journal write failed: [Errno 5] injected Input/output error at commit "
            f"({ENV_VAR})"
        )
    status = journal_status(b.url)
    assert status["state"] == "failed" and "Input/output error" in status["reason"], status
    assert "Journal: failed (journal write failed: " in qstore_stat(b.url, "-b")
    assert b.log().count("write failed (") == 1

    fault.unlink()
    after = flood(b.url, "q", range(200, 220), pad=PAD)
    assert after.accepted == list(range(200, 220)) and not after.refused
    assert journal_status(b.url)["state"] == "writable"
    log = b.log()
    assert log.count(" is writable again ") == 1 and "Traceback" not in log, log

    assert b.terminate() == 0
    assert _live_in_journal(b.data_dir) == 40
    b = brokers.start(data_dir=b.data_dir, args=args)
    assert sorted(fetch(b.url, "q")) == list(range(20)) + list(range(200, 220))


def test_a_resend_of_a_message_whose_write_failed_is_stored_not_dropped_as_a_duplicate(
    brokers: Brokers, tmp_path: Path
) -> None:
    """The dedup window takes an id only from a message that was stored: a message refused
    because its write failed, sent again once the fault is gone, is stored (a dedup window that
    answered `accepted` for it would lose it)."""
    fault = tmp_path / "journal-fault"
    args = ["--auto-create", "yes", "--dedup-window", "100"]
    b = brokers.start(args=args, env={ENV_VAR: str(fault)})
    conn = BlockingConnection(b.url, timeout=TIMEOUT)
    try:
        snd = conn.create_sender("q")
        snd.send(Message(id="m-0", body=0, durable=True))
        fault.write_text("EIO")
        with pytest.raises(SendException) as refused:
            snd.send(Message(id="m-1", body=1, durable=True))
        assert refused.value.state == Delivery.REJECTED
        fault.unlink()
        snd.send(Message(id="m-1", body=1, durable=True))  # the resend: stored this time
        snd.send(Message(id="m-0", body=0, durable=True))  # a true duplicate: dropped
    finally:
        conn.close()
    assert sorted(fetch(b.url, "q")) == [0, 1]
