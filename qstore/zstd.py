"""One zstd compressor and decompressor per thread, shared by the journal's records and the
replication stream's batches (both compress at level 1, where it is cheap: about 5 us per KiB).

zstd contexts are reusable (making one per call costs more than a small payload's compression)
but not thread-safe: the journal packs records in its appenders' threads and reads them in others.
"""

from __future__ import annotations

import threading

import zstandard

LEVEL = 1

_local = threading.local()


def compressor() -> zstandard.ZstdCompressor:
    """This thread's compressor (level `LEVEL`)."""
    c = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=LEVEL)
    return c


def decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor."""
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d
