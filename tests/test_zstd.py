"""qstore/zstd.py: the journal and the replication stream share one compressor and one
decompressor per thread (zstd contexts are not thread-safe), and what one compresses the other
decompresses."""

from __future__ import annotations

import threading

from qstore import zstd


def test_a_thread_reuses_its_contexts_and_another_thread_gets_its_own() -> None:
    mine = (zstd.compressor(), zstd.decompressor())
    assert (zstd.compressor(), zstd.decompressor()) == mine
    theirs: list[object] = []
    t = threading.Thread(target=lambda: theirs.extend((zstd.compressor(), zstd.decompressor())))
    t.start()
    t.join(timeout=10)
    assert len(theirs) == 2
    assert theirs[0] is not mine[0] and theirs[1] is not mine[1]


def test_round_trip_through_the_shared_contexts() -> None:
    data = b"".join(b"line %d of a long order\n" % i for i in range(2000))
    packed = zstd.compressor().compress(data)
    assert len(packed) < len(data) // 4
    assert zstd.decompressor().decompress(packed) == data
