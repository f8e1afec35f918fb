"""Broker benchmark: durable 1 KiB messages, at-least-once, through a real `qstored`.

For each case (senders x window) the senders put `--messages` messages on a fresh queue, then one
receiver drains them. Senders and the receiver are separate processes running this file in a
worker mode (stock proton Container clients); each sender keeps `window` deliveries unsettled,
and a delivery is settled by the broker only once its enqueue is fsync'd. Prints one JSON line
per case:

- send_msg_per_s: messages / (last settle - first send), over all senders;
- p50_ms / p99_ms: send-to-settle latency of each message;
- receive_msg_per_s: messages / (last message - credit granted), one receiver, accepting each;
- receiver: "credit1000" (it grants 1000 credits, topping up at half) or "prefetch1": a stock
  proton `MessagingHandler(prefetch=1)`, one credit at a time (fair-dispatch consumers), the
  case `senders=1 window=1000 receiver=prefetch1` (`--no-prefetch1` leaves it out); a receiver
  that gets nothing for STALL_S seconds gives up (`stalled`: true, receive_msg_per_s null,
  e.g. a baseline broker that does not refill a window of 1);
- broker_cpu_ms_per_1000: the broker process's CPU (all threads, user + system, from
  /proc/<pid>/stat) per 1000 messages that went in AND out (also split into _in and _out), and
  the share of it the main thread (the event loop) took;
- auth: "none" (`--auth no`) or "sasl+acl50": the broker started with `--auth yes`, a sasl-db
  and the 50-rule ACL of bench/bench_auth.py (the bench user's grants from rule 44 on), every
  client logging in with PLAIN; round: which A/B round the line belongs to;
- machine: cpu model, cores, python.

    .venv/bin/python bench/broker_bench.py [--messages 20000] [--windows 100,1000]
        [--senders 1,4] [--size 1024] [--auth no|yes|both] [--rounds 1]
        [--exchange amq.topic [--subjects 100]] [--baseline DIR] [--profile broker.prof]
        [--no-prefetch1] [--dedup-window N]

`--auth both` runs every case on a broker without authentication and on one with it, `--rounds`
times: both brokers (fresh each round) are started first, then each case runs on one and at once
on the other, which goes first alternating from case to case and round to round, so that the two
runs compared are seconds apart (the other load of a shared machine drifts over minutes). It
then prints one line per case comparing the modes: broker CPU per 1000 messages, the means and
auth / none, and the ratio within each round with its median: an A/B in one run.
`--baseline DIR` does the same with two builds instead of two auth modes: the broker of the
checkout DIR (with its own .venv) against this one's, both as `--auth` says (see ab.py).

`--exchange NAME` adds, for each senders x window, a case whose senders publish to the topic
exchange NAME, cycling through `--subjects` subjects (`bench.load.<i>`), into a queue the bench
binds to it with `bench.#` through `$management`: with an ACL, this is the path the broker checks
per message (a sender to a queue is checked once, at attach).

`--profile FILE` runs the broker under cProfile (the main thread, i.e. the event loop, in its
own CPU time; the journal's writer thread is not profiled), writes the stats to FILE when it
stops and prints the top functions to stderr; with two variants (`--auth both`, `--baseline`)
each broker has its own FILE.<variant> and the difference is printed per function, in us and
calls per message (ab.profile_diff). Profiling slows the broker: its figures are not
the benchmark's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ab import Variant, add_options, compare, order, profile_diff, variants
from bench_auth import QUEUE_PREFIX, SUBJECT_PREFIX, Security, client_options
from machine import machine

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # tools._mgmt, broker.acl (bench_auth)
START_TIMEOUT = 20.0
CASE_TIMEOUT = 600.0
GOAL_SEND_RATE = 20_000  # msg/s, 4 senders, window 1000
GOAL_CPU_MS = 60.0  # broker CPU ms per 1000 messages sent and received
STALL_S = 5.0  # a receiver that gets nothing for this long gives up
CREDIT, PREFETCH1 = "credit1000", "prefetch1"  # the receivers

# Run in a subprocess: the broker's own main() under cProfile, stats dumped when it stops.
PROFILE_BOOT = """
import cProfile, sys, time
import broker.main
prof = cProfile.Profile(time.thread_time)  # CPU time: other processes share the machine
prof.enable()
try:
    broker.main.main(sys.argv[2:])
except SystemExit:
    pass
finally:
    prof.disable()
    prof.dump_stats(sys.argv[1])
"""


def _cpu_ms(stat: str) -> float:
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()  # utime, stime: fields 14, 15
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else 0.0


# -- the broker ------------------------------------------------------------------------------


# `--dedup-window N`: every queue gets a dedup window (qstored --dedup-window) and every message
# its own message-id (BENCH_MESSAGE_IDS, read by the sender workers); N=0 gives the ids without
# windows, the A side of an A/B of the window's cost.
BROKER_EXTRA: list[str] = []
IDS_ENV = "BENCH_MESSAGE_IDS"
# What the sender workers send (catchup_bench --body): `constant` (unset: one body over and over,
# which compresses far better than real data, in a replication batch above all), `random`
# (incompressible) or `text` (JSON-ish orders, each its own); a pool of BODY_POOL bodies each,
# made before the start (the client is the usual limit here), cycled.
BODY_ENV = "BENCH_BODY"
BODY_KINDS = ("constant", "random", "text")
BODY_POOL = 4096
_WORDS = (
    "order customer shipping address street city country invoice payment status pending shipped "
    "delivered cancelled item quantity price discount total currency warehouse carrier tracking "
    "note priority express standard return refund account email phone gift wrap fragile morning "
    "evening weekend door floor building reception"
)


def bench_bodies(kind: str, size: int, pool: int = BODY_POOL) -> list[bytes]:
    """Message bodies of `size` bytes of one kind (see BODY_ENV)."""
    if kind == "constant":
        return [os.urandom(size // 2).hex().encode()]  # hex text: what the benches always sent
    if kind == "random":
        return [os.urandom(size) for _ in range(pool)]
    if kind != "text":
        raise ValueError(f"unknown body kind {kind!r} (one of: {', '.join(BODY_KINDS)})")
    rng = random.Random(os.getpid())
    words = _WORDS.split()
    return [_order_text(rng, words, size) for _ in range(pool)]


def _order_text(rng: random.Random, words: list[str], size: int) -> bytes:
    """An order as JSON, its lines added until it holds `size` bytes, cut there."""
    lines: list[str] = []
    head = json.dumps(
        {"id": f"ord-{rng.randrange(10**9)}", "customer": f"cust-{rng.randrange(10**6)}",
         "created": 1_700_000_000 + rng.randrange(10**7), "currency": rng.choice(("EUR", "USD"))}
    )[:-1]  # fmt: skip
    text = head + "}"
    while len(text) < size:
        lines.append(json.dumps(
            {"sku": f"SKU-{rng.randrange(10**6):06d}", "ref": f"{rng.getrandbits(128):032x}",
             "qty": rng.randrange(1, 20),
             "price": round(rng.random() * 500, 2),
             "note": " ".join(rng.choice(words) for _ in range(rng.randrange(3, 12)))}
        ))  # fmt: skip
        text = f'{head}, "lines": [{", ".join(lines)}]}}'
    return text[:size].encode()


class Broker:
    """A `qstored` subprocess on 127.0.0.1, an OS-chosen port, a temporary data directory: the
    variant's code with its security options (`--auth no`, or authentication and the ACL)."""

    def __init__(self, base: Path, profile: Path | None, variant: Variant) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.variant = variant
        self.security = security = variant.security
        self.port_file = base / "port"
        args = [
            "--port",
            "0",
            "--port-file",
            str(self.port_file),
            "--data-dir",
            str(base / "d"),
            "--auto-create",
            "yes",
            *security.broker_args,
            "--log-level",
            "warning",
            *BROKER_EXTRA,
        ]
        if profile is None:
            cmd = [variant.python, "-m", "broker.main", *args]
        else:
            cmd = [variant.python, "-c", PROFILE_BOOT, str(profile), *args]
        self.log = (base / "broker.log").open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=variant.root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.url = f"127.0.0.1:{self._wait_port()}"

    def _wait_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"broker_bench: qstored exited with {self.proc.returncode}")
            try:
                text = self.port_file.read_text().strip()
                if text:
                    return int(text)
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        self.stop()
        raise SystemExit(f"broker_bench: qstored did not listen within {START_TIMEOUT}s")

    def cpu_ms(self) -> tuple[float, float]:
        """User + system CPU in ms of the whole broker process (all threads), and of its main
        thread alone (the event loop; the rest is mostly the journal's writer)."""
        pid = self.proc.pid
        return _cpu_ms(f"/proc/{pid}/stat"), _cpu_ms(f"/proc/{pid}/task/{pid}/stat")

    def stop(self) -> None:
        """SIGTERM (a profiled broker then writes its stats), SIGKILL if it does not go."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


# -- the workers (this file run as `--worker send|recv`) -------------------------------------


def _await_go() -> float:
    print("ready", flush=True)
    sys.stdin.readline()
    return time.monotonic()


def worker_send(
    url: str, address: str, count: int, window: int, size: int, subjects: int = 0
) -> dict[str, Any]:
    """Send `count` messages to `address`; with `subjects` > 0 they cycle through that many
    subjects (routing keys, for an exchange)."""
    from proton import Message
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    # Encoded once (the client is the usual limit here): the same bytes every time, or one
    # encoding per subject, or per body of a pool (BODY_ENV).
    pool = bench_bodies(os.environ.get(BODY_ENV) or "constant", size)
    body = pool[0]
    if len(pool) > 1:
        encodings = [Message(body=b, durable=True).encode() for b in pool]
    elif subjects > 0:
        encodings = [
            Message(body=body, durable=True, subject=f"{SUBJECT_PREFIX}load.{i}").encode()
            for i in range(subjects)
        ]
    elif os.environ.get(IDS_ENV):  # --dedup-window: each message its own id, encoded ahead
        encodings = [
            Message(body=body, durable=True, id=f"{os.getpid()}:{i}").encode() for i in range(count)
        ]
    else:
        encodings = [Message(body=body, durable=True).encode()]
    kinds = len(encodings)

    class Send(MessagingHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(prefetch=0)
            self.sent = self.settled = self.failed = 0
            self.sent_at: list[float] = []
            self.latencies: list[float] = []
            self.t0 = self.t1 = 0.0

        def on_start(self, event: Any) -> None:
            conn = event.container.connect(url, reconnect=False, **client_options())
            event.container.create_sender(conn, address)

        def on_sendable(self, event: Any) -> None:
            if not self.t0:
                self.t0 = _await_go()
            self._fill(event.sender)

        def _fill(self, s: Any) -> None:
            while s.credit > 0 and self.sent < count and self.sent - self.settled < window:
                s.delivery(str(self.sent))  # what Message.send does, minus re-encoding
                s.stream(encodings[self.sent % kinds])
                s.advance()
                self.sent_at.append(time.monotonic())
                self.sent += 1

        def on_rejected(self, event: Any) -> None:
            self.failed += 1

        def on_released(self, event: Any) -> None:
            self.failed += 1

        def on_settled(self, event: Any) -> None:
            now = time.monotonic()
            self.latencies.append(now - self.sent_at[int(event.delivery.tag)])
            self.settled += 1
            if self.settled == count:
                self.t1 = now
                event.connection.close()
            else:
                self._fill(event.link)

        def on_transport_error(self, event: Any) -> None:
            event.container.stop()

    h = Send()
    Container(h).run()
    return {
        "start": h.t0,
        "end": h.t1,
        "settled": h.settled,
        "failed": h.failed,
        "latencies": h.latencies,
    }


def worker_recv(url: str, queue: str, count: int, credit: int) -> dict[str, Any]:
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    class Recv(MessagingHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(prefetch=0)
            self.got = 0
            self.t0 = self.t1 = 0.0

        def on_start(self, event: Any) -> None:
            conn = event.container.connect(url, reconnect=False, **client_options())
            event.container.create_receiver(conn, queue)

        def on_link_opened(self, event: Any) -> None:
            if event.receiver is not None and not self.t0:
                self.t0 = _await_go()
                event.receiver.flow(credit)

        def on_message(self, event: Any) -> None:
            self.got += 1  # accepted (and settled) by the handler when this returns
            r = event.receiver
            if self.got == count:
                self.t1 = time.monotonic()
                event.connection.close()
            elif r.credit < credit // 2 and self.got + r.credit < count:
                r.flow(min(credit, count - self.got) - r.credit)

        def on_transport_error(self, event: Any) -> None:
            event.container.stop()

    h = Recv()
    Container(h).run()
    return {"start": h.t0, "end": h.t1, "received": h.got}


def worker_recv_prefetch1(url: str, queue: str, count: int) -> dict[str, Any]:
    """A stock proton consumer with prefetch 1: its FlowController grants one credit at a time
    (and accepts each message), as fair-dispatch consumers do. Gives up after STALL_S seconds
    without a message."""
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    class Recv(MessagingHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(prefetch=1)
            self.got = 0
            self.t0 = self.t1 = 0.0
            self.last = time.monotonic()
            self.stalled = False

        def on_start(self, event: Any) -> None:
            self.conn = event.container.connect(url, reconnect=False, **client_options())
            event.container.create_receiver(self.conn, queue)
            event.container.schedule(1.0, self)

        def on_link_opened(self, event: Any) -> None:
            if event.receiver is not None and not self.t0:
                self.t0 = self.last = _await_go()

        def on_message(self, event: Any) -> None:
            self.got += 1
            self.last = time.monotonic()
            if self.got == count:
                self.t1 = self.last
                self.conn.close()

        def on_timer_task(self, event: Any) -> None:
            if self.t1:
                return
            if self.t0 and time.monotonic() - self.last > STALL_S:
                self.stalled = True
                self.t1 = self.last
                self.conn.close()
                event.container.stop()
                return
            event.container.schedule(1.0, self)

        def on_transport_error(self, event: Any) -> None:
            event.container.stop()

    h = Recv()
    Container(h).run()
    return {"start": h.t0, "end": h.t1, "received": h.got, "stalled": h.stalled}


# -- one case --------------------------------------------------------------------------------


def _spawn(
    args: list[str], script: str = __file__, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, script, "--worker", *args],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, **env} if env else None,
    )


def run_workers(
    arg_lists: list[list[str]],
    cpu_ms: Callable[[], T],
    script: str = __file__,
    env: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], T, T]:
    """Start the workers (this file, or `script`, in worker mode; `env` added to their
    environment: the credentials), wait until each is connected (it prints `ready`), release
    them together, collect their results; returns them with the `cpu_ms()` readings taken at
    the release and after the last result. Shared by ha_bench."""
    procs = [_spawn(a, script, env) for a in arg_lists]
    try:
        deadline = time.monotonic() + START_TIMEOUT
        for p in procs:
            assert p.stdout is not None
            ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready or p.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker did not connect")
        cpu0 = cpu_ms()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=CASE_TIMEOUT)
            if p.returncode != 0:
                raise RuntimeError(f"a worker failed (exit {p.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results, cpu0, cpu_ms()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _run_workers(
    broker: Broker, arg_lists: list[list[str]]
) -> tuple[list[dict[str, Any]], tuple[float, float]]:
    """The workers' results and the broker's CPU (ms: all, main thread) spent meanwhile."""
    try:
        results, cpu0, cpu1 = run_workers(arg_lists, broker.cpu_ms, env=broker.security.env)
    except RuntimeError as exc:
        raise SystemExit(f"broker_bench: {exc}") from None
    return results, (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])


def bind_queue(url: str, security: Security, exchange: str, queue: str) -> None:
    """Create the durable `queue` and bind it to `exchange` with `bench.#`, through
    `$management` as the bench user (so the ACL's create and bind grants are exercised too)."""
    from tools._errors import ToolError
    from tools._mgmt import ManagementClient, parse_broker

    try:
        with ManagementClient(
            parse_broker(url),
            user=security.user,
            password=security.password,
            mechanism="PLAIN" if security.user else None,
        ) as client:
            client.call("CREATE", "queue", queue, {"durable": True})
            body = {"exchange": exchange, "queue": queue, "key": f"{SUBJECT_PREFIX}#"}
            client.call("CREATE", "binding", None, body)
    except ToolError as exc:
        raise RuntimeError(f"cannot bind {queue} to {exchange}: {exc}") from None


def run_case(
    broker: Broker,
    n: int,
    senders: int,
    window: int,
    size: int,
    exchange: str | None = None,
    subjects: int = 0,
    receiver: str = CREDIT,
) -> dict[str, Any]:
    """Senders put n messages on a fresh queue (or publish them to `exchange`, which routes
    them to a fresh queue bound to it), then one receiver (`CREDIT` or `PREFETCH1`) drains
    it."""
    case = f"senders={senders} window={window}"
    if receiver != CREDIT:
        case += f" receiver={receiver}"
    if exchange is None:
        queue = target = f"{QUEUE_PREFIX}{senders}-{window}.{time.monotonic_ns()}"
        subjects = 0
    else:
        queue = f"{QUEUE_PREFIX}x{senders}-{window}.{time.monotonic_ns()}"
        try:
            bind_queue(broker.url, broker.security, exchange, queue)
        except RuntimeError as exc:
            raise SystemExit(f"broker_bench: {exc}") from None
        target = exchange
        case += f" exchange={exchange} subjects={subjects}"
    shares = [n // senders + (1 if i < n % senders else 0) for i in range(senders)]
    sent, (cpu_in, main_in) = _run_workers(
        broker,
        [
            ["send", broker.url, target, str(k), str(window), str(size), str(subjects)]
            for k in shares
        ],
    )
    recv = ["recv", broker.url, queue, str(n), "1000"]
    if receiver == PREFETCH1:
        recv = ["recv1", broker.url, queue, str(n)]
    got, (cpu_out, main_out) = _run_workers(broker, [recv])
    settled = sum(r["settled"] for r in sent)
    failed = sum(r["failed"] for r in sent)
    latencies = [x for r in sent for x in r["latencies"]]
    send_s = max(r["end"] for r in sent) - min(r["start"] for r in sent)
    recv_s = got[0]["end"] - got[0]["start"]
    stalled = bool(got[0].get("stalled"))
    return {
        "case": case,
        **broker.variant.info(),
        "senders": senders,
        "window": window,
        "receiver": receiver,
        "messages": n,
        "size": size,
        "send_msg_per_s": round(settled / send_s) if send_s > 0 else None,
        "p50_ms": round(pct(latencies, 0.50) * 1e3, 2),
        "p99_ms": round(pct(latencies, 0.99) * 1e3, 2),
        "receive_msg_per_s": (
            round(got[0]["received"] / recv_s) if recv_s > 0 and not stalled else None
        ),
        "broker_cpu_ms_per_1000": round((cpu_in + cpu_out) / n * 1000, 1),
        "broker_cpu_ms_per_1000_in": round(cpu_in / n * 1000, 1),
        "broker_cpu_ms_per_1000_out": round(cpu_out / n * 1000, 1),
        "broker_main_thread_share": round((main_in + main_out) / max(cpu_in + cpu_out, 1e-9), 2),
        "settled_not_accepted": failed,
        "received": got[0]["received"],
        "stalled": stalled,
    }


def _print_profile(path: Path, top: int, who: str = "broker") -> None:
    import pstats

    for key in ("tottime", "cumulative"):
        print(f"--- {who} profile, top {top} by {key} ---", file=sys.stderr)
        pstats.Stats(str(path), stream=sys.stderr).sort_stats(key).print_stats(top)


def run_round(
    base: Path,
    sides: list[Variant],
    profile: Path | None,
    args: argparse.Namespace,
    cases: list[tuple[int, int, str | None, str]],
    info: dict[str, Any],
    round_: int,
) -> list[dict[str, Any]]:
    """One broker per variant, all started first; then each case on each of them, back to
    back, the order alternating from case to case and round to round (ab.py), so that the runs
    an A/B compares are seconds apart. One JSON line per run."""
    brokers: dict[str, Broker] = {}
    profiles: dict[str, Path] = {}
    lines = []
    try:
        for i, variant in enumerate(sides):
            if profile is not None:
                tag = variant.name.split()[0]
                profiles[variant.name] = Path(f"{profile}.{tag}") if len(sides) > 1 else profile
            where = base / f"broker-{i}"
            brokers[variant.name] = Broker(where, profiles.get(variant.name), variant)
        for c, (senders, window, exchange, receiver) in enumerate(cases):
            for variant in order(sides, round_ + c):
                res = run_case(
                    brokers[variant.name],
                    args.messages,
                    senders,
                    window,
                    args.size,
                    exchange,
                    args.subjects,
                    receiver,
                )
                goals: dict[str, Any] = {
                    "cpu_ms_per_1000_le_60": (res["broker_cpu_ms_per_1000"] <= GOAL_CPU_MS)
                }
                if senders == 4 and window == 1000 and exchange is None:
                    goals["send_ge_20000_msg_per_s"] = (
                        res["send_msg_per_s"] or 0
                    ) >= GOAL_SEND_RATE
                if receiver == PREFETCH1:
                    goals["prefetch1_received_all"] = res["received"] == args.messages
                load = round(os.getloadavg()[0], 2)
                line = {**res, "round": round_, "loadavg_1m": load, "goals": goals}
                print(json.dumps({**line, "machine": info}), flush=True)
                lines.append(line)
    finally:
        for broker in brokers.values():
            broker.stop()
        shutil.rmtree(base, ignore_errors=True)
    for name, path in profiles.items():
        if path.exists():
            _print_profile(path, args.top, f"broker ({name}, round {round_})")
    if len(profiles) == 2:
        a, b = sides[0], sides[1]
        profile_diff(
            profiles[b.name],
            profiles[a.name],
            args.messages * len(cases),
            args.top,
            f"{b.name} minus {a.name} (event loop thread, round {round_})",
            (a.root, b.root),
        )
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "send":
            subjects = int(rest[5]) if len(rest) > 5 else 0
            res = worker_send(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]), subjects)
        elif kind == "recv1":
            res = worker_recv_prefetch1(rest[0], rest[1], int(rest[2]))
        else:
            res = worker_recv(rest[0], rest[1], int(rest[2]), int(rest[3]))
        print(json.dumps(res), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000, help="messages per case")
    ap.add_argument("--windows", default="100,1000", help="unsettled deliveries per sender")
    ap.add_argument("--senders", default="1,4", help="sender processes")
    ap.add_argument("--size", type=int, default=1024, help="message body bytes")
    add_options(ap, "broker")
    ap.add_argument("--dir", default=None, help="where to put the broker's data directory")
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the broker under cProfile (FILE; FILE[.r<round>][.<auth>] when several run)",
    )
    ap.add_argument("--top", type=int, default=40, help="functions to print with --profile")
    ap.add_argument(
        "--prefetch1",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run senders=1 window=1000 with a proton prefetch=1 receiver (default: yes)",
    )
    ap.add_argument(
        "--dedup-window",
        type=int,
        default=None,
        metavar="N",
        help="qstored --dedup-window N, and a message-id on every message (0: ids, no window)",
    )
    args = ap.parse_args()
    if args.dedup_window is not None:
        BROKER_EXTRA[:] = ["--dedup-window", str(args.dedup_window)]
        os.environ[IDS_ENV] = "1"
    try:
        windows = [int(x) for x in args.windows.split(",")]
        sender_counts = [int(x) for x in args.senders.split(",")]
    except ValueError:
        ap.error("--windows and --senders take comma-separated integers")
    if args.messages <= 0 or min(windows + sender_counts) <= 0:
        ap.error("--messages, --windows and --senders must be positive")
    if args.rounds <= 0 or args.subjects <= 0:
        ap.error("--rounds and --subjects must be positive")
    if args.baseline is not None:
        if args.auth == "both":
            ap.error("--baseline compares code: give --auth no or --auth yes, not both")
        if not (args.baseline / "broker" / "main.py").is_file():
            ap.error(f"--baseline {args.baseline}: not a qstore checkout (no broker/main.py)")
    targets: list[str | None] = [None] if args.exchange is None else [None, args.exchange]
    cases = [(s, w, x, CREDIT) for x in targets for s in sender_counts for w in windows]
    if args.prefetch1:
        cases.append((1, 1000, None, PREFETCH1))
    base = Path(tempfile.mkdtemp(prefix="qstore-broker-bench-", dir=args.dir))
    info = machine()
    lines: list[dict[str, Any]] = []
    try:
        sides = variants(args.auth, args.baseline, base, exchange=args.exchange, ha=False)
        for r in range(args.rounds):
            profile = args.profile
            if profile is not None and args.rounds > 1:
                profile = Path(f"{profile}.r{r}")
            lines += run_round(base / f"r{r}", sides, profile, args, cases, info, r)
        if len(sides) > 1:
            for line in compare(lines, sides[0].name, sides[1].name):
                print(json.dumps({**line, "machine": info}), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
