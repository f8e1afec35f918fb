"""Shared helpers for the journal tests (tests/test_journal_*.py).

They work on real LMDB files and real processes only; nothing here stands in for a journal part.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb

from qstore.journal import Entry, JournalReader, JournalState
from qstore.journal.records import HEADER, KEY

REPO = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT = 20.0  # upper bound on any wait for a child process


def uid(n: int) -> uuid.UUID:
    """A deterministic uuid (hypothesis wants examples that replay the same way)."""
    return uuid.UUID(int=n)


def state_of(entries: Iterable[Entry], keep_bodies: bool = True) -> JournalState:
    """The state that applying `entries` in order describes."""
    st = JournalState(keep_bodies=keep_bodies)
    for e in entries:
        st.apply(e)
    return st


def snapshot(data_dir: Path) -> dict[str, Any]:
    """Replay a closed journal read-only and return its comparable state."""
    with JournalReader.open(data_dir) as r:
        return r.replay().snapshot()


def seqs_held(j: JournalReader) -> list[int]:
    return [seq for seq, _ in j.raw()]


def python_env() -> dict[str, str]:
    """The environment for a child python: this checkout first on its path, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_python(
    code: str, *args: str, timeout: float = PROCESS_TIMEOUT
) -> subprocess.CompletedProcess:
    """Run `python -c code args...` to completion (bounded), capturing text output."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=python_env(),
        cwd=REPO,
    )


def start_python(code: str, *args: str) -> subprocess.Popen:
    """Start `python -c code args...` with stdout piped; the caller kills it in a finally."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=python_env(),
        cwd=REPO,
    )


class LineReader:
    """Reads a child's stdout lines on a thread, so that the test can wait with a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def get(self, timeout: float) -> str | None:
        """The next line, None at end of output; raises queue.Empty after `timeout`."""
        return self.lines.get(timeout=timeout)

    def rest(self, timeout: float = PROCESS_TIMEOUT) -> list[str]:
        """Every remaining line, once the child's stdout is closed."""
        self._thread.join(timeout)
        out = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return out
            if line is None:
                return out
            out.append(line)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL a child (if still running) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=PROCESS_TIMEOUT)


def rewrite_value(data_dir: Path, seq: int, offset: int) -> bytes:
    """Flip one byte of a stored record in place (the journal must be closed); return the old value.

    `offset` counts from the start of the stored value; the header (and its crc32c) is kept, so
    only the check at read time can notice.
    """
    env = lmdb.open(str(data_dir / "journal"), max_dbs=4, map_size=1 << 30)  # room for an edit
    try:
        db = env.open_db(b"records", create=False)
        with env.begin(write=True, db=db) as txn:
            old = txn.get(KEY.pack(seq))
            assert old is not None, f"no record seq={seq}"
            new = bytearray(old)
            new[offset] ^= 0x01
            txn.put(KEY.pack(seq), bytes(new))
        return old
    finally:
        env.close()


PAYLOAD_OFFSET = HEADER.size
