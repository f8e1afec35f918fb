"""Read access to a journal: entries in order, verification, replay.

Safe on the journal of a running broker: it never takes the data directory's lock, opens LMDB
read-only and reads in short transactions (a long-lived reader would stop LMDB reusing pages and
make the writer's file grow).
"""

from __future__ import annotations

import gc
import os
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
from crc32c import crc32c

from .errors import CorruptRecord, NotAJournal
from .modes import PRIVATE_DIR, PRIVATE_FILE
from .records import (
    ENQ_FIELDS,
    FLAG_REPLICA,
    FORMAT_VERSION,
    HEADER,
    KEY,
    Enqueue,
    Entry,
    RecordType,
    check,
    damage,
    decode,
    read_header,
)
from .state import JournalState

RECORDS_DB = b"records"
META_DB = b"meta"
CHUNK = 4096  # entries per read transaction
ENQUEUE = int(RecordType.ENQUEUE)
# The flags of a record the fast paths read from its fields: not compressed, maybe a replica's
# (a backup's records all are); any other flag (compressed, unknown) takes the checked path.
_PLAIN = (0, FLAG_REPLICA)  # the low byte of the flags (the high one is 0)
# An enqueue's header and fixed fields, read in one call
_ENQ_HEAD = struct.Struct(">" + HEADER.format.lstrip(">") + ENQ_FIELDS.format.lstrip(">"))

Progress = Callable[[int], None]


def journal_path(data_dir: Path) -> Path:
    return data_dir / "journal"


def open_env(data_dir: Path, *, readonly: bool, map_size: int) -> lmdb.Environment:
    path = journal_path(data_dir)
    if readonly:
        if not data_dir.is_dir():
            raise NotAJournal(f"{data_dir}: no such directory")
        if not (path / "data.mdb").is_file():
            raise NotAJournal(f"{data_dir}: not a qstore data directory (no journal/data.mdb)")
    else:
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    try:
        return lmdb.open(
            str(path),
            mode=PRIVATE_FILE,  # data.mdb and lock.mdb hold message bodies: the owner's only
            map_size=map_size,
            max_dbs=4,
            readonly=readonly,
            sync=True,
            metasync=True,
            readahead=True,  # start-up scans the whole file: a cold start is 5x faster
            max_readers=256,
        )
    except lmdb.Error as exc:
        raise NotAJournal(f"{data_dir}: cannot open the journal: {exc}") from None


class JournalReader:
    """Read-only view of a data directory's journal."""

    def __init__(self, env: lmdb.Environment, data_dir: Path) -> None:
        self.env = env
        self.data_dir = data_dir
        try:
            self.records = env.open_db(RECORDS_DB, create=False)
            self.meta = env.open_db(META_DB, create=False)
        except lmdb.Error:
            raise NotAJournal(f"{data_dir}: not a qstore journal (no records table)") from None

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str]) -> JournalReader:
        path = Path(data_dir)
        return cls(open_env(path, readonly=True, map_size=1 << 20), path)

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata ---------------------------------------------------------------------------

    def meta_get(self, key: str) -> bytes | None:
        with self.env.begin(db=self.meta) as txn:
            return txn.get(key.encode())

    @property
    def node_id(self) -> uuid.UUID:
        raw = self.meta_get("node-id")
        if raw is None:
            raise NotAJournal(f"{self.data_dir}: journal has no node id")
        return uuid.UUID(bytes=raw)

    @property
    def format_version(self) -> int:
        return int(self.meta_get("format") or b"0")

    def seq_range(self) -> tuple[int, int] | None:
        """(first, last) seq held, or None when empty."""
        with self.env.begin(db=self.records) as txn, txn.cursor() as cur:
            if not cur.first():
                return None
            first = KEY.unpack(cur.key())[0]
            cur.last()
            return first, KEY.unpack(cur.key())[0]

    def count(self) -> int:
        with self.env.begin(db=self.records) as txn:
            return int(txn.stat(self.records)["entries"])

    def size_on_disk(self) -> int:
        return sum(f.stat().st_size for f in journal_path(self.data_dir).iterdir() if f.is_file())

    # -- scanning ---------------------------------------------------------------------------

    def chunks(
        self, start: int = 0, end: int | None = None, progress: Progress | None = None
    ) -> Iterator[list[tuple[bytes, bytes]]]:
        """Lists of (key, stored value), `start` to `end` inclusive, one short read txn each."""
        nxt = KEY.pack(start)
        last = None if end is None else KEY.pack(end)
        while True:
            with self.env.begin(db=self.records) as txn, txn.cursor() as cur:
                if not cur.set_range(nxt):
                    return
                chunk = []
                add = chunk.append
                for kv in cur:
                    if last is not None and kv[0] > last:
                        break
                    add(kv)
                    if len(chunk) >= CHUNK:
                        break
            if not chunk:
                return
            yield chunk
            if progress:
                progress(len(chunk))
            if len(chunk) < CHUNK:
                return
            nxt = KEY.pack(KEY.unpack(chunk[-1][0])[0] + 1)

    def raw(
        self, start: int = 0, end: int | None = None, progress: Progress | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """(seq, stored value) from `start` to `end` inclusive, in short read transactions."""
        unpack = KEY.unpack
        for chunk in self.chunks(start, end, progress):
            for k, v in chunk:
                yield unpack(k)[0], v

    def verified(
        self, start: int = 0, progress: Progress | None = None
    ) -> Iterator[tuple[int, bytes, str | None]]:
        """(seq, stored value, why it is damaged or None) for every record from `start`: what
        `decode` checks, at a fraction of its cost (records.damage)."""
        unpack = KEY.unpack
        for chunk in self.chunks(start, None, progress):
            for k, v in chunk:
                yield unpack(k)[0], v, damage(k, v)

    def get(self, seq: int) -> Entry | None:
        """The entry at `seq`, verified, or None when there is none (deleted or never written).

        The broker reads a restored message's body this way when it delivers it, so that a
        restart holds only the messages' metadata in memory (see `replay(keep_bodies=False)`).
        """
        with self.env.begin(db=self.records) as txn:
            value = txn.get(KEY.pack(seq))
        return None if value is None else decode(seq, value)

    def bodies(self, seqs: list[int]) -> list[bytes | None]:
        """The message bodies of the enqueue records at `seqs` (None where there is none, or
        it is no enqueue), verified, in one short read transaction: a restore's chunk. A
        verified, uncompressed record is read from its fields, as replay does (no objects)."""
        out: list[bytes | None] = []
        add, pack, fields, crc = out.append, KEY.pack, _ENQ_HEAD.unpack_from, crc32c
        start = _ENQ_HEAD.size
        with self.env.begin(db=self.records, buffers=True) as txn:
            get = txn.get
            for seq in seqs:
                key = pack(seq)
                value = get(key)  # a memoryview of the map, valid in this txn only
                if value is None:
                    add(None)
                    continue
                if (
                    value[1] == ENQUEUE
                    and not value[2]
                    and value[3] in _PLAIN
                    and len(value) >= start
                ):
                    version, _t, _f, _e, _o, want, _m, _p, _x, _c, qn = fields(value, 0)
                    if version <= FORMAT_VERSION and want == crc(
                        value[HEADER.size :], crc(value[:16], crc(key))
                    ):
                        add(bytes(value[start + qn :]))
                        continue
                record = decode(seq, bytes(value)).record  # damage: CorruptRecord
                add(record.body if isinstance(record, Enqueue) else None)
        return out

    def entries(
        self,
        start: int = 0,
        end: int | None = None,
        types: set[RecordType] | None = None,
        progress: Progress | None = None,
    ) -> Iterator[Entry]:
        """Decoded, verified entries in seq order; a damaged one raises `CorruptRecord`."""
        for seq, value in self.raw(start, end, progress):
            if types is not None and read_header(value)[1] not in types:
                continue
            yield decode(seq, value)

    def verify(self, progress: Progress | None = None) -> tuple[int, list[CorruptRecord]]:
        """Check every record; return (records checked, the damaged ones)."""
        bad: list[CorruptRecord] = []
        n = 0
        for seq, value in self.raw(progress=progress):
            n += 1
            try:
                decode(seq, value)
            except CorruptRecord as exc:
                bad.append(exc)
        return n, bad

    def replay(
        self,
        keep_bodies: bool = True,
        state: JournalState | None = None,
        progress: Progress | None = None,
        garbage: Callable[[list[int], int], None] | None = None,
    ) -> JournalState:
        """Rebuild the state the journal describes; stops at the first damaged record.

        `garbage(unit, seq)` receives each unit of cancelled seqs with the seq of the record
        that cancelled it, as replay meets them (compaction work left from before an open).

        Each chunk of records is applied inside its own short read transaction, straight from
        LMDB's map (no copy of a record unless a body is kept). The cyclic garbage collector is
        paused meanwhile: replay allocates an object per live message and nothing it builds is
        garbage, so collections would only rescan a growing heap.
        """
        st = state if state is not None else JournalState(keep_bodies=keep_bodies)
        apply, enqueue = st.apply, st.enqueue
        fields, crc, unpack = _ENQ_HEAD.unpack_from, crc32c, KEY.unpack
        start = _ENQ_HEAD.size
        nxt = KEY.pack(0)
        paused = gc.isenabled()
        gc.disable()
        try:
            while True:
                n = 0
                with self.env.begin(db=self.records, buffers=True) as txn, txn.cursor() as cur:
                    if not cur.set_range(nxt):
                        break
                    for key, value in cur:  # memoryviews of the map, valid in this txn only
                        n += 1
                        # Fast path for the bulk of a journal: a verified, uncompressed enqueue,
                        # applied from its fields without building a record object.
                        if (
                            value[1] == ENQUEUE
                            and not value[2]
                            and value[3] in _PLAIN
                            and len(value) >= start
                        ):
                            version, _t, _f, epoch, origin, want, msgid, prio, expiry, count, qn = (
                                fields(value, 0)
                            )
                            if version <= FORMAT_VERSION and want == crc(
                                value[HEADER.size :], crc(value[:16], crc(key))
                            ):
                                try:
                                    queue = str(value[start : start + qn], "utf-8")
                                except UnicodeDecodeError:
                                    pass  # decode() below names the damage
                                else:
                                    seq = unpack(key)[0]
                                    unit = enqueue(
                                        seq, epoch, origin, queue, msgid, value[start + qn :],
                                        prio, expiry, count,
                                    )  # fmt: skip
                                    if unit and garbage is not None:
                                        garbage(unit, seq)
                                    if n == CHUNK:
                                        break
                                    continue
                        seq = unpack(key)[0]
                        unit = apply(decode(seq, bytes(value)))
                        if unit and garbage is not None:
                            garbage(unit, seq)
                        if n == CHUNK:
                            break
                    nxt = KEY.pack(unpack(key)[0] + 1)
                if progress and n:
                    progress(n)
                if n < CHUNK:
                    break
        finally:
            if paused:
                gc.enable()
        return st

    def check_all(self) -> None:
        """Raise `CorruptRecord` for the first damaged record (cheaper than a full replay)."""
        for seq, value in self.raw():
            check(seq, value)
