"""The replication stream's batch codec (broker/replication/stream.py), in process: what a
backup decodes is what the primary encoded, an enqueue's payload (a view of the batch, journaled
as it is) is the record as the primary packed it, and a damaged batch is a StreamError, never a
wrong item."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.replication import stream
from qstore.journal import Dequeue, Enqueue, Journal, QueueDeclare

Q = uuid.UUID(int=1)


def batch(compressed: bool) -> list[stream.Item]:
    """A snapshot's shape: a control, a declare, enqueues (two queues), a dequeue. Incompressible
    bodies of 2 KiB, and enough of them, make a batch that is sent compressed or not."""
    n = 20 if compressed else 3  # stream.COMPRESS_OVER: 16 KiB
    items = [
        stream.control(stream.SNAPSHOT_BEGIN, 2, 9, position=[2, 9]),
        stream.event(QueueDeclare("q", Q, {"x": 1}), 2, 9, stream.DURABLE),
    ]
    for i in range(n):
        body = os.urandom(2048) if i % 2 else b"text " * 400
        items.append(stream.event(Enqueue("q" if i % 3 else "r", i + 1, body, 7, 5, 2), 2, 9, 1))
    items.append(stream.event(Dequeue("q", 1), 2, 10))
    return items


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "zstd"])
def test_a_batch_decodes_to_what_was_encoded(compressed: bool) -> None:
    items = batch(compressed)
    data = stream.encode(items)
    assert data[:1] == (b"Z" if compressed else b"P")
    got = stream.decode(data)
    assert [(i.kind, i.epoch, i.seq, i.flags, i.record, i.data) for i in got] == [
        (i.kind, i.epoch, i.seq, i.flags, i.record, i.data) for i in items
    ]
    for it in got:
        if it.record is not None:
            assert bytes(it.payload) == it.record.pack()  # type: ignore[arg-type]
        if isinstance(it.record, Enqueue):
            assert type(it.record.body) is bytes  # the model keeps it: a copy, not a view
            assert isinstance(it.payload, memoryview)  # the journal's: a view of the batch


def test_an_enqueue_journaled_from_its_view_reads_back_as_sent(tmp_path: Path) -> None:
    """As a backup journals a snapshot's messages: the payload views, as they are, in one job."""
    items = stream.decode(stream.encode(batch(True)))
    enqueues = [it for it in items if isinstance(it.record, Enqueue)]

    async def journal(j: Journal) -> list[int]:
        done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        entries = [(it.record, it.epoch, 0, it.payload) for it in enqueues]
        j.submit_batch(entries, done.set_result, replica=True)  # type: ignore[arg-type]
        return await done

    with Journal(tmp_path / "j") as j:
        j.append_many([QueueDeclare("q", Q), QueueDeclare("r", uuid.UUID(int=2))])
        seqs = asyncio.run(journal(j))
        assert [e.record for e in j.entries(seqs[0])] == [it.record for it in enqueues]
        assert j.bodies(seqs) == [it.record.body for it in enqueues]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda raw: raw[:-1], id="last item one byte short"),
        pytest.param(lambda raw: raw[: stream.ITEM.size + 5], id="enqueue fields cut"),
        pytest.param(lambda raw: _with_length(raw, 10), id="enqueue shorter than its fields"),
        pytest.param(lambda raw: _with_length(raw, 26), id="queue name past the item"),
    ],
)
def test_a_damaged_batch_is_a_stream_error(cut) -> None:
    raw = stream.encode([stream.event(Enqueue("queue", 1, b"body"), 1, 1, 1)])
    assert raw[:1] == b"P"
    with pytest.raises(stream.StreamError, match="does not decode"):
        stream.decode(b"P" + cut(raw[1:]))


def _with_length(raw: bytes, n: int) -> bytes:
    """The single item of `raw` claiming a payload of `n` bytes (what follows is the rest)."""
    kind, flags, epoch, seq, _ = stream.ITEM.unpack_from(raw, 0)
    return stream.ITEM.pack(kind, flags, epoch, seq, n) + raw[stream.ITEM.size :][:n]


def test_batches_that_do_not_compress_go_plain_and_stop_being_tried() -> None:
    def large(body: Callable[[], bytes]) -> list[stream.Item]:
        return [stream.event(Enqueue("q", i, body()), 1, i, 1) for i in range(1, 41)]

    text, noise = large(lambda: b"text " * 400), large(lambda: os.urandom(2000))
    squeeze = stream.Squeeze()
    assert stream.encode(text, squeeze)[:1] == b"Z"
    assert stream.encode(noise)[:1] == b"Z"  # without a Squeeze: compressed whatever it gives
    plain = stream.encode(noise, squeeze)
    assert plain[:1] == b"P"  # zstd saved under a tenth: sent as it is
    assert [i.record for i in stream.decode(plain)] == [i.record for i in noise]
    # the next SKIP large batches go plain untried, compressible or not; then one is tried
    assert [stream.encode(text, squeeze)[:1] for _ in range(stream.Squeeze.SKIP)] == [b"P"] * 15
    assert stream.encode(text, squeeze)[:1] == b"Z"
    assert stream.encode(text[:3], squeeze)[:1] == b"P"  # small: never compressed
