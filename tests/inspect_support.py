"""Shared by the tests of `qstore-journal`'s newer verbs: the tool run as a subprocess (bounded),
copies of the committed fixtures, and real journals written through `Journal`."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from proton import Message

from qstore.journal import Journal, QueueDeclare, Record

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
TIMEOUT = 60.0  # bound on every child process (subprocess.run kills it on expiry)
MAP = 8 << 20
CLEAN_NODE = "11111111-1111-4111-8111-111111111111"
DAMAGED_SEQ = 10  # as fixtures/README.md says


def tool() -> list[str]:
    script = Path(sys.executable).parent / "qstore-journal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tools.journal_inspect"]


def run(*args: Any, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tool(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO,
        check=False,
        input=stdin,
    )


def copy_fixture(name: str, dest: Path) -> Path:
    """Copy fixtures/<name> (its data.mdb only) to dest/<name>; return the copy's data dir."""
    target = dest / name / "journal"
    target.mkdir(parents=True)
    shutil.copyfile(FIXTURES / name / "journal" / "data.mdb", target / "data.mdb")
    return dest / name


def one_error_line(cp: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in cp.stderr
    lines = cp.stderr.splitlines()
    assert len(lines) == 1, cp.stderr
    return lines[0]


def encoded(**fields: Any) -> bytes:
    """A message's AMQP encoding, as a broker journals what it received."""
    return bytes(Message(**fields).encode())


def write_journal(
    data_dir: Path, batches: Iterable[list[Record]], *, queues: Iterable[str] = ()
) -> None:
    """A real journal (epoch 1, compaction held back): the queues' declares, then `batches`."""
    with Journal(data_dir, map_size=MAP) as j:
        j.set_compaction_horizon(0)
        j.start_epoch(1)
        declares = [QueueDeclare(q, uuid.uuid5(uuid.NAMESPACE_OID, q)) for q in queues]
        if declares:
            j.append_many(declares)
        for batch in batches:
            j.append_many(batch)


def checksums(root: Path) -> dict[str, str]:
    """Every file under `root` (relative name -> sha256): what "never written" is checked by."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
