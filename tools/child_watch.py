"""Sleep until a child process exits or a signal arrives, or a timeout passes.

`qstore-cluster up` used to learn of a broker's death by polling every broker's status several
times a second; the brokers are its own children, so the kernel can tell it at once instead. Each
child gets a pidfd (Linux >= 5.3), readable when that process exits, and signals write to a
wake-up pipe (`signal.set_wakeup_fd`), so a SIGTERM is not left waiting for the timeout. Both sit
in one selector: the manager sleeps in `wait()` and costs nothing while the cluster is idle. Where
pidfds do not exist the timeout alone bounds the wait, as the polling did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess

log = logging.getLogger(__name__)


class ChildWatch:
    """A selector over the pidfds of the children `watch()` was given and a signal pipe."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._pidfds: dict[int, int] = {}  # pid -> pidfd
        self._rpipe, self._wpipe = os.pipe()
        os.set_blocking(self._rpipe, False)
        os.set_blocking(self._wpipe, False)
        self._sel.register(self._rpipe, selectors.EVENT_READ, None)
        self._old_wakeup = signal.set_wakeup_fd(self._wpipe, warn_on_full_buffer=False)

    def watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Wake `wait()` when `proc` exits."""
        if not hasattr(os, "pidfd_open"):
            return
        try:
            fd = os.pidfd_open(proc.pid)
        except OSError as exc:  # an old kernel or an already reaped child: the timeout bounds it
            log.debug("no pidfd for %d: %s", proc.pid, exc)
            return
        self.forget(proc.pid)
        self._pidfds[proc.pid] = fd
        self._sel.register(fd, selectors.EVENT_READ, proc.pid)

    def forget(self, pid: int) -> None:
        """Stop watching `pid` (it was restarted or reaped: its pidfd stays readable)."""
        fd = self._pidfds.pop(pid, None)
        if fd is not None:
            self._sel.unregister(fd)
            os.close(fd)

    def wait(self, timeout: float) -> list[int]:
        """Sleep up to `timeout` seconds; the pids that exited meanwhile (forgotten now). An
        empty list: the timeout passed, or a signal woke us."""
        exited: list[int] = []
        for key, _ in self._sel.select(max(0.0, timeout)):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._rpipe, 512):
                        pass
            else:
                exited.append(key.data)
        for pid in exited:
            self.forget(pid)
        return exited

    def close(self) -> None:
        for pid in list(self._pidfds):
            self.forget(pid)
        signal.set_wakeup_fd(self._old_wakeup)
        self._sel.close()
        os.close(self._rpipe)
        os.close(self._wpipe)
