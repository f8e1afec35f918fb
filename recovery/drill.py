"""`qstore-drill`: recovery drills against a local cluster, with a Jepsen-style report.

    qstore-drill total-failure [--messages N] [--one-at-a-time] [--data-dir D] [--base-port P]
    qstore-drill rolling [--messages N] [--kills N] [--data-dir D] [--base-port P]
    (both: [--json] [--seed S] [--timeout S] [--auth yes|no] [--dedup-window N])

A drill starts `qstore-cluster up` in a temporary (or given) directory, sends numbered durable
messages through `qstore.client` with every broker's URL, breaks the cluster while the sender runs,
lets the manager recover, drains the queues, and compares: every message the cluster acknowledged
must be read back. The same numbers go to two queues over one connection, so through the same
faults: `drill`, without a dedup window, where duplicates are allowed (clients re-send what was
not acknowledged), and `drill-dedup`, with `qstore.dedup-window` N, where a re-send must not be
enqueued again. It exits 1 if anything acknowledged was lost, anything unexpected appeared, or the
window queue holds a duplicate. The cluster requires a login, as `make run`'s does (the clients
log in as its `admin`); `--auth no` drills an open one.

Nothing consumes during the faults: the queues are drained once the cluster is whole again, so a
number read twice was enqueued twice (a producer's duplicate), unless the broker marks the second
delivery a redelivery (the drain's own acknowledgement lost): that is counted apart.

- total-failure: kill -9 every broker at a random moment (with --one-at-a-time, one after another
  with gaps); the manager restarts them, waits for them all and promotes the newest journal.
- rolling: kill -9 the primary or a backup at random, N times, each once the cluster is whole again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from proton import Message

from qstore.client import Connection
from recovery.localcluster import LocalCluster, consecutive_free_ports, drain_marked

QUEUE = "drill"
DEDUP_QUEUE = "drill-dedup"
DEFAULT_WINDOW = 100_000  # a re-send's original is among the sender's last few hundred


def address(queue: str, window: int = 0) -> str:
    """The drill's address of `queue`: created durable, with a dedup window of `window` ids."""
    if not window:
        return f"{queue}; {{create: always, node: {{durable: True}}}}"
    declare = f"x-declare: {{arguments: {{'qstore.dedup-window': {window}}}}}"
    return f"{queue}; {{create: always, node: {{durable: True, {declare}}}}}"


ADDRESS = address(QUEUE)


@dataclass
class QueueReport:
    """One queue's figures. `duplicated`: numbers enqueued more than once (producer duplicates);
    `redelivered`: numbers read again because an acknowledgement was lost (consumer side)."""

    dedup_window: int = 0
    sent: int = 0
    acknowledged: int = 0
    received: int = 0
    lost: int = 0
    unexpected: int = 0
    duplicated: int = 0
    redelivered: int = 0
    resent: int = 0
    lost_examples: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost or unexpected; with a window, no duplicate either."""
        dups = self.duplicated if self.dedup_window else 0
        return self.lost == 0 and self.unexpected == 0 and dups == 0


@dataclass
class Report:
    """The drill's report: the top-level figures are the queue without a window's (as before
    the window queue was added: reports compare over time); `queues` has each queue's."""

    drill: str
    sent: int = 0
    acknowledged: int = 0
    received: int = 0
    lost: int = 0
    unexpected: int = 0
    duplicated: int = 0
    resent: int = 0
    recovery_seconds: float | None = None
    kills: int = 0
    lost_examples: list[int] = field(default_factory=list)
    queues: dict[str, QueueReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(q.ok for q in self.queues.values())


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} drill: {text}", file=sys.stderr, flush=True)


class Load:
    """Numbered senders through qstore.client, in a thread of their own: each number goes to
    every target (queue: address) in turn, over one connection."""

    def __init__(
        self,
        addresses: list[str],
        count: int,
        options: dict[str, Any] | None = None,
        targets: dict[str, str] | None = None,
    ) -> None:
        self.addresses = addresses
        self.count = count
        self.options = dict(options or {})  # more Connection.establish keywords: the login
        self.targets = dict(targets or {QUEUE: ADDRESS})
        self.sent = 0  # numbers sent to every target
        self.more = threading.Event()  # set: keep sending past `count` (load during kills)
        self.error: BaseException | None = None
        self.senders: dict[str, Any] = {}
        self.conn: Connection | None = None
        self.thread = threading.Thread(target=self._run, name="drill-sender", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self.conn = Connection.establish(
                self.addresses[0], reconnect=True, reconnect_urls=self.addresses, heartbeat=0.5,
                reconnect_interval_max=0.5, **self.options,
            )  # fmt: skip
            ssn = self.conn.session()
            for queue, addr in self.targets.items():
                self.senders[queue] = ssn.sender(addr, capacity=500)
            n = 0
            while n < self.count or self.more.is_set():
                for sender in self.senders.values():
                    sender.send(Message(body=n, durable=True), sync=False)
                n += 1
                self.sent = n
            for sender in self.senders.values():
                sender.sync(timeout=120)
        except BaseException as exc:  # reported, not raised: the report says what happened
            self.error = exc

    def sent_to(self, queue: str) -> int:
        """Numbers given to `queue`'s sender (0..n-1; one more than `sent` if it stopped midway)."""
        sender = self.senders.get(queue)
        return int(getattr(sender, "sent", 0) or 0)

    def resent(self, queue: str) -> int:
        return int(getattr(self.senders.get(queue), "resent", 0) or 0)

    def acknowledged(self, queue: str = QUEUE) -> set[int]:
        """Numbers the cluster acknowledged for `queue`: sent, and no longer held for
        re-sending."""
        held = set()
        pending = getattr(self.senders.get(queue), "_pending", {})
        for out in list(pending.values()):
            body = getattr(out.message, "body", None)
            if isinstance(body, int):
                held.add(body)
        return set(range(self.sent_to(queue))) - held

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close(timeout=5)


def compare(
    report: QueueReport, sent: int, acked: set[int], received: list[tuple[Any, bool]]
) -> None:
    """Fill `report` from what was sent, acknowledged and drained (bodies, each with whether
    its delivery was a redelivery). A number read again is a producer duplicate (enqueued
    twice) unless the broker marked that delivery a redelivery (an acknowledgement lost)."""
    counts: Counter[Any] = Counter()
    for body, redelivered in received:
        if counts[body]:
            if redelivered:
                report.redelivered += 1
            else:
                report.duplicated += 1
        counts[body] += 1
    report.sent = sent
    report.acknowledged = len(acked)
    report.received = len(counts)
    lost = sorted(acked - set(counts))
    report.lost = len(lost)
    report.lost_examples = lost[:20]
    report.unexpected = sum(1 for n in counts if not (isinstance(n, int) and 0 <= n < sent))


def headline(report: Report, plain: QueueReport) -> None:
    """The top-level figures: the queue without a window's (the drill's figures before the
    window queue was added)."""
    for name in ("sent", "acknowledged", "received", "lost", "unexpected", "duplicated",
                 "resent", "lost_examples"):  # fmt: skip
        setattr(report, name, getattr(plain, name))


def total_failure(cluster: LocalCluster, load: Load, args: argparse.Namespace,
                  rnd: random.Random, report: Report) -> None:  # fmt: skip
    at = rnd.randint(args.messages // 5, max(args.messages // 5, args.messages * 4 // 5))
    while load.sent < at and load.thread.is_alive():
        time.sleep(0.01)
    log(f"kill -9 every broker after {load.sent} messages sent")
    old = cluster.pids()
    for i in range(len(cluster.addresses)):
        cluster.kill(i)
        report.kills += 1
        if args.one_at_a_time and i < len(cluster.addresses) - 1:
            time.sleep(rnd.uniform(0.2, 1.0))
    # the manager restarts them: recovery is timed from all being back to a primary active
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.timeout:
        pids = cluster.pids()
        if all(p not in old for p in pids) and all(s is not None for s in cluster.states()):
            break
        time.sleep(0.05)
    restarted = time.monotonic()
    active = cluster.wait(
        lambda s: "active" in s, "a primary after the total failure", args.timeout
    )
    report.recovery_seconds = round(active - restarted, 2)
    log(f"primary active {report.recovery_seconds}s after every broker was back")


def rolling(cluster: LocalCluster, load: Load, args: argparse.Namespace,
            rnd: random.Random, report: Report) -> None:  # fmt: skip
    load.more.set()  # the kills happen under load, however fast the first N messages go
    for k in range(args.kills):
        cluster.whole(args.timeout)
        states = cluster.states()
        victim = rnd.randrange(len(states))
        time.sleep(rnd.uniform(0.1, 0.5))
        log(f"kill {k + 1}/{args.kills}: node{victim} ({states[victim]})")
        cluster.kill(victim)
        report.kills += 1
        if states[victim] == "active":
            t0 = time.monotonic()
            t1 = cluster.wait(lambda s: "active" in s, "a new primary", args.timeout)
            report.recovery_seconds = max(report.recovery_seconds or 0.0, round(t1 - t0, 2))
    cluster.whole(args.timeout)
    load.more.clear()


def run(args: argparse.Namespace) -> Report:
    rnd = random.Random(args.seed)
    root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="qstore-drill-"))
    root.mkdir(parents=True, exist_ok=True)
    base = args.base_port or consecutive_free_ports(3)
    report = Report(args.drill)
    cluster = LocalCluster(root, base, heartbeat=0.5, recovery_wait=10, auth=args.auth == "yes")
    load: Load | None = None
    windows = {QUEUE: 0, DEDUP_QUEUE: args.dedup_window}
    targets = {q: address(q, w) for q, w in windows.items()}
    try:
        cluster.whole(args.timeout)
        log(f"cluster up in {root} on ports {base}-{base + 2}")
        load = Load(cluster.addresses, args.messages, cluster.client_options(), targets)
        load.start()
        (total_failure if args.drill == "total-failure" else rolling)(
            cluster, load, args, rnd, report
        )
        load.thread.join(args.timeout * 4)
        if load.error is not None:
            log(f"sender stopped: {load.error!r}")
        acked = {q: load.acknowledged(q) for q in targets}
        load.close()
        cluster.whole(args.timeout)
        for queue, addr in targets.items():
            received = drain_marked(cluster.addresses, addr, options=cluster.client_options())
            q = report.queues[queue] = QueueReport(dedup_window=windows[queue])
            compare(q, load.sent_to(queue), acked[queue], received)
            q.resent = load.resent(queue)
            log(f"{queue}: {len(received)} drained, {q.duplicated} duplicated, {q.lost} lost")
        headline(report, report.queues[QUEUE])
    finally:
        if load is not None:
            load.close()
        cluster.stop()
        if not args.data_dir and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return report


PER_QUEUE = ("sent", "acknowledged", "received", "lost", "unexpected", "duplicated",
             "redelivered", "resent")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="qstore-drill", description=__doc__.split("\n\n")[0])
    p.add_argument("drill", choices=["total-failure", "rolling"])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--kills", type=int, default=3, help="rolling: how many brokers to kill")
    p.add_argument("--one-at-a-time", action="store_true", help="total-failure: kill in turn")
    p.add_argument("--data-dir", default=None, help="keep the cluster here (default: a temp dir)")
    p.add_argument("--base-port", type=int, default=0, help="default: free ports from the OS")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--timeout", type=float, default=60.0, help="bound on each wait, seconds")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--auth", choices=["yes", "no"], default="yes",
        help="yes (default): the cluster requires a login (clients log in as its admin)",
    )  # fmt: skip
    p.add_argument(
        "--dedup-window", type=int, default=DEFAULT_WINDOW, metavar="N",
        help=f"qstore.dedup-window of the queue {DEDUP_QUEUE} (default {DEFAULT_WINDOW})",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.messages < 1 or args.kills < 0:
        p.error("--messages must be >= 1 and --kills >= 0")
    if args.dedup_window < 1:
        p.error("--dedup-window must be >= 1 (the queue drill is the one without a window)")
    try:
        report = run(args)
    except (TimeoutError, RuntimeError) as exc:
        print(f"qstore-drill: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        verdict = "PASS" if report.ok else "FAIL"
        print(f"{report.drill}: {verdict}")
        for k in ("sent", "acknowledged", "received", "lost", "unexpected", "duplicated",
                  "resent", "kills", "recovery_seconds"):  # fmt: skip
            print(f"  {k:<17}{getattr(report, k)}")
        if report.lost_examples:
            print(f"  lost (first)     {report.lost_examples}")
        print(f"  {'queue':<12}{'window':>7}" + "".join(f"{k:>13}" for k in PER_QUEUE))
        for name, q in report.queues.items():
            figures = "".join(f"{getattr(q, k):>13}" for k in PER_QUEUE)
            print(f"  {name:<12}{q.dedup_window:>7}{figures}")
            if q.lost_examples and name != QUEUE:
                print(f"  {name} lost (first) {q.lost_examples}")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
