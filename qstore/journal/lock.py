"""The data directory's exclusive lock: one broker per data directory, a clear word otherwise."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import JournalLocked
from .modes import PRIVATE_FILE


class DataDirLock:
    """An flock on `<data-dir>/lock`, holding the owner's pid as text for the next one to read."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise JournalLocked(
                f"cannot lock {self.path}: held by pid {holder} (another broker uses this data dir)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays for forensics
            self._fd = None
