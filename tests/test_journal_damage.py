"""`records.damage`, the quick check that `verify`, `salvage` and `JournalReader.verified` run on
every record, says exactly what `decode` says: the same records verify, with the same reason
when they do not (hypothesis flips, cuts and rewrites bytes of real sealed records)."""

from __future__ import annotations

import uuid

from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from qstore.journal import CorruptRecord, Dequeue, Enqueue, QueueDeclare, UnsupportedFormat
from qstore.journal.records import KEY, damage, decode, prepare, seal

RECORDS = st.one_of(
    st.builds(
        Enqueue,
        st.text(max_size=8),
        st.integers(0, 1 << 64 - 1),
        st.binary(max_size=64),
        st.integers(0, 255),
    ),
    st.builds(
        Enqueue, st.just("q"), st.integers(0, 9), st.binary(min_size=5000, max_size=6000)
    ),  # compressed
    st.builds(Dequeue, st.text(max_size=8), st.integers(0, 9)),
    st.builds(QueueDeclare, st.text(max_size=8), st.just(uuid.UUID(int=3))),
)


def decoded_reason(seq: int, value: bytes) -> str | None:
    try:
        decode(seq, value)
    except CorruptRecord as exc:
        return exc.reason
    except UnsupportedFormat as exc:
        return str(exc)
    return None


@settings(max_examples=400, deadline=None)
@given(
    record=RECORDS,
    seq=st.integers(1, 1 << 40),
    edits=st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), max_size=3),
    cut=st.none() | st.integers(0, 64),
    reseal=st.booleans(),
)
def test_damage_agrees_with_decode(
    record: object, seq: int, edits: list[tuple[int, int]], cut: int | None, reseal: bool
) -> None:
    key, value = seal(seq, prepare(record, 1, seq), 1, seq)  # type: ignore[arg-type]
    raw = bytearray(value)
    for at, byte in edits:
        raw[at % len(raw)] = byte
    if cut is not None:
        del raw[len(raw) - min(cut, len(raw)) :]
    if reseal and len(raw) >= 20:  # a valid crc over changed contents: the payload's checks
        crc = crc32c(bytes(raw[20:]), crc32c(bytes(raw[:16]), crc32c(key)))
        raw[16:20] = crc.to_bytes(4, "big")
    value = bytes(raw)
    assert damage(key, value) == decoded_reason(KEY.unpack(key)[0], value)
