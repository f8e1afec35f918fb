"""The journal's record codec, appends (sync, async, group commit), truncate and reset."""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from pathlib import Path
from typing import Any

import anyio
import crc32c
import pytest
from journal_helpers import state_of, uid

from qstore.journal import (
    FORMAT_VERSION,
    Bind,
    CorruptRecord,
    Delivery,
    Dequeue,
    Enqueue,
    Epoch,
    ExchangeDeclare,
    ExchangeDelete,
    Journal,
    JournalClosed,
    JournalError,
    JournalReader,
    NotAJournal,
    QueueDeclare,
    QueueDelete,
    Record,
    RecordType,
    Unbind,
    UnsupportedFormat,
)
from qstore.journal.records import (
    COMPRESS_THRESHOLD,
    FLAG_COMPRESSED,
    FLAG_REPLICA,
    HEADER,
    KEY,
    decode,
    prepare,
    record_version,
    seal,
)

ALL_RECORDS: list[Record] = [
    QueueDeclare("q1", uid(1), {"qpid.max_count": 10, "qpid.replicate": "all"}),
    QueueDeclare("empty-args", uid(2)),
    QueueDelete("q1", uid(1)),
    ExchangeDeclare("x1", uid(3), "topic", {"alternate-exchange": "ae"}),
    ExchangeDelete("x1", uid(3)),
    Bind("x1", "q1", "a.#", {"x-match": "all"}),
    Bind("x1", "q1"),
    Unbind("x1", "q1", "a.#"),
    Enqueue(
        "q1", 7, b"\x00\x53\x75amqp-bytes", priority=9, expiry=1_700_000_000_000, delivery_count=2
    ),
    Enqueue("quéue-ünicode", 2**64 - 1, b""),
    Dequeue("q1", 7),
    Delivery("q1", 7, 3),
    Epoch(4, uid(99)),
]


# -- codec ------------------------------------------------------------------------------------


@pytest.mark.parametrize("record", ALL_RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_type_round_trips(record: Record) -> None:
    p = prepare(record)
    key, value = seal(42, p, 3, 1000)
    assert key == KEY.pack(42)
    e = decode(42, value)
    assert e.record == record
    assert (e.seq, e.epoch, e.origin, e.position) == (42, 3, 1000, (3, 1000))
    assert e.type is record.TYPE
    assert e.flags == 0
    assert e.size == len(value)
    assert value[0] == record_version(record.TYPE) == 1  # version-1 types stay version 1


@pytest.mark.parametrize(
    "record",
    [
        Enqueue("q", 1, b"abcdefgh" * 4096),
        QueueDeclare("q", uid(5), {"big": "v" * (2 * COMPRESS_THRESHOLD)}),
        ExchangeDeclare("x", uid(6), "headers", {f"k{i}": "value" for i in range(2000)}),
        Bind("x", "q", "k", {f"h{i}": i for i in range(2000)}),
    ],
    ids=lambda r: type(r).__name__,
)
def test_payload_over_threshold_is_compressed_and_round_trips(record: Record) -> None:
    p = prepare(record)
    assert p.flags & FLAG_COMPRESSED
    assert len(p.payload) < len(record.pack())
    _, value = seal(9, p, 1, 9)
    e = decode(9, value)
    assert e.record == record
    assert e.flags == FLAG_COMPRESSED


def test_incompressible_payload_is_stored_plain() -> None:
    record = Enqueue("q", 1, os.urandom(3 * COMPRESS_THRESHOLD))
    p = prepare(record)
    assert not p.flags & FLAG_COMPRESSED
    assert decode(1, seal(1, p, 0, 1)[1]).record == record


def test_payload_at_threshold_is_not_compressed() -> None:
    record = Enqueue("q", 1, b"a" * 100)
    assert not prepare(record, threshold=10_000).flags & FLAG_COMPRESSED
    assert prepare(record, threshold=10).flags & FLAG_COMPRESSED


def test_replica_flag_round_trips() -> None:
    p = prepare(Dequeue("q", 5), replica=True)
    e = decode(3, seal(3, p, 2, 77)[1])
    assert e.flags == FLAG_REPLICA
    assert e.position == (2, 77)


def test_crc_covers_the_key() -> None:
    _, value = seal(10, prepare(Dequeue("q", 1)), 1, 1)
    with pytest.raises(CorruptRecord) as exc:
        decode(11, value)  # the same bytes under another key
    assert exc.value.seq == 11
    assert "crc32c" in str(exc.value)


def _reseal(value: bytes, seq: int, **changes: int) -> bytes:
    """Rewrite header fields and recompute the crc32c, as a writer of that header would."""
    fields = dict(
        zip(
            ("version", "type", "flags", "epoch", "origin", "crc"),
            HEADER.unpack_from(value),
            strict=True,
        )
    )
    fields.update(changes)
    head = HEADER.pack(*list(fields.values())[:5], 0)[:16]
    payload = value[HEADER.size :]
    crc = crc32c.crc32c(payload, crc32c.crc32c(head, crc32c.crc32c(KEY.pack(seq))))
    return head + struct.pack(">I", crc) + payload


def test_newer_format_version_is_refused_clearly() -> None:
    _, value = seal(5, prepare(Dequeue("q", 1)), 1, 1)
    with pytest.raises(UnsupportedFormat, match=rf"seq=5 .* version {FORMAT_VERSION + 1}"):
        decode(5, _reseal(value, 5, version=FORMAT_VERSION + 1))


def test_unknown_type_or_flags_is_corrupt() -> None:
    _, value = seal(5, prepare(Dequeue("q", 1)), 1, 1)
    with pytest.raises(CorruptRecord, match="unknown record type 200"):
        decode(5, _reseal(value, 5, type=200))
    with pytest.raises(CorruptRecord, match="unknown flags"):
        decode(5, _reseal(value, 5, flags=0x80))
    with pytest.raises(CorruptRecord, match="shorter than the header"):
        decode(5, value[:10])


def test_undecodable_payload_with_good_crc_is_corrupt() -> None:
    _, value = seal(5, prepare(Dequeue("q", 1)), 1, 1)
    truncated = _reseal(value[: HEADER.size + 3], 5)
    with pytest.raises(CorruptRecord, match="dequeue payload does not decode"):
        decode(5, truncated)


def test_record_type_parse_and_label() -> None:
    assert RecordType.parse("queue-declare") is RecordType.QUEUE_DECLARE
    assert RecordType.parse("ENQUEUE") is RecordType.ENQUEUE
    assert RecordType.parse("exchange_delete") is RecordType.EXCHANGE_DELETE
    assert RecordType.DELIVERY.label == "delivery"
    with pytest.raises(ValueError, match="unknown record type 'nope' \\(one of: queue-declare"):
        RecordType.parse("nope")


def test_overlong_name_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 65535"):
        QueueDeclare("n" * 70_000, uid(1)).pack()


# -- the journal: appends, reopen, metadata -----------------------------------------------------


def test_records_survive_reopen_with_types_positions_and_node_id(tmp_path: Path) -> None:
    big = Enqueue("q1", 8, b"compress me " * 2000)
    with Journal(tmp_path, auto_compact=False) as j:  # keep the cancelled records too
        node = j.node_id
        seqs = j.append_many(ALL_RECORDS)
        seq_big = j.append(big)
        assert seqs == list(range(1, len(ALL_RECORDS) + 1))
        assert seq_big == len(ALL_RECORDS) + 1
        assert j.last_seq == seq_big
    with JournalReader.open(tmp_path) as r:
        entries = list(r.entries())
        assert r.node_id == node
        assert r.format_version == 1  # no record of a later version (test_journal_history)
        assert r.seq_range() == (1, seq_big)
        assert r.count() == seq_big
        assert r.size_on_disk() > 0
        assert r.verify() == (seq_big, [])
        r.check_all()
        only = [e.seq for e in r.entries(types={RecordType.ENQUEUE})]
    assert [e.record for e in entries] == [*ALL_RECORDS, big]
    assert entries[-1].flags & FLAG_COMPRESSED
    assert [e.origin for e in entries] == [e.seq for e in entries]
    assert only == [seqs[8], seqs[9], seq_big]
    # The epoch record moves every later record into its epoch.
    epoch_at = ALL_RECORDS.index(ALL_RECORDS[-1])
    assert [e.epoch for e in entries] == [0] * epoch_at + [4, 4]
    with Journal(tmp_path) as j:
        assert j.node_id == node
        assert j.epoch == 4
        assert j.position == (4, seq_big)
        assert j.append(Dequeue("q1", 8)) == seq_big + 1


def test_explicit_epoch_origin_and_replica(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append(QueueDeclare("q", uid(1)))
        seqs = j.append_many(
            [Enqueue("q", 1, b"a"), Enqueue("q", 2, b"b")], epoch=7, origin=500, replica=True
        )
        entries = list(j.entries(start=seqs[0]))
        assert [e.position for e in entries] == [(7, 500), (7, 501)]
        assert all(e.flags & FLAG_REPLICA for e in entries)
        assert j.position == (7, 501)
        # A local record continues after the highest origin seen.
        s = j.append(Dequeue("q", 1))
        assert next(iter(j.entries(start=s))).origin == 502


def test_start_epoch(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        assert j.start_epoch() == 1
        assert j.start_epoch(5) == 5
        with pytest.raises(JournalError, match="epoch 3 is not above the current epoch 5"):
            j.start_epoch(3)
        state = j.replay()
        assert [(ep.number, ep.node) for ep in state.epochs] == [(1, j.node_id), (5, j.node_id)]
        assert j.epoch == 5


def test_reader_refuses_what_is_not_a_journal(tmp_path: Path) -> None:
    with pytest.raises(NotAJournal, match="no such directory"):
        JournalReader.open(tmp_path / "missing")
    with pytest.raises(NotAJournal, match=r"no journal/data\.mdb"):
        JournalReader.open(tmp_path)


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.close()
    j.close()  # idempotent
    with pytest.raises(JournalClosed):
        j.append(Dequeue("q", 1))


# -- group commit under concurrency ---------------------------------------------------------------


def _check_all_present(j: Journal, expect: dict[int, Record]) -> None:
    """Every (seq -> record) reported is what the journal holds at that seq."""
    held = {e.seq: e.record for e in j.entries()}
    for seq, record in expect.items():
        assert held.get(seq) == record, f"seq {seq}"


def test_group_commit_many_threads(tmp_path: Path) -> None:
    threads, per_thread = 16, 120
    results: list[list[tuple[int, Record]]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    with Journal(tmp_path) as j:
        j.append(QueueDeclare("q", uid(1)))
        commits_before = j.commits
        start = threading.Barrier(threads)

        def work(t: int) -> None:
            try:
                start.wait(10)
                for i in range(per_thread):
                    r = Enqueue("q", t * 10_000 + i, f"{t}:{i}".encode())
                    results[t].append((j.append(r), r))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert not errors
        assert not any(w.is_alive() for w in workers)
        n = threads * per_thread
        seqs = [s for res in results for s, _ in res]
        assert len(set(seqs)) == n
        assert sorted(seqs) == list(range(2, n + 2))
        for res in results:  # one thread's appends are durable in the order it made them
            assert [s for s, _ in res] == sorted(s for s, _ in res)
        _check_all_present(j, {s: r for res in results for s, r in res})
        commits = j.commits - commits_before
        assert commits < n / 3, f"{commits} commits for {n} records: no batching"


def test_group_commit_threads_and_asyncio_tasks_together(tmp_path: Path) -> None:
    n_threads, per_thread, n_tasks, n_submits = 8, 60, 300, 300
    expect: dict[int, Record] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    # Without compaction every record stays, so that each one can be checked at its seq.
    with Journal(tmp_path, auto_compact=False) as j:
        j.append(QueueDeclare("q", uid(1)))
        commits_before = j.commits

        def work(t: int) -> None:
            try:
                for i in range(per_thread):
                    r = Enqueue("q", 1_000_000 + t * 1000 + i, b"thread")
                    s = j.append(r)
                    with lock:
                        expect[s] = r
            except BaseException as exc:
                errors.append(exc)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            submitted: dict[int, Any] = {}
            all_done = asyncio.Event()

            def callback(i: int, r: Record) -> Any:
                def done(result: Any) -> None:
                    submitted[i] = (result, r)
                    if len(submitted) == n_submits:
                        all_done.set()

                return done

            async def task(i: int) -> None:
                r = Dequeue("q", i) if i % 2 else Delivery("q", i, 1)
                s = await j.append_async(r)
                with lock:
                    expect[s] = r

            workers = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
            for w in workers:
                w.start()
            async with anyio.create_task_group() as tg:
                for i in range(n_tasks):
                    tg.start_soon(task, i)
                for i in range(n_submits):
                    recs = [Enqueue("q", i, b"submitted"), Delivery("q", i, 2)]
                    j.submit(recs, callback(i, recs), loop=loop)
                with anyio.fail_after(60):
                    await all_done.wait()
            for w in workers:
                await anyio.to_thread.run_sync(w.join, 60)
            for result, recs in submitted.values():
                assert isinstance(result, list), result
                assert result[1] == result[0] + 1  # one submit's records stay together
                expect.update(zip(result, recs, strict=True))

        anyio.run(main, backend="asyncio")
        assert not errors
        n = n_threads * per_thread + n_tasks + 2 * n_submits
        assert len(expect) == n
        assert sorted(expect) == list(range(2, n + 2))
        _check_all_present(j, expect)
        commits = j.commits - commits_before
        assert commits < n / 3, f"{commits} commits for {n} records: no batching"


def test_async_api_on_asyncio(tmp_path: Path) -> None:
    async def main(j: Journal) -> None:
        s1 = await j.append_async(QueueDeclare("q", uid(1)))
        seqs = await j.append_many_async([Enqueue("q", 1, b"a"), Enqueue("q", 2, b"b")])
        assert [s1, *seqs] == [1, 2, 3]
        got: list[Any] = []
        ev = asyncio.Event()

        def done(result: Any) -> None:
            got.append(result)
            ev.set()

        j.submit([Dequeue("q", 1)], done)  # the running loop is the default
        with anyio.fail_after(10):
            await ev.wait()
        assert got == [[4]]

    with Journal(tmp_path) as j:
        anyio.run(main, j, backend="asyncio")
        assert list(j.replay().queues["q"].messages) == [2]


def test_async_append_after_close_raises(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.close()

    async def main() -> None:
        with pytest.raises(JournalClosed):
            await j.append_async(Dequeue("q", 1))
        got: list[Any] = []
        ev = asyncio.Event()

        def done(result: Any) -> None:
            got.append(result)
            ev.set()

        j.submit([Dequeue("q", 1)], done)
        with anyio.fail_after(10):
            await ev.wait()
        assert isinstance(got[0], JournalClosed)

    anyio.run(main, backend="asyncio")


# -- truncate and reset ---------------------------------------------------------------------------


def _history() -> list[Record]:
    return [
        QueueDeclare("a", uid(1)),
        ExchangeDeclare("x", uid(2), "direct"),
        Bind("x", "a", "k"),
        Enqueue("a", 1, b"one"),
        Enqueue("a", 2, b"two"),
        Delivery("a", 1, 1),
        Epoch(1, uid(50)),
        Dequeue("a", 2),
        QueueDeclare("b", uid(3)),
        Enqueue("b", 3, b"three"),
        Unbind("x", "a", "k"),
        QueueDelete("b", uid(3)),
        Enqueue("a", 4, b"four"),
    ]


@pytest.mark.parametrize("cut", [0, 1, 3, 6, 7, 9, 12, 13])
def test_truncate_after_equals_replay_of_prefix(tmp_path: Path, cut: int) -> None:
    history = _history()
    with Journal(tmp_path, auto_compact=False) as j:
        j.append_many(history)
        before = list(j.entries())
        last = j.last_seq
        assert j.truncate_after(cut) == len(history) - cut
        prefix = before[:cut]
        assert j.replay().snapshot() == state_of(prefix).snapshot()
        assert j.state.snapshot() == state_of(prefix, keep_bodies=False).snapshot()
        assert j.epoch == state_of(prefix).epoch
        assert j.position == state_of(prefix).position
        assert [e.seq for e in j.entries()] == list(range(1, cut + 1))
        # A seq is never reused, neither now nor after a reopen.
        assert j.append(Enqueue("a", 99, b"new")) == last + 1
    with Journal(tmp_path, auto_compact=False) as j:
        assert j.append(Enqueue("a", 100, b"newer")) == last + 2
        held = [e.seq for e in j.entries()]
        assert held == [*range(1, cut + 1), last + 1, last + 2]


def test_truncate_then_reopen_before_any_append_does_not_reuse_seqs(tmp_path: Path) -> None:
    with Journal(tmp_path, auto_compact=False) as j:
        j.append_many(_history())
        last = j.last_seq
        assert j.truncate_after(2) == last - 2
        assert j.truncate_after(2) == 0
        assert j.truncate_after(100) == 0
    with Journal(tmp_path) as j:
        assert j.last_seq == last
        assert j.append(Dequeue("a", 1)) == last + 1


def test_reset_empties_but_keeps_node_id_and_seqs(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        node = j.node_id
        j.append_many(_history())
        last = j.last_seq
        j.reset()
        assert j.count() == 0
        assert j.seq_range() is None
        assert j.replay().snapshot() == state_of([]).snapshot()
        assert j.epoch == 0
        assert j.position == (0, 0)
        assert j.node_id == node
    with Journal(tmp_path) as j:
        assert j.node_id == node
        assert j.count() == 0
        assert j.append(QueueDeclare("a", uid(9))) == last + 1
        j.reset()
    with Journal(tmp_path) as j:
        assert j.append(QueueDeclare("a", uid(9))) == last + 2
        assert j.node_id == node


def test_bodies_of_enqueue_records_in_one_read(tmp_path: Path) -> None:
    """What a restore reads back: each enqueue's body (compressed or not), None for a seq that
    holds no enqueue or nothing."""
    big = b"compress me " * 2000
    with Journal(tmp_path) as j:
        declare = j.append(QueueDeclare("q", uid(1)))
        small, large = j.append_many([Enqueue("q", 1, b"small"), Enqueue("q", 2, big)])
        assert j.bodies([small, large, declare, large + 100]) == [b"small", big, None, None]


def test_a_backups_replica_records_replay_as_their_entries_say(tmp_path: Path) -> None:
    """Replay and `bodies` read a replica's uncompressed enqueues from their fields (a backup's
    records all carry the flag): the same state as applying each decoded entry."""
    with Journal(tmp_path) as j:
        j.append(QueueDeclare("q", uid(1)), epoch=2, origin=10, replica=True)
        seqs = j.append_many(
            [Enqueue("q", n, b"body %d" % n, priority=n, delivery_count=n) for n in (1, 2, 3)],
            epoch=2,
            origin=11,
            replica=True,
        )
        j.append(Dequeue("q", 2), epoch=2, origin=14, replica=True)
        assert j.replay().snapshot() == state_of(j.entries()).snapshot()
        assert j.bodies(seqs) == [b"body 1", b"body 2", b"body 3"]
