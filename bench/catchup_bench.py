"""Catch-up benchmark: how long a backup takes to become ready, empty and after a restart.

A 2-broker cluster on 127.0.0.1 (`--ha-replicate all`). The primary gets one durable queue of
`--mb` MiB of durable messages of `--size` bytes (bench/broker_bench.py's sender workers), then is
restarted, so that its recent log starts after them and an empty backup is caught up by a
snapshot (as a backup joining a long-running primary is). Then:

1. empty backup: the second broker starts with an empty data directory; time from its start to
   its HA state `ready`, and how the primary caught it up (snapshot or tail);
2. restarted backup: it is stopped with SIGTERM, `--behind` more messages are sent, and it is
   started again on the same data directory; time from its start to `ready`, how it was caught
   up (a resynced backup should get a tail), and the time its journal took to open (its log).

Prints one JSON line per variant (this checkout; with `--baseline DIR` another checkout's brokers
first) with the figures and the machine. Goals (reported, not asserted): 1 GiB of 2 KiB messages
ready within 10 s when empty, a restarted backup a few seconds behind within 1 s of its journal
being open.

Per case: `ready_s` from the backup's start (its process included) to `ready` (its HA status,
polled), `attached_to_ready_s` from its log (from `following primary` to `-> ready`: the
catch-up alone), CPU seconds of each broker meanwhile, and what the primary logged of the attach
(`how`: snapshot or tail, and the position the backup stated). For the restart, `journal` is
what the backup logged of its journal's open (`journal_s`; an HA member restores its messages in
the background after it: `restored_s`, and `ready_before_restored_s` if it was ready first) and
`ready_s_after_journal` the time from that open to `ready`.

`--body` is what the senders send (broker_bench's BODY_ENV): `constant`, one body (hex text) over
and over, which the replication stream's batches compress far better than most data would;
`random`, incompressible bytes; `text`, JSON-ish orders, each its own (about 2.4:1 with zstd).
A compression win must hold for the last two, not only for the first.

    .venv/bin/python bench/catchup_bench.py [--mb 1024] [--size 2048] [--behind 20000]
        [--body constant|random|text] [--baseline DIR [--rounds N]] [--profile FILE] [--keep]
        [--dir DIR]

With `--baseline`, `--rounds N` runs each variant N times, which goes first alternating; each
run's data directories are removed (and the disk flushed) before the next run starts.

`--profile FILE` runs the backup under cProfile (ha_bench's wrapper): FILE.empty and
FILE.restart (event loop thread; .threads for the others), top functions to stderr; the figures
of a profiled run are not the benchmark's.

Every broker is started here with a temporary data directory and stopped by pid at the end, also
on error or Ctrl-C (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# found through the path set just above:
from ab import Variant, variants  # noqa: E402
from broker_bench import BODY_ENV, BODY_KINDS  # noqa: E402
from ha_bench import BenchError, Node, print_profile  # noqa: E402
from machine import machine  # noqa: E402

QUEUE = "catchup"
SENDERS = 2
WINDOW = 1000
STATE_TIMEOUT = 30.0
READY_TIMEOUT = 600.0
POLL = 0.05
GOAL_EMPTY_S_PER_GIB = 10.0
GOAL_RESTART_S = 1.0
_RECOVERED = re.compile(r"recovered \d+ queues, (\d+) messages from .* in ([0-9.]+)s")
_ATTACHED = re.compile(r"backup (\S+) at \S+ attached at position \((\d+), (\d+)\): (\w+)")


class Cluster:
    """Two members; `nodes[i]` is the running process of member i (None when stopped)."""

    def __init__(self, base: Path, variant: Variant, started: list[Node]) -> None:
        from recovery.localcluster import free_ports

        self.base = base
        self.variant = variant
        self.started = started
        self.ports = free_ports(2)
        self.url = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        self.nodes: list[Node | None] = [None, None]
        self.runs = [0, 0]

    def start(self, i: int, profile: Path | None = None) -> Node:
        args = ["--ha-cluster", "yes", "--ha-brokers-url", self.url, "--ha-replicate", "all",
                "--link-maintenance-interval", "0.1", "--log-level", "info",
                "--default-queue-limit", "0", "--max-memory", "0"]  # fmt: skip
        self.runs[i] += 1
        node = Node(self.base, f"node{i}", self.ports[i], args, profile, "cpu", self.variant)
        self.started.append(node)
        self.nodes[i] = node
        node.wait_listening()
        return node

    def stop(self, i: int) -> str:
        """SIGTERM member i; return its log (of this run)."""
        node = self.nodes[i]
        assert node is not None
        node.stop()
        self.nodes[i] = None
        text = node.log_path.read_text(errors="replace")
        # kept per run (the next start of this member truncates its log)
        node.log_path.rename(node.log_path.with_suffix(f".run{self.runs[i]}.log"))
        return text

    def status(self, i: int) -> dict[str, Any] | None:
        from tools._mgmt import query_status

        node = self.nodes[i]
        return None if node is None else query_status(node.url, 3.0)

    def wait_state(self, i: int, want: str, timeout: float = STATE_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        st: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            st = self.status(i)
            if st is not None and st.get("state") == want:
                return st
            node = self.nodes[i]
            if node is not None and node.proc.poll() is not None:
                raise BenchError(f"node{i} exited: {node.tail()}")
            time.sleep(POLL)
        now = None if st is None else st.get("state")
        raise BenchError(f"node{i} not {want} within {timeout:g}s (state {now})")

    def promote(self, i: int) -> None:
        from tools._mgmt import ManagementClient, ToolError, parse_broker

        node = self.nodes[i]
        assert node is not None
        self.wait_state(i, "joining")
        try:
            client = ManagementClient(parse_broker(node.url), ha_admin=True, timeout=30)
            try:
                code, desc, _ = client.request("PROMOTE", "ha")
            finally:
                client.close()
        except ToolError as exc:
            raise BenchError(str(exc)) from None
        if code != 200:
            raise BenchError(f"promote refused: {code} {desc}")
        self.wait_state(i, "active")


def fill(url: str, count: int, size: int) -> float:
    """Send `count` durable messages of `size` bytes to the queue; return msg/s."""
    from broker_bench import run_workers

    shares = [count // SENDERS + (1 if k < count % SENDERS else 0) for k in range(SENDERS)]
    shares = [k for k in shares if k]
    try:
        results, _, _ = run_workers(
            [["send", url, QUEUE, str(k), str(WINDOW), str(size)] for k in shares],
            lambda: 0.0,
            str(HERE / "ha_bench.py"),
        )
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None
    settled = sum(r["settled"] for r in results)
    if settled != count or any(r["failed"] for r in results):
        raise BenchError(f"only {settled} of {count} messages were accepted")
    took = max(r["end"] for r in results) - min(r["start"] for r in results)
    return round(count / took) if took > 0 else 0


def declare_queue(url: str) -> None:
    from tools._mgmt import ManagementClient, ToolError, parse_broker

    try:
        client = ManagementClient(parse_broker(url), ha_admin=True, timeout=30)
        try:
            client.call("CREATE", "queue", QUEUE, {"durable": True})
        finally:
            client.close()
    except ToolError as exc:
        raise BenchError(f"cannot declare {QUEUE}: {exc}") from None


def time_to_ready(c: Cluster, profile: Path | None) -> tuple[float, dict[str, Any]]:
    """Start member 1; seconds from its start to `ready`, and the CPU seconds each member spent
    meanwhile (the backup's from its start; all threads, and its main thread)."""
    primary = c.nodes[0]
    assert primary is not None
    cpu0 = primary.cpu_ms()[0]
    t0 = time.monotonic()
    backup = c.start(1, profile)
    c.wait_state(1, "ready", READY_TIMEOUT)
    took = time.monotonic() - t0
    total, main = backup.cpu_ms()
    cpu = {
        "primary_cpu_s": round((primary.cpu_ms()[0] - cpu0) / 1000, 2),
        "backup_cpu_s": round(total / 1000, 2),
        "backup_main_thread_cpu_s": round(main / 1000, 2),
    }
    return took, cpu


def wait_restored(c: Cluster, i: int) -> float | None:
    """Seconds until member i's HA status says nothing is left to restore (None: a broker that
    does not say, as one that restores before it listens)."""
    t0 = time.monotonic()
    deadline = t0 + READY_TIMEOUT
    while time.monotonic() < deadline:
        st = c.status(i)
        if st is None or "restoring" not in st:
            return None
        if not st["restoring"]:
            return round(time.monotonic() - t0, 2)
        time.sleep(POLL)
    raise BenchError(f"node{i} still restoring after {READY_TIMEOUT:g}s")


def how_caught_up(primary_log: str, name: str, nth: int) -> dict[str, Any]:
    """What the primary's log says of the `nth` attach of backup `name` (position, method)."""
    found = [m for m in _ATTACHED.finditer(primary_log) if m.group(1) == name]
    if len(found) < nth:
        return {}
    m = found[nth - 1]
    return {"how": m.group(4), "position": [int(m.group(2)), int(m.group(3))]}


_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "


def _when(log: str, pattern: str) -> float | None:
    """The time (s) of the first log line matching `pattern` (the broker's own timestamps)."""
    m = re.search(_STAMP + r".*" + pattern, log, re.MULTILINE)
    if m is None:
        return None
    day, ms = m.group(1).split(",")
    return time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000


def following_to_ready(log: str) -> float | None:
    """Seconds from the backup's attach to the primary to its `ready` (its log): the catch-up
    without the process's start."""
    t0, t1 = _when(log, "following primary"), _when(log, "-> ready")
    return None if t0 is None or t1 is None else round(t1 - t0, 2)


_RESTORED = re.compile(r"restored (\d+) messages in ([0-9.]+)s")


def recovered(log: str) -> dict[str, Any]:
    """The journal's open (the broker's log): its time, and the messages restored then or, for
    an HA member that restores them in the background, later (`restored_s`: how long that took)."""
    m = _RECOVERED.search(log)
    out = {} if m is None else {"messages": int(m.group(1)), "journal_s": float(m.group(2))}
    later = _RESTORED.search(log)
    if later is not None:
        out["messages"] = out.get("messages", 0) + int(later.group(1))
        out["restored_s"] = float(later.group(2))
        ready, restored = _when(log, "-> ready"), _when(log, "restored \\d+ messages")
        if ready is not None and restored is not None:
            out["ready_before_restored_s"] = round(restored - ready, 2)
    return out


def run_variant(
    base: Path, variant: Variant, started: list[Node], args: argparse.Namespace
) -> dict[str, Any]:
    count = max(1, (args.mb << 20) // args.size)
    c = Cluster(base, variant, started)
    c.start(0)
    c.promote(0)
    declare_queue(c.nodes[0].url)  # type: ignore[union-attr]
    fill_rate = fill(c.nodes[0].url, count, args.size)  # type: ignore[union-attr]
    # a restarted primary's recent log starts after these: an empty backup gets a snapshot
    c.stop(0)
    t0 = time.monotonic()
    c.start(0)
    c.promote(0)
    primary_restart_s = time.monotonic() - t0

    prof = None if args.profile is None else Path(f"{args.profile}.empty")
    empty_s, empty_cpu = time_to_ready(c, prof)
    empty_log = c.stop(1)
    behind_rate = fill(c.nodes[0].url, args.behind, args.size) if args.behind else None  # type: ignore[union-attr]
    prof = None if args.profile is None else Path(f"{args.profile}.restart")
    restart_s, restart_cpu = time_to_ready(c, prof)
    restored_s = wait_restored(c, 1)
    restart_log = c.stop(1)
    primary_log = c.stop(0)
    rec = recovered(restart_log)
    opened, ready = _when(restart_log, "recovered \\d+ queues"), _when(restart_log, "-> ready")
    after_journal = None if opened is None or ready is None else round(ready - opened, 2)
    gib = args.mb / 1024
    out = {
        "bench": "catchup",
        **variant.info(),
        "messages": count,
        "size": args.size,
        "body": args.body,
        "mb": args.mb,
        "fill_msg_per_s": fill_rate,
        "primary_restart_s": round(primary_restart_s, 2),
        "empty_backup": {
            "ready_s": round(empty_s, 2),
            "mb_per_s": round(args.mb / empty_s, 1),
            "attached_to_ready_s": following_to_ready(empty_log),
            **empty_cpu,
            **how_caught_up(primary_log, "node1", 1),
        },
        "restarted_backup": {
            "behind_messages": args.behind,
            "behind_msg_per_s": behind_rate,
            "ready_s": round(restart_s, 2),
            "journal": rec,
            "ready_s_after_journal": after_journal,
            "attached_to_ready_s": following_to_ready(restart_log),
            "all_restored_s_after_ready": restored_s,
            **restart_cpu,
            **how_caught_up(primary_log, "node1", 2),
        },
        "goals": {
            f"empty_le_{GOAL_EMPTY_S_PER_GIB:g}s_per_gib": empty_s <= GOAL_EMPTY_S_PER_GIB * gib,
            f"restart_le_{GOAL_RESTART_S:g}s_after_journal": after_journal is not None
            and after_journal <= GOAL_RESTART_S,
        },
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "machine": machine(),
    }
    return out


def run(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="qstore-catchup-bench-", dir=args.dir))
    started: list[Node] = []
    try:
        both = variants("no", args.baseline, base, exchange=None, ha=True)
        for r in range(args.rounds):
            # alternating which goes first: the machine's other load drifts over minutes
            for i, variant in list(enumerate(both)) if r % 2 == 0 else list(enumerate(both))[::-1]:
                here = base / f"r{r}v{i}"
                line = run_variant(here, variant, started, args)
                print(json.dumps({**line, "round": r}), flush=True)
                if args.profile is not None:
                    for case in ("empty", "restart"):
                        print_profile(Path(f"{args.profile}.{case}"), f"backup ({case})", args.top)
                if not args.keep:
                    drop_data(here)
    finally:
        for node in started:
            try:
                node.stop()
            except Exception as exc:  # keep stopping the others
                print(f"catchup_bench: stopping {node.name}: {exc}", file=sys.stderr)
        if args.keep:
            print(f"catchup_bench: data and logs kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


def drop_data(here: Path) -> None:
    """Remove a run's data directories (its logs stay until the end) and flush what the disk
    still owes: the next run must not pay for this one's gigabytes. Measured: the same code run
    second, with the first run's journals still there, took 1.4 s longer to catch up, its
    system CPU 5.2 s against 2.1 s."""
    for d in here.iterdir():
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
    os.sync()


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024, help="MiB of messages on the primary")
    ap.add_argument("--size", type=int, default=2048, help="message body bytes")
    ap.add_argument(
        "--behind", type=int, default=20_000, help="messages sent while the backup is down"
    )
    ap.add_argument(
        "--body",
        choices=BODY_KINDS,
        default="constant",
        help="message bodies: one constant body (compresses unrealistically well), random "
        "bytes, or JSON-ish text varying per message",
    )
    ap.add_argument("--dir", default=None, help="where to put the brokers' data directories")
    ap.add_argument("--keep", action="store_true", help="keep data directories and logs")
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run the brokers of another checkout (its .venv/bin/python), first",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs of each variant, which goes first alternating (with --baseline)",
    )
    ap.add_argument("--profile", type=Path, default=None, help="run the backup under cProfile")
    ap.add_argument("--top", type=int, default=30, help="functions to print with --profile")
    args = ap.parse_args()
    if min(args.mb, args.size, args.rounds) <= 0 or args.behind < 0:
        ap.error("--mb, --size and --rounds must be positive, --behind not negative")
    if args.baseline is not None and not (args.baseline / "broker" / "main.py").is_file():
        ap.error(f"--baseline {args.baseline}: not a qstore checkout (no broker/main.py)")
    os.environ[BODY_ENV] = args.body  # read by the sender workers (broker_bench's)
    try:
        signal.signal(signal.SIGTERM, _interrupted)
        run(args)
    except BenchError as exc:
        raise SystemExit(f"catchup_bench: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit("catchup_bench: interrupted; brokers stopped") from None


if __name__ == "__main__":
    main()
