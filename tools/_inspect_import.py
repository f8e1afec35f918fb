"""`qstore-journal import DST FILE`: a journal rebuilt from `export`'s JSON lines.

An export is then a backup that can be restored, and the way to move a journal between format
versions: the records are re-encoded by this version's codec from their fields, not copied as
bytes. Each record gets back its seq, epoch, origin and flags (replica; compressed, re-compressed
the way the journal compresses), under the exported node id, so that export -> import -> export
gives the same lines. The first line of an export describes the journal (`journal_header`); a
file without it (`dump --json` output) gets a new node id.

Every line is checked before it is written; a bad one stops the import with one line naming the
file and line number, and the half-built target is removed (see _inspect_target).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from qstore.journal import FORMAT_VERSION, JournalReader, RecordType
from qstore.journal.records import (
    FLAG_COMPRESSED,
    FLAG_REPLICA,
    KEY,
    RECORD_CLASSES,
    Record,
    prepare,
    seal,
)

from ._inspect_common import EXIT_ERROR, Fail
from ._inspect_target import new_journal

FLAGS = {"replica": FLAG_REPLICA, "compressed": FLAG_COMPRESSED}
U32, U64 = (1 << 32) - 1, (1 << 64) - 1
NO_THRESHOLD = sys.maxsize  # prepare() compresses above its threshold: never


def journal_header(reader: JournalReader) -> dict[str, Any]:
    """The export's first line: what `import` needs besides the records."""
    created = reader.meta_get("created")
    high = reader.meta_get("high-water")
    return {
        "journal": {
            "node_id": str(reader.node_id),
            "format_version": reader.format_version,
            "created": None if created is None else created.decode(errors="replace"),
            "high_water": None if high is None else KEY.unpack(high)[0],
        }
    }


class BadLine(Exception):
    """One line of the file is not what export writes; the text says what (one line)."""


@dataclass
class Imported:
    records: int = 0
    skipped: list[int] = dataclasses.field(default_factory=list)  # damaged lines' seqs
    node_id: str = ""
    last: int = 0


def import_file(
    dst: Path,
    name: str,
    *,
    skip_damaged: bool,
    progress: Callable[[int], None] | None = None,
) -> Imported:
    """Build `dst`'s journal from the export in file `name` ("-": standard input)."""
    opened: AbstractContextManager[BinaryIO] = (
        nullcontext(sys.stdin.buffer) if name == "-" else open(name, "rb")  # noqa: SIM115
    )
    done = Imported()
    with opened as stream:
        lines = _numbered(stream, name)
        header, first = _header(lines, name)
        node = header.get("node_id")
        created = header.get("created")
        with new_journal(
            dst,
            node_id=None if node is None else uuid.UUID(node),
            created=None if created is None else created.encode(),
        ) as loader:
            done.node_id = str(loader.journal.node_id) if node is None else node
            pending = [first] if first is not None else []
            for number, obj in _chain(pending, lines):
                try:
                    if "damaged" in obj:
                        if not skip_damaged:
                            raise BadLine(
                                f"record seq={obj.get('seq')} is marked damaged in the export "
                                "(--skip-damaged leaves it out)"
                            )
                        done.skipped.append(int(obj.get("seq", 0)))
                        continue
                    seq, value = sealed(obj)
                    if seq <= loader.last:
                        raise BadLine(f"seq {seq} comes after seq {loader.last}: not in order")
                except BadLine as exc:
                    raise Fail(f"{name} line {number}: {exc}", EXIT_ERROR) from None
                loader.add(seq, value)
                done.records += 1
                done.last = seq
                if progress is not None:
                    progress(1)
            high = header.get("high_water")
            if done.skipped and max(done.skipped) > max(high or 0, done.last):
                high = max(done.skipped)  # new records stay above the seqs left out too
            loader.finish(high)
    return done


def _numbered(stream: BinaryIO, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The file's JSON objects with their line numbers (read as bytes: a line that is not UTF-8
    is named by its number)."""
    for number, raw in enumerate(stream, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Fail(f"{name} line {number}: not UTF-8 text", EXIT_ERROR) from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise Fail(f"{name} line {number}: not JSON", EXIT_ERROR) from None
        if not isinstance(obj, dict):
            raise Fail(f"{name} line {number}: not a JSON object", EXIT_ERROR)
        yield number, obj


def _header(
    lines: Iterator[tuple[int, dict[str, Any]]], name: str
) -> tuple[dict[str, Any], tuple[int, dict[str, Any]] | None]:
    """The journal header, if the file starts with one, and the first record line otherwise."""
    first = next(lines, None)
    if first is None:
        return {}, None
    number, obj = first
    if "journal" not in obj:
        return {}, first
    h = obj["journal"]
    try:
        if not isinstance(h, dict):
            raise BadLine("the journal header is not an object")
        if h.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise BadLine(
                f"exported from journal format {h['format_version']}, "
                f"newer than this qstore's {FORMAT_VERSION}"
            )
        if h.get("node_id") is not None:
            uuid.UUID(h["node_id"])
        if h.get("created") is not None and not isinstance(h["created"], str):
            raise BadLine("created is not text")
        if not _uint(h.get("high_water") or 0, U64):
            raise BadLine("high_water is not a sequence number")
    except (ValueError, TypeError, AttributeError) as exc:
        raise Fail(f"{name} line {number}: bad journal header: {exc}", EXIT_ERROR) from None
    except BadLine as exc:
        raise Fail(f"{name} line {number}: {exc}", EXIT_ERROR) from None
    return h, None


def _chain(
    first: list[tuple[int, dict[str, Any]]], rest: Iterator[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    yield from first
    yield from rest


def sealed(obj: dict[str, Any]) -> tuple[int, bytes]:
    """(seq, stored value) for one exported record line; BadLine if it is not one."""
    seq, epoch, origin = obj.get("seq"), obj.get("epoch"), obj.get("origin")
    if not (_uint(seq, U64) and seq > 0):
        raise BadLine(f"seq {seq!r} is not a sequence number")
    if not _uint(epoch, U32) or not _uint(origin, U64):
        raise BadLine("epoch and origin must be unsigned integers")
    flags = 0
    names = obj.get("flags", [])
    if not isinstance(names, list):
        raise BadLine("flags must be a list")
    for f in names:
        if f not in FLAGS:
            raise BadLine(f"unknown flag {f!r}")
        flags |= FLAGS[f]
    record = record_of(obj.get("type"), obj.get("record"))
    try:
        payload = record.pack()
    except (ValueError, OverflowError) as exc:  # a name too long, a number out of range
        raise BadLine(f"{record.TYPE.label}: {exc}") from None
    except Exception as exc:  # struct.error and friends: a field out of its range
        raise BadLine(f"{record.TYPE.label}: a field out of range ({exc})") from None
    threshold = 0 if flags & FLAG_COMPRESSED else NO_THRESHOLD
    p = prepare(
        record, epoch, origin, replica=bool(flags & FLAG_REPLICA), threshold=threshold,
        payload=payload,
    )  # fmt: skip
    return seq, seal(seq, p, epoch, origin)[1]


def record_of(label: Any, fields: Any) -> Record:
    """The record an export line describes, each field checked against the record's type."""
    try:
        rtype = RecordType.parse(str(label))
    except ValueError as exc:
        raise BadLine(str(exc)) from None
    if not isinstance(fields, dict):
        raise BadLine("record is not an object")
    cls = RECORD_CLASSES[rtype]
    want = {f.name: f.type for f in dataclasses.fields(cls)}
    if set(fields) != set(want):
        missing, extra = set(want) - set(fields), set(fields) - set(want)
        raise BadLine(
            f"{rtype.label}: fields {sorted(missing)} missing, {sorted(extra)} unknown"
            if missing and extra
            else f"{rtype.label}: field(s) {sorted(missing or extra)} "
            + ("missing" if missing else "unknown")
        )
    return cls(**{k: _field(rtype, k, want[k], fields[k]) for k in want})


def _field(rtype: RecordType, name: str, kind: str, value: Any) -> Any:
    what = f"{rtype.label}: {name}"
    if kind == "str":
        if not isinstance(value, str):
            raise BadLine(f"{what} is not text")
        return value
    if kind == "int":
        if not _uint(value, U64):
            raise BadLine(f"{what} is not an unsigned integer")
        return value
    if kind == "bytes":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise BadLine(f"{what} is not base64") from None
    if kind == "uuid.UUID":
        try:
            return uuid.UUID(value)
        except (ValueError, TypeError, AttributeError):
            raise BadLine(f"{what} is not a uuid") from None
    if kind.startswith("dict"):
        if not isinstance(value, dict):
            raise BadLine(f"{what} is not an object")
        return value
    if kind == "list[tuple[int, uuid.UUID, int]]":  # a history record's epochs
        if not isinstance(value, list):
            raise BadLine(f"{what} is not a list")
        epochs = []
        for item in value:
            if not (isinstance(item, list) and len(item) == 3):
                raise BadLine(f"{what}: {item!r} is not [number, node id, first seq]")
            number, node, first = item
            if not (_uint(number, U32) and _uint(first, U64)):
                raise BadLine(f"{what}: {item!r} holds a number out of range")
            epochs.append((number, _field(rtype, name, "uuid.UUID", node), first))
        return epochs
    raise AssertionError(f"record field type {kind} unknown to import")  # pragma: no cover


def _uint(value: Any, top: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top
