"""The new data directory that `salvage` and `import` write: never an existing journal, and not
left behind half written.

These two verbs are the only ones of `qstore-journal` that write, and they write only a directory
that holds nothing yet, so no mistake on the command line can overwrite a broker's journal. A run
that fails part way removes what it wrote: a half-written journal would otherwise look like a good
one to the broker started on it next.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from qstore.journal import DEFAULT_MAP_SIZE, JournalError, JournalReader
from qstore.journal.load import JournalLoader

from ._inspect_common import EXIT_ERROR, Fail


def check_target(dst: str, src: str | None = None) -> Path:
    """`dst` as a Path, if it is missing or an empty directory (and not `src`); else Fail."""
    path = Path(dst)
    if src is not None and _same(path, Path(src)):
        raise Fail(f"{dst}: the target is the source; give a new directory", EXIT_ERROR)
    if path.exists():
        if not path.is_dir():
            raise Fail(f"{dst}: exists and is not a directory", EXIT_ERROR)
        if any(path.iterdir()):
            raise Fail(f"{dst}: not empty; give a new or an empty directory", EXIT_ERROR)
    return path


@contextlib.contextmanager
def writing(dst: str) -> Iterator[None]:
    """A journal error while writing `dst` is a failure naming it (exit 2)."""
    try:
        yield
    except JournalError as exc:
        raise Fail(f"{dst}: {exc}", EXIT_ERROR) from None


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


@contextlib.contextmanager
def new_journal(
    dst: Path, *, node_id: uuid.UUID | None = None, created: bytes | None = None, map_size: int = 0
) -> Iterator[JournalLoader]:
    """A loader writing `dst`'s new journal; whatever was written goes if the body fails."""
    made = not dst.exists()
    try:
        with JournalLoader(
            dst,
            node_id=node_id,
            created=created,
            map_size=max(map_size, DEFAULT_MAP_SIZE),
        ) as loader:
            yield loader
    except BaseException:
        if made:
            shutil.rmtree(dst, ignore_errors=True)
        else:  # an empty directory given: empty again
            for p in dst.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        raise


def source_map_size(reader: JournalReader) -> int:
    """The source's LMDB map size: what its records fitted in."""
    return int(reader.env.info()["map_size"])
