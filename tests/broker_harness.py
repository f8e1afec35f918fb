"""Real `qstored` processes for tests: started on 127.0.0.1 with an OS-chosen port, a data
directory under the test's tmp_path, bounded waits, and always stopped by pid (SIGKILL as a last
resort), also when the test fails.

    def test_x(broker_proc):                 # one broker, fresh data dir, --auto-create yes
        c = BlockingConnection(broker_proc.url)

    def test_y(brokers):                     # a factory, for restarts and several brokers
        b = brokers.start(data_dir=tmp_path / "d", args=["--auto-create", "yes"])
        b.kill(); b = brokers.start(data_dir=b.data_dir)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class BrokerProcess:
    def __init__(
        self,
        data_dir: Path,
        args: list[str],
        log_path: Path,
        port: int = 0,
        *,
        wrap: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`wrap`: a command prefix the broker runs under (e.g. nsenter into the mount namespace
        of a test's small filesystem); its port file is then kept beside the log, which both
        sides see. `env`: variables added to the broker's environment."""
        self.data_dir = data_dir
        self.args = args
        self.log_path = log_path
        self.port_file = (log_path.parent if wrap else data_dir.parent) / f"{data_dir.name}.port"
        self.port_file.unlink(missing_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        cmd = [
            *wrap,
            sys.executable,
            "-m",
            "broker.main",
            "--port",
            str(port),
            "--port-file",
            str(self.port_file),
            "--data-dir",
            str(data_dir),
            "--auth",  # tests of authentication pass --auth yes (later options win)
            "no",
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
        )
        self.port = self._wait_port()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _wait_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qstored exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError, ValueError):
                text = self.port_file.read_text().strip()
                if text:
                    return int(text)
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"qstored did not listen within {START_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL if it does not stop in time)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT)
        self._log.close()


class Brokers:
    """Starts brokers for one test and stops every one of them at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[BrokerProcess] = []
        self._n = 0

    def start(
        self,
        data_dir: Path | None = None,
        args: list[str] | None = None,
        port: int = 0,
        *,
        wrap: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> BrokerProcess:
        self._n += 1
        data_dir = data_dir or self.tmp_path / f"broker{self._n}"
        log_path = self.tmp_path / f"broker{self._n}.log"
        b = BrokerProcess(data_dir, list(args or []), log_path, port, wrap=wrap, env=env)
        self.started.append(b)
        return b

    def stop_all(self) -> None:
        for b in self.started:
            with contextlib.suppress(Exception):
                b.kill()


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Brokers]:
    bs = Brokers(tmp_path)
    try:
        yield bs
    finally:
        bs.stop_all()


@pytest.fixture
def broker_proc(brokers: Brokers) -> BrokerProcess:
    """One broker with `--auto-create yes` (queues made on first attach, durable)."""
    return brokers.start(args=["--auto-create", "yes"])
