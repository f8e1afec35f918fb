"""A data directory holds every message body: what the journal creates is the owner's alone.

Each test runs with umask 0, so only the modes the code asks for stand between the files and the
rest of the machine (under a usual umask of 022 the old 0644 files would pass unnoticed).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proton import Message
from proton.utils import BlockingConnection

from qstore.journal import Journal

T = 10.0


@pytest.fixture
def no_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def open_to_others(root: Path) -> list[str]:
    """Every path under root (root included) with a group or other permission bit."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_IMODE(mode) & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


def test_fresh_journal_is_private(tmp_path: Path, no_umask: None) -> None:
    data = tmp_path / "new" / "data"
    j = Journal(data)
    j.close()
    names = sorted(str(p.relative_to(data)) for p in data.rglob("*"))
    assert names == ["journal", "journal/data.mdb", "journal/lock.mdb", "lock"]
    assert open_to_others(data) == []


def test_existing_data_dir_keeps_its_mode(tmp_path: Path, no_umask: None) -> None:
    """An operator's own directory (say group-readable for backups) is not changed behind
    their back; what the journal creates inside is still private."""
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    Journal(data).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    assert open_to_others(data / "journal") == [] and open_to_others(data / "lock") == []


def test_fresh_broker_data_dir_is_private(brokers: Any, no_umask: None) -> None:
    b = brokers.start(args=["--auto-create", "yes"])
    conn = BlockingConnection(f"amqp://{b.url}", timeout=T)
    try:
        conn.create_sender("q").send(Message(body="kept", durable=True), timeout=T)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    assert b.terminate() == 0
    assert (b.data_dir / "journal" / "data.mdb").stat().st_size > 0
    assert open_to_others(b.data_dir) == []
