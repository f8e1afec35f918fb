"""Filling a new journal with another journal's records, each at its own seq and position.

`qstore-journal salvage` and `import` build a data directory that a broker then opens as its own.
A broker's appends take the next seq and the current position; a copy keeps the source's instead:
a seq never names two different records (seq 1234 is the same record in the damaged original and
in its salvage), and the (epoch, origin) positions are what replication compares, so a salvaged
backup catches up from where its good records end. The records therefore go in as sealed values
(`records.seal`, or a verified stored value copied as it is) at their own seqs, in chunks, each
chunk one write transaction run by the journal's own writer thread with the data directory's lock
held, as truncate and reset are.

The journal's in-memory state is not followed meanwhile: a loaded journal is closed at the end and
whoever opens it next scans it, as a broker's start does. So memory stays that of one chunk,
whatever the size of the journal; one chunk is handed over while the caller reads the next.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import lmdb

from .errors import JournalError
from .journal import DEFAULT_MAP_SIZE, Journal
from .records import HISTORY_VERSION, KEY, RecordType
from .writer import SyncWaiter, Txn, _Control

_HISTORY = int(RecordType.HISTORY)
CHUNK_BYTES = 16 << 20  # per write transaction
CHUNK_RECORDS = 16384


class JournalLoader:
    """Writes sealed records, in increasing seq order, into a journal that has none yet.

    `node_id` and `created`: the source's metadata, kept so that the copy is the same node
    (None: the new journal's own). Use as a context manager; `finish()` before leaving it commits
    the last chunk and the high-water mark.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        node_id: uuid.UUID | None = None,
        created: bytes | None = None,
        map_size: int = DEFAULT_MAP_SIZE,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.journal = Journal(self.data_dir, map_size=map_size, auto_compact=False)
        try:
            if self.journal.count():
                raise JournalError(f"{self.data_dir}: the journal holds records already")
            meta = self.journal.meta

            def set_meta(txn: Txn) -> None:
                if node_id is not None:
                    txn.put(b"node-id", node_id.bytes, db=meta)
                if created is not None:
                    txn.put(b"created", created, db=meta)

            self.journal._control(set_meta)
        except BaseException:
            self.journal.close()
            raise
        self.last = 0  # the last seq added
        self.records = 0
        self._history = False  # a history record was added: the journal's format is raised
        self._chunk: list[tuple[bytes, bytes]] = []
        self._bytes = 0
        self._pending: SyncWaiter | None = None  # the chunk the writer is committing

    def add(self, seq: int, value: bytes) -> None:
        """Queue the sealed `value` of record `seq` (above every seq added before)."""
        if seq <= self.last:
            raise JournalError(f"record seq={seq} comes after seq={self.last}: seqs must increase")
        self.last = seq
        self.records += 1
        if value[1] == _HISTORY:  # the header's type byte
            self._history = True
        self._chunk.append((KEY.pack(seq), value))
        self._bytes += len(value)
        if self._bytes >= CHUNK_BYTES or len(self._chunk) >= CHUNK_RECORDS:
            self._flush()

    def _flush(self) -> None:
        """Hand the chunk to the writer; wait for the one before (one in flight at a time)."""
        self._wait()
        if not self._chunk:
            return
        chunk, self._chunk, self._bytes = self._chunk, [], 0

        def put(txn: Txn) -> None:
            with txn.cursor() as cur:  # putmulti: the loop over the chunk runs in C
                _, added = cur.putmulti(chunk, append=True)
            if added != len(chunk):
                raise JournalError(f"only {added} of {len(chunk)} records could be added")

        self._pending = SyncWaiter()
        self.journal.writer.submit(_Control(put, self._pending))

    def _wait(self) -> None:
        if self._pending is not None:
            waiter, self._pending = self._pending, None
            try:
                waiter.wait()
            except lmdb.Error as exc:  # a full map or disk, an I/O error: the journal's words
                raise self.journal.writer._error(exc) from None

    def finish(self, high_water: int | None = None) -> None:
        """Commit what is left, and `high_water` if given: the source's mark (a seq it used for a
        record since lost or truncated), above which new records of this journal stay."""
        self._flush()
        self._wait()
        meta = self.journal.meta
        if high_water is not None:
            self.journal._control(lambda txn: txn.put(b"high-water", KEY.pack(high_water), db=meta))
        if self._history:  # as the writer does with its first one: older code refuses it at open
            self.journal._control(
                lambda txn: txn.put(b"format", str(HISTORY_VERSION).encode(), db=meta)
            )

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self.journal.close()

    def __enter__(self) -> JournalLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
