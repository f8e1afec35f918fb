"""Limits benchmark: the broker's memory (RSS) under four kinds of pressure, through a real
`qstored` and stock proton clients, and whether it is still serving afterwards.

Cases (each on a fresh broker, `--auth no`, the other options at their defaults unless said):

- flood: one producer sends durable messages to a queue nobody consumes, for `--seconds`. With
  the default queue limit and producer flow control, the producer is held at the queue's
  flow-stop mark instead of growing the queue (and the broker) without bound.
- memory: the same flood into a queue with no limit (`--default-queue-limit 0`): only the
  broker-wide `--max-memory` holds the producer.
- idle: `--sockets` sockets connect and say nothing. The broker keeps at most
  `--max-connections` of them, closes the rest at once, and the ones it kept at the open deadline.
- big: `--big-count` messages of `--big-size` bytes are offered; `--max-message-size` refuses
  each as its transfers arrive, before the message is held whole.
- slow: a fast producer faces a consumer that accepts `--slow-rate` messages a second, into a
  queue limited to `--slow-limit` bytes, for `--seconds`: flow control holds the producer.

Every case then checks that a new client is served (connect, send, receive one message on a fresh
queue) and that nothing the broker accepted is lost (the case's queue is drained and every
accepted message id is found). One JSON line per case:

- rss_start_mib / rss_peak_mib / rss_end_mib: the broker's resident memory (VmRSS, sampled every
  50 ms) before, at its highest during the pressure and the drain that follows, and at the end;
- bound_mib: what the configured limits allow the case to hold (the queue limit, one message at
  the size limit, or 0) plus `--overhead` MiB over rss_start; within: rss_peak_mib <= bound_mib;
- accepted / refused: deliveries the broker settled accepted / refused (rejected, or the link or
  connection closed with an error); received, lost: after the drain;
- serving_s: from the new client's connect to its message back (goal: under 1 s);
- machine: cpu model, cores, python.

    .venv/bin/python bench/limits_bench.py [--cases flood,memory,idle,big,slow] [--seconds 30]
        [--sockets 10000] [--big-size 100MiB] [--big-count 3] [--slow-rate 200]
        [--slow-limit 20MiB] [--overhead 64]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from machine import machine

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
START_TIMEOUT = 20.0
CLIENT_TIMEOUT = 60.0  # any one client step (a drain, the serving check) ends by then


def parse_size(text: str) -> int:
    """Bytes from `100MiB`, `20M`, `512K` or a plain number."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


# -- the broker ------------------------------------------------------------------------------


class Broker:
    """A `qstored` on 127.0.0.1 (port from the OS) with a temporary data directory, its RSS
    sampled in a thread while `sampling()` is active."""

    def __init__(self, base: Path, extra: list[str]) -> None:
        base.mkdir(parents=True, exist_ok=True)
        port_file = base / "port"
        self.log_path = base / "broker.log"
        self._log = self.log_path.open("wb")
        cmd = [
            sys.executable, "-m", "broker.main", "--port", "0", "--port-file", str(port_file),
            "--data-dir", str(base / "d"), "--auth", "no", "--auto-create", "yes",
            "--log-level", "warning", *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.peak = 0
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"limits_bench: qstored exited: {self.log_path.read_text()}")
            with contextlib.suppress(OSError, ValueError):
                self.port = int(port_file.read_text().strip())
                break
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("limits_bench: qstored did not listen in time")
            time.sleep(0.02)
        self.url = f"127.0.0.1:{self.port}"

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    @contextlib.contextmanager
    def sampling(self) -> Iterator[None]:
        """Track the peak RSS while the block runs."""
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    self.peak = max(self.peak, self.rss())
                stop.wait(0.05)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


# -- clients (stock proton, each run in its own thread) ---------------------------------------


def run_container(handler: Any, seconds: float) -> Any:
    """Run a proton Container with `handler` in a thread, for at most `seconds`."""
    from proton.reactor import Container

    container = Container(handler)
    t = threading.Thread(target=container.run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        container.stop()
        t.join(10)
    return handler


def produce(
    url: str, queue: str, seconds: float, size: int, window: int = 1000, count: int = 0
) -> Any:
    """Send durable messages numbered from 0 for `seconds`, until `count` are sent (0: no
    count), or until the link is closed; counts what the broker accepted and refused."""
    from proton import Message
    from proton.handlers import MessagingHandler

    body = b"x" * size

    class Produce(MessagingHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(auto_settle=True)
            self.sent = 0
            self.accepted: set[int] = set()
            self.refused = 0
            self.error: str | None = None
            self.conn: Any = None

        def on_start(self, event: Any) -> None:
            self.conn = event.container.connect(url, reconnect=False)
            event.container.create_sender(self.conn, queue)
            event.container.schedule(seconds, self)

        def on_timer_task(self, event: Any) -> None:
            self.conn.close()

        def on_sendable(self, event: Any) -> None:
            self._fill(event.sender)

        def on_settled(self, event: Any) -> None:
            self._fill(event.link)

        def _fill(self, s: Any) -> None:
            while (
                s.credit > 0
                and self.sent - len(self.accepted) - self.refused < window
                and not (count and self.sent >= count)
            ):
                s.send(Message(id=self.sent, body=body, durable=True), tag=str(self.sent))
                self.sent += 1

        def on_accepted(self, event: Any) -> None:
            self.accepted.add(int(event.delivery.tag))
            self._done()

        def on_rejected(self, event: Any) -> None:
            self.refused += 1
            self._done()

        def _done(self) -> None:
            if count and len(self.accepted) + self.refused >= count:
                self.conn.close()

        def on_link_error(self, event: Any) -> None:
            cond = event.link.remote_condition
            self.error = f"{cond.name}: {cond.description}" if cond else "link error"
            event.connection.close()

        def on_transport_error(self, event: Any) -> None:
            cond = event.transport.condition
            self.error = self.error or (str(cond) if cond else "transport error")

    return run_container(Produce(), seconds + CLIENT_TIMEOUT)


def consume(url: str, queue: str, rate: float = 0.0, seconds: float = CLIENT_TIMEOUT) -> Any:
    """Receive (and accept) message ids from `queue`: all of them until it stays empty for a
    second (`rate` 0), or `rate` a second for `seconds`."""
    from proton.handlers import MessagingHandler

    class Consume(MessagingHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(prefetch=0 if rate else 100)
            self.ids: set[int] = set()
            self.last = time.monotonic()
            self.conn: Any = None
            self.receiver: Any = None
            self.t0 = time.monotonic()

        def on_start(self, event: Any) -> None:
            self.conn = event.container.connect(url, reconnect=False)
            self.receiver = event.container.create_receiver(self.conn, queue)
            event.container.schedule(0.0 if rate else 1.0, self)

        def on_timer_task(self, event: Any) -> None:
            now = time.monotonic()
            if rate:
                if now - self.t0 >= seconds:
                    self.conn.close()
                    return
                if self.receiver.credit == 0:
                    self.receiver.flow(1)
                event.container.schedule(1.0 / rate, self)
            elif now - self.last >= 1.0:
                self.conn.close()
            else:
                event.container.schedule(0.2, self)

        def on_message(self, event: Any) -> None:
            self.last = time.monotonic()
            with contextlib.suppress(TypeError, ValueError):
                self.ids.add(int(event.message.id))

    return run_container(Consume(), seconds + CLIENT_TIMEOUT)


def serving(url: str) -> float | None:
    """Seconds from a new client's connect to its own message back, or None (not served)."""
    from proton import Message
    from proton.utils import BlockingConnection

    queue = f"serving-{os.getpid()}-{time.monotonic_ns()}"
    t0 = time.monotonic()
    try:
        conn = BlockingConnection(url, timeout=10)
        try:
            conn.create_sender(queue).send(Message(body="ping", durable=True))
            receiver = conn.create_receiver(queue)
            msg = receiver.receive(timeout=10)
            receiver.accept()
            return time.monotonic() - t0 if msg.body == "ping" else None
        finally:
            conn.close()
    except Exception:
        return None


# -- the cases -------------------------------------------------------------------------------


def case_flood(b: Broker, args: argparse.Namespace) -> dict[str, Any]:
    p = produce(b.url, "flood", args.seconds, args.size)
    got = consume(b.url, "flood")
    return {
        "accepted": len(p.accepted),
        "refused": p.refused,
        "received": len(got.ids),
        "lost": len(p.accepted - got.ids),
        "producer_error": p.error,
        "held_bytes": args.queue_limit,
    }


def case_idle(b: Broker, args: argparse.Namespace) -> dict[str, Any]:
    socks: list[socket.socket] = []
    failed = 0
    for _ in range(args.sockets):
        try:
            socks.append(socket.create_connection(("127.0.0.1", b.port), timeout=1))
        except OSError:
            failed += 1
    time.sleep(args.idle_seconds)
    kept = 0
    for s in socks:  # still open at our end: the broker has not closed it
        s.setblocking(False)
        try:
            kept += s.recv(1) != b""
        except BlockingIOError:
            kept += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    return {
        "sockets": args.sockets,
        "connect_failed": failed,
        "kept_open_after_s": args.idle_seconds,
        "kept_open": kept,
        "accepted": 0,
        "refused": 0,
        "received": 0,
        "lost": 0,
        "held_bytes": 0,
    }


def case_big(b: Broker, args: argparse.Namespace) -> dict[str, Any]:
    refused = accepted = 0
    errors: list[str] = []
    for _ in range(args.big_count):  # one producer each: a refusal may end its link
        p = produce(b.url, "big", CLIENT_TIMEOUT, args.big_size, window=1, count=1)
        accepted += len(p.accepted)
        refused += 1 if p.refused or p.error else 0
        if p.error:
            errors.append(p.error)
    got = consume(b.url, "big")
    return {
        "accepted": accepted,
        "refused": refused,
        "received": len(got.ids),
        "lost": max(0, accepted - len(got.ids)),
        "errors": sorted(set(errors)),
        "held_bytes": args.max_message_size,
    }


def case_slow(b: Broker, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}

    def slow_consumer() -> None:
        result["slow"] = consume(b.url, "slow", rate=args.slow_rate, seconds=args.seconds)

    t = threading.Thread(target=slow_consumer, daemon=True)
    t.start()
    p = produce(b.url, "slow", args.seconds, args.size)
    t.join(CLIENT_TIMEOUT)
    rest = consume(b.url, "slow")
    received = result["slow"].ids | rest.ids if "slow" in result else rest.ids
    return {
        "accepted": len(p.accepted),
        "refused": p.refused,
        "received": len(received),
        "slow_received": len(result["slow"].ids) if "slow" in result else 0,
        "lost": len(p.accepted - received),
        "producer_error": p.error,
        "held_bytes": args.slow_limit,
    }


def case_memory(b: Broker, args: argparse.Namespace) -> dict[str, Any]:
    """The flood with no queue limit: only --max-memory holds the producer."""
    figures = case_flood(b, args)
    figures["held_bytes"] = args.max_memory
    return figures


CASES = {
    "flood": (case_flood, lambda a: []),
    "memory": (
        case_memory,
        lambda a: ["--default-queue-limit", "0", "--max-memory", str(a.max_memory)],
    ),
    "idle": (case_idle, lambda a: []),
    "big": (case_big, lambda a: ["--max-message-size", str(a.max_message_size)]),
    "slow": (case_slow, lambda a: ["--default-queue-limit", str(a.slow_limit)]),
}


def run_case(name: str, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    fn, extra = CASES[name]
    b = Broker(base / name, extra(args))
    try:
        start = b.rss()
        b.peak = start
        with b.sampling():  # the pressure and the drain after it
            figures = fn(b, args)
        serving_s = serving(b.url)
        end = b.rss()
    finally:
        b.stop()
    bound = start + figures.pop("held_bytes") + args.overhead * MIB
    return {
        "bench": "limits",
        "case": name,
        "rss_start_mib": round(start / MIB, 1),
        "rss_peak_mib": round(b.peak / MIB, 1),
        "rss_end_mib": round(end / MIB, 1),
        "bound_mib": round(bound / MIB, 1),
        "within": b.peak <= bound,
        **figures,
        "serving_s": round(serving_s, 3) if serving_s is not None else None,
        "machine": machine(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ",".join(CASES))
    ap.add_argument("--seconds", type=float, default=30.0, help="flood and slow: how long")
    ap.add_argument("--size", type=int, default=1024, help="flood and slow: message body bytes")
    ap.add_argument(
        "--queue-limit",
        type=parse_size,
        default=100 * MIB,
        help="the broker's default queue limit (the flood queue's bound); as qstored's default",
    )
    ap.add_argument(
        "--max-memory",
        type=parse_size,
        default=64 * MIB,
        help="memory: the broker's --max-memory (no queue limit)",
    )
    ap.add_argument("--sockets", type=int, default=10_000, help="idle: sockets opened")
    ap.add_argument("--idle-seconds", type=float, default=2.0, help="idle: how long they idle")
    ap.add_argument("--big-size", type=parse_size, default=100 * MIB, help="big: message size")
    ap.add_argument("--big-count", type=int, default=3, help="big: messages offered")
    ap.add_argument(
        "--max-message-size",
        type=parse_size,
        default=16 * MIB,
        help="big: the broker's --max-message-size (its default)",
    )
    ap.add_argument("--slow-rate", type=float, default=200.0, help="slow: consumer msg/s")
    ap.add_argument("--slow-limit", type=parse_size, default=20 * MIB, help="slow: queue limit")
    ap.add_argument("--overhead", type=int, default=64, help="MiB allowed over the start RSS")
    ap.add_argument("--dir", default=None, help="where to put the brokers' data directories")
    args = ap.parse_args()
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s): {', '.join(unknown)}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.sockets + 1000 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.sockets + 1000), hard))
    base = Path(tempfile.mkdtemp(prefix="limits-bench-", dir=args.dir))
    try:
        for name in names:
            print(json.dumps(run_case(name, args, base)), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
