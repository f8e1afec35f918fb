"""A small real filesystem for tests of a full disk: a size-limited tmpfs.

As root it is mounted where the test asks. Where mount is not allowed (CI need not be root), it
is mounted in a user and mount namespace of its own (`unshare -rm`, held open by a sleeping
process): brokers run inside it through `nsenter` (`SmallFs.wrap`), and the test reaches its
files through `/proc/PID/root` (`SmallFs.outside`). Where neither works, the test is skipped,
saying why. The mount (or the namespace) is always removed, also when the test fails.

    with small_fs(tmp_path / "fs", 8 << 20) as fs:
        b = brokers.start(data_dir=fs.path / "d", wrap=fs.wrap)
        fs.outside(fs.path / "ballast").write_bytes(...)
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TIMEOUT = 10.0
FORCE = "QSTORE_TEST_SMALL_FS"  # "unshare": take the namespace route even as root (to test it)


@dataclass
class SmallFs:
    path: Path  # where a broker (run with `wrap`) sees the filesystem
    size: int
    wrap: list[str] = field(default_factory=list)
    root: Path | None = None  # /proc/PID/root of the namespace, when there is one

    def outside(self, p: Path) -> Path:
        """The path by which this test process reaches `p` (a path on the filesystem)."""
        return p if self.root is None else self.root / p.relative_to("/")

    def free(self) -> int:
        vfs = os.statvfs(self.outside(self.path))
        return vfs.f_bavail * vfs.f_frsize


@contextlib.contextmanager
def small_fs(path: Path, size: int) -> Iterator[SmallFs]:
    path.mkdir(parents=True, exist_ok=True)
    problems = []
    if os.environ.get(FORCE) != "unshare":
        mount = _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)])
        if mount is None:
            try:
                yield SmallFs(path, size)
            finally:
                _run(["umount", "-l", str(path)])
            return
        problems.append(f"mount: {mount}")
    holder, why = _namespace(path, size)
    if holder is None:
        problems.append(f"unshare -rm: {why}")
        pytest.skip("no size-limited filesystem for a full-disk test: " + "; ".join(problems))
    try:
        pid = str(holder.pid)
        yield SmallFs(
            path,
            size,
            wrap=["nsenter", "-t", pid, "-U", "-m", "--preserve-credentials", "--"],
            root=Path("/proc") / pid / "root",
        )
    finally:
        holder.kill()
        holder.communicate(timeout=TIMEOUT)  # reaps it and closes its pipes


def _run(cmd: list[str]) -> str | None:
    """None on success, else what went wrong in one line."""
    if shutil.which(cmd[0]) is None:
        return f"{cmd[0]} not found"
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if p.returncode == 0 else (p.stderr.strip() or f"exit {p.returncode}")


def _namespace(path: Path, size: int) -> tuple[subprocess.Popen[str] | None, str]:
    """A process holding a user and mount namespace with the tmpfs mounted at `path`."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return None, "unshare or nsenter not found"
    script = f'mount -t tmpfs -o size={size},mode=0700 tmpfs "$1" && echo ready && exec sleep 3600'
    p = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        line = p.stdout.readline() if sel.select(TIMEOUT) else ""  # "" too when sh exits
    if line.strip() == "ready":
        return p, ""
    p.kill()
    _, err = p.communicate(timeout=TIMEOUT)
    return None, (err.strip() or "the namespace did not come up")
