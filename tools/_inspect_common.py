"""Helpers of `qstore-journal`: opening a journal read-only, rendering records, the progress line.

Kept apart from the command code so that each command reads as what it reports, not how it
formats bytes and uuids.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import lmdb
from tqdm import tqdm

from qstore.journal import CorruptRecord, Enqueue, Entry, JournalReader, NotAJournal
from qstore.journal.reader import journal_path
from qstore.journal.records import FLAG_COMPRESSED, FLAG_REPLICA, Record

from ._inspect_message import Undecodable, decode_message, message_json, message_pairs

EXIT_OK, EXIT_FOUND, EXIT_ERROR = 0, 1, 2
PREVIEW = 24  # body bytes shown by the text dump


class Fail(Exception):
    """A run that ends with one line on stderr and `code` as the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def damage_is_a_finding(name: str) -> Iterator[None]:
    """A damaged record met while reading `name` is a finding about it (exit 1), not a crash."""
    try:
        yield
    except CorruptRecord as exc:
        raise Fail(f"{name}: {exc}", EXIT_FOUND) from None


def open_reader(data_dir: str, *, untouched: bool = False) -> JournalReader:
    """Open a data directory's journal without ever taking the broker's lock.

    LMDB creates `journal/lock.mdb` (its reader table) when missing; a journal without one has no
    process attached, so it is opened without LMDB locking and left byte-for-byte untouched (a
    copied or committed journal, a read-only forensic image). `untouched`: so is any journal (not
    even LMDB's reader table is written), for the stopped broker's journal that salvage reads;
    one that a running broker holds is refused.
    """
    path = Path(data_dir)
    jdir = journal_path(path)
    if untouched:
        _not_in_use(path)
    if (jdir / "data.mdb").is_file() and (untouched or not (jdir / "lock.mdb").exists()):
        try:
            env = lmdb.open(
                str(jdir), readonly=True, lock=False, max_dbs=4, map_size=1 << 20, readahead=False
            )
        except lmdb.Error as exc:
            raise NotAJournal(f"{path}: cannot open the journal: {exc}") from None
        try:
            return JournalReader(env, path)
        except BaseException:
            env.close()
            raise
    return JournalReader.open(path)


def _not_in_use(data_dir: Path) -> None:
    """Fail if a broker holds the data directory's lock (read-only look: flock on a read fd)."""
    try:
        fd = os.open(data_dir / "lock", os.O_RDONLY)
    except OSError:
        return  # no lock file: no broker ever ran here, or it is not a data directory
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        raise Fail(
            f"{data_dir}: in use by a running broker (pid {holder}); stop it first", EXIT_ERROR
        ) from None
    finally:
        os.close(fd)  # drops our shared lock too


# -- rendering --------------------------------------------------------------------------------


def flag_names(flags: int) -> list[str]:
    names = []
    if flags & FLAG_COMPRESSED:
        names.append("compressed")
    if flags & FLAG_REPLICA:
        names.append("replica")
    rest = flags & ~(FLAG_COMPRESSED | FLAG_REPLICA)
    if rest:
        names.append(f"{rest:#x}")
    return names


def record_fields(record: Record) -> dict[str, Any]:
    """The record's own fields, in declaration order (the codec's ClassVar TYPE excluded)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def preview(body: bytes) -> str:
    """Printable ASCII of the first bytes, other bytes as '.' (hexdump's right column)."""
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in bytes(body[:PREVIEW]))
    return text + ("..." if len(body) > PREVIEW else "")


def text_value(value: Any) -> str:
    """One `key=value` value: bare when unambiguous, JSON-quoted otherwise."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{len(value)}B:{json.dumps(preview(bytes(value)))}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, list | tuple):
        return json.dumps(json_value(value), separators=(",", ":"))
    text = str(value)
    if not text or any(c.isspace() or c in "\"'=\\" for c in text) or not text.isprintable():
        return json.dumps(text)
    return text


def json_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):  # a history record's epochs
        return [json_value(v) for v in value]
    return value


def entry_text(e: Entry, full_body: bool = False) -> str:
    """One line per record; an enqueue's body is shown as the message it holds."""
    r = e.record
    pairs = [(k, text_value(v)) for k, v in record_fields(r).items()]
    if isinstance(r, Enqueue):
        pairs = [(k, v) for k, v in pairs if k != "body"]
        pairs.append(("size", str(len(r.body))))
        try:
            pairs += message_pairs(decode_message(r.body), full_body, r.priority)
        except Undecodable as exc:
            pairs.append(("message", json.dumps(f"undecodable: {exc}")))
    fields = " ".join(f"{k}={v}" for k, v in pairs)
    flags = ",".join(flag_names(e.flags)) or "-"
    return (
        f"seq={e.seq} epoch={e.epoch} origin={e.origin} type={e.type.label} flags={flags} {fields}"
    )


def entry_json(e: Entry, full_body: bool = False) -> dict[str, Any]:
    """A record as JSON: its own fields (the body in base64, what `import` reads) and, for an
    enqueue, the message decoded (`message`, or `message_error` when it does not decode)."""
    out = {
        "seq": e.seq,
        "epoch": e.epoch,
        "origin": e.origin,
        "type": e.type.label,
        "flags": flag_names(e.flags),
        "size": e.size,
        "record": {k: json_value(v) for k, v in record_fields(e.record).items()},
    }
    if isinstance(e.record, Enqueue):
        out.update(message_field(e.record.body, full_body))
    return out


def message_field(body: bytes, full_body: bool = False) -> dict[str, Any]:
    """{"message": fields} or {"message_error": why} for a stored message."""
    try:
        return {"message": message_json(decode_message(body), full_body)}
    except Undecodable as exc:
        return {"message_error": str(exc)}


def damaged_json(seq: int, reason: str, value: bytes) -> dict[str, Any]:
    return {"seq": seq, "damaged": reason, "value": base64.b64encode(bytes(value)).decode()}


def expiry_text(ms: int) -> str:
    if not ms:
        return "never"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    except (OverflowError, OSError, ValueError):
        return str(ms)


def table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart (the first row is the header), as lines."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=json_value)


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr (tqdm) with records/s, for scans that outlast `delay`; silent
    unless stderr is a terminal, and erased at the end (also when the scan failed, so that the
    error line starts on a clean line).

    Fed with record counts (`progress(n)`), as `JournalReader` calls back once per chunk.
    `total` None: unknown (a stream being imported), shown as a count and a rate.
    """

    def __init__(
        self,
        total: int | None,
        label: str = "scanning",
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        delay: float = 1.0,
    ) -> None:
        stream = stream if stream is not None else sys.stderr
        enabled = _isatty(stream) if enabled is None else enabled
        self.done = 0
        self.bar = tqdm(
            total=None if total is None else max(total, 1),
            desc=label,
            unit=" records",
            unit_scale=True,
            file=stream,
            disable=not enabled,
            delay=delay,
            leave=False,
            mininterval=0.2,
            dynamic_ncols=True,
        )

    def __call__(self, n: int) -> None:
        self.done += n
        self.bar.update(n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()

    def clear(self) -> None:
        """Erase the bar (if one was drawn) so that the results start on a clean line."""
        self.bar.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
