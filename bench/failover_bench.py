"""Fail-over gap: how long a steady sender through qstore.client waits for its next acknowledgement
when the primary is killed (kill -9) under `qstore-cluster up --heartbeat 0.5`, or under Pacemaker.

    .venv/bin/python bench/failover_bench.py [--rate 500] [--kills 10] [--heartbeat 0.5] [--auth no]
                                             [--manager local|pacemaker] [--promoted-monitor 1s]

`--manager pacemaker`: the same three brokers run by real Corosync + Pacemaker through the OCF agent
(recovery/pacemaker.py: one node, a private mount namespace; root, packages pacemaker corosync),
with the Promoted role monitored every --promoted-monitor. Goal there: median gap <= 1.5 s with 1s.

A sender sends numbered durable messages at --rate (sync=False, a buffer big enough never to block
during a fail-over). A thread polls the sender's public `acknowledged` count and the connection's
`reconnects` every millisecond and keeps the moments they change. The primary is killed --kills
times, each once the cluster is whole again (one active primary, ready backups) and the sender has
been acknowledged on it for a while. For each kill, the gap is from the kill to the first
acknowledgement over the re-established connection (acknowledgements of the dead primary still in
the socket buffer right after the kill do not count). At the end the sender syncs (every message
sent is then acknowledged), the queue is drained, and lost (acknowledged, never received) and
duplicated messages are counted.

Prints one JSON line on stdout: gaps (min, median, max and each, seconds), sent, acknowledged,
re-sent, received, lost, duplicated, and the machine (cpu model, cores, python). Progress goes to
stderr. Goal: median gap <= 1 s, 0 lost. Exit status 1 if anything acknowledged was lost.

The cluster requires a login, as `make run`'s does: the clients log in as its `admin` (PLAIN), so
each reconnect pays a password check; `--auth no` measures an open cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from machine import machine  # noqa: E402
from proton import Message  # noqa: E402

from qstore.client import Connection  # noqa: E402
from recovery.localcluster import LocalCluster, consecutive_free_ports, drain  # noqa: E402
from recovery.pacemaker import PacemakerCluster, unavailable  # noqa: E402

QUEUE = "failover-bench"
ADDRESS = (
    f"{QUEUE}; {{create: always, node: {{durable: True, "
    "x-declare: {arguments: {'qpid.replicate': all}}}}"
)
POLL = 0.001  # seconds between samples of the sender's counters


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} failover-bench: {text}", file=sys.stderr, flush=True)


class SteadySender:
    """Numbered durable messages at `rate` per second, in a thread; `samples` records
    (time, acknowledged, reconnects) each time one of the two changes."""

    def __init__(
        self, addresses: list[str], rate: float, heartbeat: float, options: dict[str, Any]
    ) -> None:
        self.conn = Connection.establish(
            addresses[0], reconnect=True, reconnect_urls=addresses, heartbeat=heartbeat,
            reconnect_interval_max=0.25, timeout=30, **options,
        )  # fmt: skip
        self.sender = self.conn.session().sender(ADDRESS, capacity=max(1000, int(rate * 30)))
        self.rate = rate
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.samples: list[tuple[float, int, int]] = []
        self._threads = [
            threading.Thread(target=self._send, name="bench-sender", daemon=True),
            threading.Thread(target=self._watch, name="bench-watch", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _send(self) -> None:
        try:
            n, t0 = 0, time.monotonic()
            while not self.stop.is_set():
                self.sender.send(Message(body=n, durable=True), sync=False, timeout=60)
                n += 1
                ahead = t0 + n / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -1.0:  # fell behind (a blocked send): keep the rate, no burst
                    t0 = time.monotonic() - n / self.rate
        except BaseException as exc:
            self.error = exc
            self.stop.set()

    def _watch(self) -> None:
        last = (-1, -1)
        while not self.stop.is_set():
            now = (self.sender.acknowledged, self.conn.reconnects)
            if now != last:
                self.samples.append((time.monotonic(), *now))
                last = now
            time.sleep(POLL)

    def finish(self, timeout: float) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout)
        if self.error is not None:
            raise RuntimeError(f"the sender failed: {self.error!r}")
        self.sender.sync(timeout=timeout)

    def gap(self, t_kill: float, reconnects: int) -> float | None:
        """Seconds from `t_kill` to the first acknowledgement over a connection made after it."""
        samples = list(self.samples)
        before = [s for s in samples if s[2] <= reconnects]
        acked0 = before[-1][1] if before else 0
        for t, acked, rc in samples:
            if rc > reconnects and acked > acked0 and t > t_kill:
                return t - t_kill
        return None

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(Exception):
            self.conn.close(timeout=5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="qstore-failover-bench-"))
    cluster: LocalCluster | PacemakerCluster
    if args.manager == "pacemaker":
        why = unavailable()
        if why is not None:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"--manager pacemaker: {why}")
        # the brokers' options as qstore-cluster gives them (tools/qstore_cluster.py start)
        options = (
            f"--ha-replicate all --link-heartbeat-interval {args.heartbeat} "
            f"--link-maintenance-interval {min(0.1, args.heartbeat / 4)} --ha-backup-timeout 5"
        )
        cluster = PacemakerCluster(
            root, consecutive_free_ports(3), auth=args.auth == "yes", options=options,
            promoted_monitor=args.promoted_monitor, promoted_on_fail=args.promoted_on_fail,
            load_threshold=args.load_threshold,
        )  # fmt: skip
    else:
        cluster = LocalCluster(
            root, consecutive_free_ports(3), heartbeat=args.heartbeat, auth=args.auth == "yes"
        )
    load: SteadySender | None = None
    gaps: list[float] = []
    missed = 0
    try:
        cluster.whole(args.timeout)
        log(f"cluster up in {root} ({', '.join(cluster.addresses)})")
        load = SteadySender(
            cluster.addresses, args.rate, args.client_heartbeat, cluster.client_options()
        )
        load.start()
        for k in range(args.kills):
            cluster.whole(args.timeout)
            acked = load.sender.acknowledged
            t_end = time.monotonic() + args.timeout
            while load.sender.acknowledged < acked + args.rate * args.settle:  # steady on it
                if load.stop.is_set() or time.monotonic() > t_end:
                    raise RuntimeError(f"no acknowledgements before kill {k + 1}: {load.error!r}")
                time.sleep(0.01)
            states = cluster.states()
            primary = states.index("active")
            reconnects = load.conn.reconnects
            cluster.kill(primary)
            t_kill = time.monotonic()
            t_end = t_kill + args.timeout
            gap = None
            while gap is None and time.monotonic() < t_end and not load.stop.is_set():
                time.sleep(0.05)
                gap = load.gap(t_kill, reconnects)
            if gap is None:
                missed += 1
                log(f"kill {k + 1}/{args.kills} (node{primary}): no acknowledgement afterwards")
            else:
                gaps.append(gap)
                log(f"kill {k + 1}/{args.kills} (node{primary}): gap {gap:.3f}s")
        cluster.whole(args.timeout)
        load.finish(args.timeout)
        sent = load.sender.sent
        result: dict[str, Any] = {
            "manager": args.manager,
            "promoted_monitor": args.promoted_monitor if args.manager == "pacemaker" else None,
            "promoted_on_fail": args.promoted_on_fail if args.manager == "pacemaker" else None,
            "load_threshold": args.load_threshold if args.manager == "pacemaker" else None,
            "rate": args.rate,
            "kills": args.kills,
            "heartbeat": args.heartbeat,
            "auth": args.auth,
            "gap_min": round(min(gaps), 3) if gaps else None,
            "gap_median": round(statistics.median(gaps), 3) if gaps else None,
            "gap_max": round(max(gaps), 3) if gaps else None,
            "gaps": [round(g, 3) for g in gaps],
            "kills_without_ack": missed,
            "sent": sent,
            "acknowledged": load.sender.acknowledged,
            "resent": load.sender.resent,
        }
        load.close()
        received = drain(cluster.addresses, ADDRESS, options=cluster.client_options())
        counts = Counter(received)
        result["received"] = len(counts)
        result["lost"] = len(set(range(sent)) - set(counts))  # after sync: every one was acked
        result["duplicated"] = sum(c - 1 for c in counts.values())
        result["unexpected"] = sum(1 for n in counts if not (isinstance(n, int) and 0 <= n < sent))
        result["machine"] = machine()
        return result
    finally:
        if load is not None:
            load.close()
        cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, not {text!r}")
    return v


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="failover_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=positive, default=500.0, help="messages per second")
    p.add_argument("--kills", type=int, default=10, help="primary kills")
    p.add_argument(
        "--heartbeat", type=positive, default=0.5,
        help="the brokers' link heartbeat (qstore-cluster up --heartbeat)",
    )  # fmt: skip
    p.add_argument("--client-heartbeat", type=positive, default=0.5, help="qstore.client's")
    p.add_argument(
        "--settle", type=positive, default=1.0,
        help="seconds of acknowledged traffic on a primary before killing it",
    )  # fmt: skip
    p.add_argument("--timeout", type=positive, default=60.0, help="bound on each wait, seconds")
    p.add_argument("--keep", action="store_true", help="keep the cluster's directory")
    p.add_argument(
        "--auth", choices=["yes", "no"], default="yes",
        help="yes (default): the cluster requires a login (the clients log in as its admin)",
    )  # fmt: skip
    p.add_argument(
        "--manager", choices=["local", "pacemaker"], default="local",
        help="local (default): qstore-cluster up; pacemaker: Corosync + Pacemaker, the OCF agent",
    )  # fmt: skip
    p.add_argument(
        "--promoted-monitor", default="1s", metavar="INTERVAL",
        help="with --manager pacemaker: the Promoted role's monitor interval (default 1s)",
    )  # fmt: skip
    p.add_argument(
        "--promoted-on-fail", choices=["demote", "restart"], default="demote",
        help="with --manager pacemaker: on-fail of the Promoted monitor (default demote)",
    )  # fmt: skip
    p.add_argument(
        "--load-threshold", default=None, metavar="PERCENT",
        help="with --manager pacemaker: the cluster option load-threshold (Pacemaker's default "
        "80%%: it throttles its actions above twice that per core)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.kills < 1:
        p.error("--kills must be >= 1")
    try:
        result = run(args)
    except (RuntimeError, TimeoutError) as exc:
        print(f"failover_bench: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result), flush=True)
    sys.exit(1 if result["lost"] else 0)


if __name__ == "__main__":
    main()
