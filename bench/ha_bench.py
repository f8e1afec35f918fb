"""HA benchmark: what replication costs. A standalone broker and a 3-broker cluster (primary + 2
ready backups on 127.0.0.1, `--ha-replicate all`) get the same load in one run: durable 1 KiB
messages, at-least-once, 4 sender processes (stock proton Container clients) with 1000 unsettled
deliveries each, then one receiver drains the queue.

The sender and receiver workers and the percentiles are `bench/broker_bench.py`'s (imported; run
here as `--worker send|recv`), measured the same way, so the two benchmarks compare; this file
starts the brokers, runs the load on each setup, reads every broker's CPU and compares.
On the cluster a delivery is settled only after the primary's fsync AND both backups' acks, so
the p50/p99 send-to-settle latency includes the replication round trip.

Prints one JSON line per setup (msg/s, p50/p99 ms, receive rate, broker CPU), then one summary
line: cluster/standalone send throughput, CPU ms of all three cluster brokers per 1000 messages
sent and received (utime + stime from /proc/<pid>/stat), the goals (reported, not asserted) and
the machine.

    .venv/bin/python bench/ha_bench.py [--messages 20000] [--size 1024]
        [--auth no|yes|both] [--rounds 1] [--exchange amq.topic [--subjects 100]]
        [--baseline DIR]
        [--profile ha.prof] [--profile-clock cpu|wall] [--profile-backup]
        [--profile-standalone] [--top 30] [--keep] [--dir DIR]

`--auth yes` starts every broker with `--auth yes`, a sasl-db holding the bench user and the HA
user (the cluster's `--ha-username`/`--ha-password-file`) and bench/bench_auth.py's 50-rule ACL
plus `acl allow HAUSER all all`; the clients log in with PLAIN, the backups as the HA user.
`--auth both` runs the standalone broker and the cluster in both modes, `--rounds` times: one
setup per mode started together, each load run on one and at once on the other, which goes first
alternating (the runs compared are seconds apart); it ends with one line per setup comparing the
modes' CPU per 1000 messages (auth / none, means and per round; for the cluster, all three
brokers'). Every line says its "auth" ("none" or "sasl+acl50") and "round".
`--exchange NAME` adds a load published to the topic exchange NAME with varying subjects (the
path where the ACL decides per message; see broker_bench). `--baseline DIR` compares another
checkout's brokers (its .venv) with this one's in the same way, both as `--auth` says (ab.py).

`--profile FILE` adds a third, separate pass: a fresh cluster whose primary runs under cProfile
(this file re-run as `--profiled-broker`: every thread gets its own profiler; the stats are
written when the broker stops on SIGTERM: FILE for the event loop thread, FILE.threads for the
others; timed by each thread's CPU time unless `--profile-clock wall`), and prints the top
functions to stderr; `--profile-backup` profiles backup1 as well (FILE.backup1);
`--profile-standalone` also profiles a standalone broker under the same load (FILE.standalone)
and prints, per function, how much more the primary spends per message. Profiling slows
the brokers, so that pass's figures are printed with `"profiled": true` and are not the
benchmark's.

Every broker is started here with a temporary data directory and stopped by pid at the end, also
on error or Ctrl-C (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# found through the path set just above:
from ab import Variant, add_options, compare, order, profile_diff, variants  # noqa: E402
from bench_auth import Security  # noqa: E402

SENDERS = 4
WINDOW = 1000
START_TIMEOUT = 20.0
READY_TIMEOUT = 30.0
CASE_TIMEOUT = 600.0
STOP_TIMEOUT = 30.0
# Fast reconnects of backups at start-up; heartbeats stay at the broker's default so that a
# loaded event loop is not mistaken for a dead backup.
HA_ARGS = ["--ha-replicate", "all", "--link-maintenance-interval", "0.2"]
GOAL_RATIO = 0.5  # cluster send throughput / standalone
GOAL_RATE = 10_000  # cluster msg/s
GOAL_CPU_MS = 150.0  # all three cluster brokers, CPU ms per 1000 messages sent and received


# -- brokers -----------------------------------------------------------------------------------


# --dedup-window N: the members' qstored options for it (see main)
DEDUP_EXTRA: list[str] = []


class Node:
    """One `qstored` process on 127.0.0.1 with its own data directory under `base`."""

    def __init__(
        self,
        base: Path,
        name: str,
        port: int,
        extra: list[str],
        profile: Path | None = None,
        clock: str = "cpu",
        variant: Variant | None = None,
    ) -> None:
        self.name = name
        variant = variant or Variant("none", Security.none())
        self.profile = profile
        base.mkdir(parents=True, exist_ok=True)
        self.port_file = base / f"{name}.port"
        args = [
            "--port",
            str(port),
            "--port-file",
            str(self.port_file),
            "--data-dir",
            str(base / name),
            "--name",
            name,
            "--auto-create",
            "yes",
            *variant.security.broker_args,
            "--log-level",
            "warning",
            *extra,
            *DEDUP_EXTRA,
        ]
        if profile is None:
            cmd = [variant.python, "-m", "broker.main", *args]
        else:
            cmd = [
                variant.python,
                str(Path(__file__).resolve()),
                "--profiled-broker",
                str(profile),
                clock,
                *args,
            ]
        self.log_path = base / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=variant.root,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.port = 0

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                text = self.port_file.read_text().strip()
                if text:
                    self.port = int(text)
                    return
            time.sleep(0.02)
        raise BenchError(f"{self.name} did not listen within {START_TIMEOUT:g}s: {self.tail()}")

    def tail(self) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def cpu_ms(self) -> tuple[float, float]:
        """User + system CPU in ms: of the whole process (all threads), of its main thread (the
        event loop; the rest is mostly the journal's writer thread)."""
        pid = self.proc.pid
        return _stat_cpu_ms(f"/proc/{pid}/stat"), _stat_cpu_ms(f"/proc/{pid}/task/{pid}/stat")

    def stop(self) -> None:
        """SIGTERM (clean stop; a profiled broker writes its stats), SIGKILL if it lingers."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                print(f"ha_bench: {self.name} ignored SIGTERM, killed", file=sys.stderr)
        self._log.close()


class BenchError(Exception):
    """A failure to report as one line (exit status 1)."""


def _stat_cpu_ms(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()  # utime, stime: fields 14, 15
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class Setup:
    """A standalone broker or a cluster: clients go to `nodes[0]` (the primary)."""

    def __init__(
        self,
        label: str,
        nodes: list[Node],
        variant: Variant,
        states: Callable[[], list[str | None]] | None = None,
    ) -> None:
        self.label = label
        self.nodes = nodes
        self.variant = variant
        self.security = variant.security
        self.states = states  # a cluster: each member's HA state, None if it does not answer

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def cpu_ms(self) -> list[tuple[float, float]]:
        return [n.cpu_ms() for n in self.nodes]

    def restart_profiles(self) -> None:
        """Profiled members drop what their event loop thread's profile holds so far (start-up,
        joining, promotion), so that it covers the load only (SIGUSR1, see profiled_broker)."""
        for n in self.nodes:
            if n.profile is not None and n.proc.poll() is None:
                os.kill(n.proc.pid, signal.SIGUSR1)
        time.sleep(0.2)


def start_standalone(
    base: Path,
    started: list[Node],
    variant: Variant,
    profile: Path | None = None,
    clock: str = "cpu",
) -> Setup:
    node = Node(base, "standalone", 0, [], profile, clock, variant)
    started.append(node)
    node.wait_listening()
    return Setup("standalone", [node], variant)


def start_cluster(
    base: Path,
    started: list[Node],
    variant: Variant,
    profile: Path | None = None,
    clock: str = "cpu",
    profile_backup: bool = False,
) -> Setup:
    """Three members; member 0 is promoted and the others are waited for until ready. With
    `profile`, member 0 runs under cProfile (and member 1 too, to `profile`.backup1, if
    `profile_backup`). The promote and the status reads log in as the HA user when
    the variant's security has one."""
    from recovery.localcluster import free_ports
    from tools._mgmt import ManagementClient, ToolError, parse_broker, query_status

    ports = free_ports(3)
    url = ",".join(f"127.0.0.1:{p}" for p in ports)
    nodes: list[Node] = []
    profiles: list[Path | None] = [None, None, None]
    if profile is not None:
        profiles[0] = profile
        if profile_backup:
            profiles[1] = Path(f"{profile}.backup1")
    for i, port in enumerate(ports):
        args = ["--ha-cluster", "yes", "--ha-brokers-url", url, *HA_ARGS]
        node = Node(base, f"node{i}", port, args, profiles[i], clock, variant)
        started.append(node)
        nodes.append(node)
    for node in nodes:
        node.wait_listening()
    login: dict[str, Any] = {}
    security = variant.security
    if security.ha_user is not None:
        login = {"user": security.ha_user, "password": security.ha_password, "mechanism": "PLAIN"}

    def states() -> list[str | None]:
        out: list[str | None] = []
        for n in nodes:
            st = query_status(n.url, 3.0, **login)
            out.append(None if st is None else str(st.get("state")))
        return out

    def wait_for(want: list[str], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        now: list[str | None] = []
        while time.monotonic() < deadline:
            now = states()
            if now == want:
                return
            time.sleep(0.1)
        raise BenchError(f"cluster not {what} within {READY_TIMEOUT:g}s: states {now}")

    wait_for(["joining"] * 3, "joining")
    try:
        client = ManagementClient(parse_broker(nodes[0].url), ha_admin=True, timeout=15, **login)
        try:
            code, desc, _ = client.request("PROMOTE", "ha")
        finally:
            client.close()
    except ToolError as exc:
        raise BenchError(str(exc)) from None
    if code != 200:
        raise BenchError(f"promote refused: {code} {desc}")
    wait_for(["active", "ready", "ready"], "active with two ready backups")
    return Setup("cluster-3", nodes, variant, states)


# -- the run -------------------------------------------------------------------------------------


def _run_workers(
    setup: Setup, arg_lists: list[list[str]]
) -> tuple[list[dict[str, Any]], list[tuple[float, float]]]:
    """The workers' results (broker_bench's workers, released together) and each member's CPU
    (ms: all threads, main thread) spent between the release and the last result."""
    from broker_bench import run_workers

    try:
        results, cpu0, cpu1 = run_workers(
            arg_lists, setup.cpu_ms, str(Path(__file__).resolve()), setup.security.env
        )
    except RuntimeError as exc:
        raise BenchError(f"{exc} ({setup.label})") from None
    return results, [(b[0] - a[0], b[1] - a[1]) for a, b in zip(cpu0, cpu1, strict=True)]


def run_setup(
    setup: Setup, n: int, size: int, exchange: str | None = None, subjects: int = 0
) -> dict[str, Any]:
    """4 senders put n messages on a fresh queue (or publish them to `exchange` with `subjects`
    subjects, into a fresh queue bound to it), then one receiver drains it (the workers and the
    percentiles are broker_bench's); one JSON-ready dict."""
    from bench_auth import QUEUE_PREFIX
    from broker_bench import bind_queue, pct

    setup.restart_profiles()
    queue = target = f"{QUEUE_PREFIX}ha.{time.monotonic_ns()}"
    label = "queue"
    if exchange is not None:
        try:
            bind_queue(setup.url, setup.security, exchange, queue)
        except RuntimeError as exc:
            raise BenchError(f"{exc} ({setup.label})") from None
        target = exchange
        label = f"exchange={exchange} subjects={subjects}"
    else:
        subjects = 0
    shares = [n // SENDERS + (1 if i < n % SENDERS else 0) for i in range(SENDERS)]
    sent, cpu_in = _run_workers(
        setup,
        [
            ["send", setup.url, target, str(k), str(WINDOW), str(size), str(subjects)]
            for k in shares
        ],
    )
    got, cpu_out = _run_workers(setup, [["recv", setup.url, queue, str(n), str(WINDOW)]])
    settled = sum(r["settled"] for r in sent)
    latencies = [x for r in sent for x in r["latencies"]]
    send_s = max(r["end"] for r in sent) - min(r["start"] for r in sent)
    recv_s = got[0]["end"] - got[0]["start"]
    total_in = sum(c[0] for c in cpu_in)
    total_out = sum(c[0] for c in cpu_out)
    main = sum(c[1] for c in cpu_in) + sum(c[1] for c in cpu_out)

    def per_1000(ms: float) -> float:
        return round(ms / n * 1000, 1)

    out: dict[str, Any] = {
        "setup": setup.label,
        "target": label,
        **setup.variant.info(),
        "senders": SENDERS,
        "window": WINDOW,
        "messages": n,
        "size": size,
        "send_msg_per_s": round(settled / send_s) if send_s > 0 else None,
        "p50_ms": round(pct(latencies, 0.50) * 1e3, 2),
        "p99_ms": round(pct(latencies, 0.99) * 1e3, 2),
        "receive_msg_per_s": round(got[0]["received"] / recv_s) if recv_s > 0 else None,
        "broker_cpu_ms_per_1000": per_1000(total_in + total_out),
        "broker_cpu_ms_per_1000_in": per_1000(total_in),
        "broker_cpu_ms_per_1000_out": per_1000(total_out),
        "main_thread_share": round(main / max(total_in + total_out, 1e-9), 2),
        "settled_not_accepted": sum(r["failed"] for r in sent),
        "received": got[0]["received"],
    }
    if len(setup.nodes) > 1:
        out["cpu_ms_per_1000_by_broker"] = {
            ("primary" if i == 0 else f"backup{i}"): {
                "total": per_1000(cpu_in[i][0] + cpu_out[i][0]),
                "in": per_1000(cpu_in[i][0]),
                "out": per_1000(cpu_out[i][0]),
                "main_thread": per_1000(cpu_in[i][1] + cpu_out[i][1]),
            }
            for i in range(len(setup.nodes))
        }
    if setup.states is not None:
        out["states_after"] = setup.states()  # a backup dropped under load spoils the figures
    return out


def summary(alone: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    rate_a = alone["send_msg_per_s"] or 0
    rate_c = cluster["send_msg_per_s"] or 0
    ratio = round(rate_c / rate_a, 3) if rate_a else None
    cpu = cluster["broker_cpu_ms_per_1000"]
    return {
        "summary": "cluster-3 vs standalone",
        "target": cluster["target"],
        "variant": cluster["variant"],
        "throughput_ratio": ratio,
        "cluster_send_msg_per_s": rate_c,
        "standalone_send_msg_per_s": rate_a,
        "cluster_cpu_ms_per_1000": cpu,
        "standalone_cpu_ms_per_1000": alone["broker_cpu_ms_per_1000"],
        "goals": {
            "ratio_ge_0.5": ratio is not None and ratio >= GOAL_RATIO,
            "cluster_ge_10000_msg_per_s": rate_c >= GOAL_RATE,
            "cluster_cpu_le_150_ms_per_1000": cpu <= GOAL_CPU_MS,
        },
    }


def print_profile(path: Path, who: str, top: int) -> None:
    import pstats

    for p, what in ((path, "event loop thread"), (Path(f"{path}.threads"), "other threads")):
        if not p.exists():
            print(f"ha_bench: no profile at {p} ({who} did not stop cleanly?)", file=sys.stderr)
            continue
        for key in ("tottime", "cumulative"):
            print(f"--- {who} profile ({what}), top {top} by {key} ---", file=sys.stderr)
            pstats.Stats(str(p), stream=sys.stderr).sort_stats(key).print_stats(top)


def print_profile_diff(primary: Path, alone: Path, n: int, top: int) -> None:
    """Where the primary's event loop spends more than the standalone broker's under the same
    load: per function, own time (tottime) and cumulative time, in us per message."""
    from ab import profile_diff

    profile_diff(primary, alone, n, top, "primary minus standalone (event loop thread)")


def run_round(
    base: Path,
    started: list[Node],
    sides: list[Variant],
    args: argparse.Namespace,
    round_: int,
    info: dict[str, Any],
) -> list[dict[str, Any]]:
    """The standalone brokers, then the clusters, one per variant, started together: each load
    runs on one variant's setup and at once on the other's (which goes first alternating, ab.py),
    so the runs an A/B compares are seconds apart. One JSON line per setup, variant and load,
    then one summary line per variant and load; returns the setups' lines."""
    targets: list[str | None] = [None] if args.exchange is None else [None, args.exchange]
    lines: list[dict[str, Any]] = []
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    turn = round_
    for kind in ("standalone", "cluster"):
        setups: dict[str, Setup] = {}
        for i, variant in enumerate(sides):
            start = start_standalone if kind == "standalone" else start_cluster
            setups[variant.name] = start(base / f"{kind}-{i}", started, variant)
        for x in targets:
            for variant in order(sides, turn):
                res = run_setup(setups[variant.name], args.messages, args.size, x, args.subjects)
                load = round(os.getloadavg()[0], 2)
                lines.append({**res, "round": round_, "loadavg_1m": load})
                results.setdefault((kind, variant.name), []).append(res)
                print(json.dumps(lines[-1]), flush=True)
            turn += 1
        for setup in setups.values():
            for node in setup.nodes:
                node.stop()
    for variant in sides:
        alone, cluster = results[("standalone", variant.name)], results[("cluster", variant.name)]
        for a, c in zip(alone, cluster, strict=True):
            print(json.dumps({**summary(a, c), "round": round_, "machine": info}), flush=True)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return lines


def run_profiled(
    base: Path, started: list[Node], variant: Variant, prof: Path, args: argparse.Namespace
) -> None:
    """The profiling pass (see the module's docstring), on the last load (the exchange's with
    --exchange): each run_setup restarts the event loop thread's profile."""
    exchange = args.exchange
    profiled = start_cluster(
        base / "profiled", started, variant, prof, args.profile_clock, args.profile_backup
    )
    res = run_setup(profiled, args.messages, args.size, exchange, args.subjects)
    for node in profiled.nodes:
        node.stop()
    print(
        json.dumps({**res, "setup": "cluster-3 primary under cProfile", "profiled": True}),
        flush=True,
    )
    print_profile(prof, f"primary ({variant.name})", args.top)
    if args.profile_backup:
        print_profile(Path(f"{prof}.backup1"), f"backup1 ({variant.name})", args.top)
    if args.profile_standalone:
        alone_prof = Path(f"{prof}.standalone")
        profiled = start_standalone(
            base / "profiled-standalone", started, variant, alone_prof, args.profile_clock
        )
        res = run_setup(profiled, args.messages, args.size, exchange, args.subjects)
        profiled.nodes[0].stop()
        print(
            json.dumps({**res, "setup": "standalone under cProfile", "profiled": True}),
            flush=True,
        )
        print_profile_diff(prof, alone_prof, args.messages, args.top)


def run(args: argparse.Namespace) -> None:
    from broker_bench import machine

    base = Path(tempfile.mkdtemp(prefix="qstore-ha-bench-", dir=args.dir))
    started: list[Node] = []
    try:
        info = machine()
        sides = variants(args.auth, args.baseline, base, exchange=args.exchange, ha=True)
        lines: list[dict[str, Any]] = []
        for r in range(args.rounds):
            lines += run_round(base / f"r{r}", started, sides, args, r, info)
        if len(sides) > 1:
            name = sides[0].name, sides[1].name
            for line in compare(lines, *name, lambda line: f"{line['setup']} {line['target']}"):
                print(json.dumps({**line, "machine": info}), flush=True)

        if args.profile is not None:
            profs = []
            for i, variant in enumerate(sides):
                prof = args.profile.resolve()
                if len(sides) > 1:
                    prof = Path(f"{prof}.{variant.name.split()[0]}")
                run_profiled(base / f"profiled-{i}", started, variant, prof, args)
                profs.append(prof)
            if len(sides) > 1:
                a, b = sides
                roots = (a.root, b.root)
                what = f"{b.name} minus {a.name}"
                profile_diff(profs[1], profs[0], args.messages, args.top, f"{what}: primary", roots)
                if args.profile_standalone:
                    alone = [Path(f"{p}.standalone") for p in profs]
                    profile_diff(
                        alone[1], alone[0], args.messages, args.top, f"{what}: standalone", roots
                    )
    finally:
        for node in started:
            with contextlib.suppress(Exception):
                node.stop()
        if args.keep:
            print(f"ha_bench: data and logs kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


# -- the profiling wrapper (this file run as `--profiled-broker OUT qstored-args...`) -----------


def profiled_broker(out: str, clock: str, argv: list[str]) -> None:
    """Run `broker.main.main(argv)` with one cProfile per thread. The broker stops on SIGTERM
    through its own handler (main raises SystemExit); then the event loop thread's stats go to
    OUT and those of every other thread (journal writer, anyio workers) merged to OUT.threads.
    SIGUSR1 restarts the event loop thread's profile (the other threads' cover their lifetime).

    clock `cpu` times each thread by its own CPU time (time.thread_time: a syscall per reading,
    so many-call functions look dearer than they are, but time spent descheduled on a busy
    machine and waiting in epoll/locks drops out); `wall` is cProfile's default perf_counter."""
    import cProfile
    import pstats
    import threading

    def new_profile() -> cProfile.Profile:
        return cProfile.Profile(time.thread_time) if clock == "cpu" else cProfile.Profile()

    profiles: list[cProfile.Profile] = []
    plain_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        p = new_profile()
        profiles.append(p)
        p.enable()
        try:
            plain_run(self)
        finally:
            p.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]

    import broker.main

    main_prof = new_profile()

    def restart(signum: int, frame: object) -> None:
        main_prof.disable()
        main_prof.clear()
        main_prof.enable()

    signal.signal(signal.SIGUSR1, restart)
    main_prof.enable()
    try:
        broker.main.main(argv)
    except SystemExit:
        pass
    finally:
        main_prof.disable()
        main_prof.dump_stats(out)
        merged: pstats.Stats | None = None
        for p in list(profiles):
            p.snapshot_stats()  # threads still running are read as they are, not disabled
            snap = _Snapshot(p.stats)  # type: ignore[attr-defined]
            if merged is None:
                merged = pstats.Stats(snap)  # type: ignore[arg-type]
            else:
                merged.add(snap)
        if merged is not None:
            merged.dump_stats(f"{out}.threads")


class _Snapshot:
    """What pstats.Stats accepts in place of a Profile whose stats are already taken."""

    def __init__(self, stats: dict[Any, Any]) -> None:
        self.stats = stats

    def create_stats(self) -> None:
        pass


def worker(kind: str, args: list[str]) -> None:
    """A sender or the receiver (broker_bench's): says `ready` once attached, starts on `go`,
    prints its result as one JSON line."""
    from broker_bench import worker_recv, worker_send

    if kind == "send":
        subjects = int(args[5]) if len(args) > 5 else 0
        res = worker_send(args[0], args[1], int(args[2]), int(args[3]), int(args[4]), subjects)
    else:
        res = worker_recv(args[0], args[1], int(args[2]), int(args[3]))
    print(json.dumps(res), flush=True)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--profiled-broker":
        profiled_broker(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000, help="messages per setup")
    ap.add_argument("--size", type=int, default=1024, help="message body bytes")
    ap.add_argument("--dir", default=None, help="where to put the brokers' data directories")
    ap.add_argument("--keep", action="store_true", help="keep data directories and logs")
    add_options(ap, "brokers")
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="also run a cluster whose primary is under cProfile; stats to FILE",
    )
    ap.add_argument(
        "--profile-clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cProfile timer: each thread's CPU time (default) or wall time",
    )
    ap.add_argument(
        "--profile-backup",
        action="store_true",
        help="with --profile: also profile backup1 (stats to FILE.backup1)",
    )
    ap.add_argument(
        "--profile-standalone",
        action="store_true",
        help="with --profile: also profile a standalone broker (FILE.standalone) and print "
        "where the primary spends more",
    )
    ap.add_argument("--top", type=int, default=30, help="functions to print with --profile")
    ap.add_argument(
        "--dedup-window",
        type=int,
        default=None,
        metavar="N",
        help="qstored --dedup-window N on every member, and a message-id on every message "
        "(0: the ids without windows, for an A/B; see broker_bench)",
    )
    args = ap.parse_args()
    if args.dedup_window is not None:
        from broker_bench import IDS_ENV

        DEDUP_EXTRA[:] = ["--dedup-window", str(args.dedup_window)]
        os.environ[IDS_ENV] = "1"  # the sender workers (broker_bench's) give each message an id
    if min(args.messages, args.size, args.rounds, args.subjects) <= 0:
        ap.error("--messages, --size, --rounds and --subjects must be positive")
    if args.baseline is not None:
        if args.auth == "both":
            ap.error("--baseline compares code: give --auth no or --auth yes, not both")
        if not (args.baseline / "broker" / "main.py").is_file():
            ap.error(f"--baseline {args.baseline}: not a qstore checkout (no broker/main.py)")
    try:
        from broker_bench import machine, pct, worker_recv, worker_send  # noqa: F401
    except Exception as exc:
        raise SystemExit(f"ha_bench: cannot import bench/broker_bench.py: {exc}") from None
    try:
        signal.signal(signal.SIGTERM, _interrupted)  # stop the brokers on SIGTERM too
        run(args)
    except BenchError as exc:
        raise SystemExit(f"ha_bench: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit("ha_bench: interrupted; brokers stopped") from None


if __name__ == "__main__":
    main()
