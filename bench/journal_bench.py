"""Journal benchmark: group-commit throughput and latency, the raw LMDB reference, replay time, and
the forensic tool's scans (`qstore-journal verify`, `find --message-id`, `salvage`).

Prints one JSON line per case. Appenders are asyncio tasks (the broker's shape); each appends 1 KiB
Enqueue records one at a time and waits until its record is durable (sync on, always).

Wall-clock figures follow the disk's fsync rate and whatever else the machine runs; the CPU time
per record of the event loop's thread and of the journal's writer thread (Linux) does not, so it
is printed too, to compare changes on a noisy machine.

    .venv/bin/python bench/journal_bench.py [--seconds 3] [--replay 1000000] [--dir /tmp]
        [--inspect-mb 1024] [--cases raw,append,replay,inspect]

The tool's cases run `qstore-journal` as a child process over a journal of `--inspect-mb` MB of
1 KiB messages (proton-encoded, as a broker journals them), warm in the page cache as after the
fill, and report MB/s of journal (its data.mdb) and the child's peak memory (max RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import lmdb
from proton import Message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import machine as machine_info

from qstore.journal import Enqueue, Journal, QueueDeclare
from qstore.journal.records import prepare, seal

BODY = os.urandom(1024)
ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, object]:
    return {**machine_info(), "lmdb": lmdb.version()}


def thread_cpu(native_id: int) -> float | None:
    """CPU seconds (user + system) of one thread of this process; None where /proc has none."""
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else 0.0


async def run_appenders(journal: Journal, n: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    counter = iter(range(1 << 62))

    async def appender() -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await journal.append_async(Enqueue("bench", next(counter), BODY))
            latencies.append(time.perf_counter() - t)

    writer = journal.writer._thread.native_id or 0
    commits0 = journal.commits
    loop_cpu0, writer_cpu0 = time.thread_time(), thread_cpu(writer)
    t0 = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(n)))
    elapsed = time.perf_counter() - t0
    loop_cpu, writer_cpu = time.thread_time() - loop_cpu0, thread_cpu(writer)
    done = len(latencies)
    cpu = {"loop": round(loop_cpu / done * 1e6, 2)}
    if writer_cpu is not None and writer_cpu0 is not None:
        cpu["writer"] = round((writer_cpu - writer_cpu0) / done * 1e6, 2)
    return {
        "records_per_s": round(done / elapsed),
        "mb_per_s": round(done * len(BODY) / elapsed / 1e6, 1),
        "p50_ms": round(pct(latencies, 0.50) * 1e3, 3),
        "p99_ms": round(pct(latencies, 0.99) * 1e3, 3),
        "commits_per_s": round((journal.commits - commits0) / elapsed),
        "records": done,
        "cpu_us_per_record": cpu,
    }


def raw_reference(path: Path, seconds: float, per_txn: int = 1000) -> dict[str, float]:
    """Plain py-lmdb: the same sealed records, `per_txn` per fsync'd transaction."""
    env = lmdb.open(str(path), map_size=16 << 30, sync=True, metasync=True, max_dbs=2)
    db = env.open_db(b"records")
    p = prepare(Enqueue("bench", 0, BODY))
    seq = 1
    t0 = time.perf_counter()
    stop = t0 + seconds
    while time.perf_counter() < stop:
        with env.begin(write=True, db=db) as txn:
            for _ in range(per_txn):
                key, value = seal(seq, p, 0, seq)
                txn.put(key, value, append=True)
                seq += 1
    elapsed = time.perf_counter() - t0
    env.close()
    return {"records_per_s": round((seq - 1) / elapsed), "per_txn": per_txn}


def replay_case(path: Path, n: int) -> dict[str, float]:
    with Journal(path) as j:
        j.append(QueueDeclare("bench", uuid.uuid4()))
        batch = 5000
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            j.append_many([Enqueue("bench", i, BODY) for i in range(start, min(n, start + batch))])
        fill = time.perf_counter() - t0
    # The broker's start: opening the journal replays it once without bodies (bodies are read
    # from the journal when a message is delivered), then hands that state over.
    t0, c0 = time.perf_counter(), time.process_time()
    with Journal(path) as j:
        opened, open_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert j.state.queues["bench"].depth == n
        t1, c1 = time.perf_counter(), time.process_time()
        state = j.replay()  # everything in memory, bodies included: what forensics tools do
        replay, replay_cpu = time.perf_counter() - t1, time.process_time() - c1
    assert state.queues["bench"].depth == n
    return {
        "live_records": n,
        "open_replay_s": round(opened, 2),
        "replay_with_bodies_s": round(replay, 2),
        "open_replay_cpu_s": round(open_cpu, 2),
        "replay_with_bodies_cpu_s": round(replay_cpu, 2),
        "fill_s": round(fill, 2),
    }


INSPECT_BODY = "x" * 900  # with the message's other fields: about 1 KiB per message


def message(i: int) -> bytes:
    m = Message(
        id=f"order-{i}",
        subject="order.created",
        durable=True,
        properties={"customer": f"c{i % 97}"},
        body=INSPECT_BODY,
    )
    return bytes(m.encode())


def inspect_journal(path: Path, mb: int) -> tuple[int, int]:
    """Fill a journal with `mb` MB of 1 KiB messages; return (records, data.mdb bytes).

    The file is larger than the messages: each record's header and queue name, and LMDB's
    pages (three 1.1 KiB records fill a 4 KiB page)."""
    n = mb * 1_000_000 // 1024
    with Journal(path) as j:
        j.append(QueueDeclare("orders", uuid.uuid4()))
        batch = 5000
        for start in range(0, n, batch):
            j.append_many(
                [Enqueue("orders", i, message(i)) for i in range(start, min(n, start + batch))]
            )
    return n + 1, (path / "journal" / "data.mdb").stat().st_size


def anon_kib(pid: int) -> int:
    """The process's anonymous resident memory (heap, not the journal's mapped file), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tool_run(*args: str) -> dict[str, float]:
    """Run qstore-journal; its wall time, its peak RSS (wait4: includes the pages of the journal
    it mapped and read, which the kernel may drop at will) and its peak anonymous memory
    (sampled every 10 ms: what the scan itself holds)."""
    script = Path(sys.executable).parent / "qstore-journal"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "tools.journal_inspect"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT
    )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], anon_kib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    done.set()
    sampler.join()
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise RuntimeError(f"qstore-journal {' '.join(args)} exited {code}: {err}")
    return {
        "seconds": elapsed,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "peak_anon_mib": peak[0] / 1024,
        "exit": code,
    }


def inspect_cases(base: Path, mb: int) -> list[dict[str, object]]:
    src = base / "inspect"
    t0 = time.perf_counter()
    records, size = inspect_journal(src, mb)
    fill = time.perf_counter() - t0
    needle = f"order-{records // 2}"
    args_mb = mb
    out = []
    for case, args in (
        ("verify", ["verify", str(src)]),
        ("find-message-id", ["find", str(src), "--message-id", needle]),
        ("salvage", ["salvage", str(src), str(base / "salvaged")]),
    ):
        r = tool_run(*args)
        out.append(
            {
                "case": f"journal-tool-{case}",
                "journal_mb": round(size / 1e6, 1),  # data.mdb, what MB/s is of
                "messages_mb": args_mb,
                "records": records,
                "mb_per_s": round(size / 1e6 / r["seconds"], 1),
                "records_per_s": round(records / r["seconds"]),
                "seconds": round(r["seconds"], 2),
                "peak_anon_mib": round(r["peak_anon_mib"], 1),
                "peak_rss_mib": round(r["peak_rss_mib"], 1),
                "fill_s": round(fill, 1),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each append case")
    ap.add_argument(
        "--replay", type=int, default=1_000_000, help="live records for replay (0: skip)"
    )
    ap.add_argument("--dir", default=None, help="where to put the temporary journals")
    ap.add_argument("--appenders", default="1,10,100,1000")
    ap.add_argument(
        "--inspect-mb", type=int, default=1024, help="journal size for the tool's cases (MB)"
    )
    ap.add_argument(
        "--cases", default="raw,append,replay,inspect", help="which cases (comma-separated)"
    )
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    base = Path(tempfile.mkdtemp(prefix="qstore-bench-", dir=args.dir))
    info = machine()
    try:
        raw = {"records_per_s": 0}
        if cases & {"raw", "append"}:
            raw = raw_reference(base / "raw", args.seconds)
            print(json.dumps({"case": "raw-lmdb", **raw, "machine": info}), flush=True)
        for n in (int(x) for x in args.appenders.split(",") if "append" in cases):
            d = base / f"j{n}"
            with Journal(d) as j:
                j.append(QueueDeclare("bench", uuid.uuid4()))
                res = asyncio.run(run_appenders(j, n, args.seconds))
            shutil.rmtree(d)
            res["ratio_to_raw"] = round(res["records_per_s"] / raw["records_per_s"], 3)
            print(
                json.dumps({"case": f"append-{n}", "appenders": n, **res, "machine": info}),
                flush=True,
            )
        if args.replay and "replay" in cases:
            res = replay_case(base / "replay", args.replay)
            print(json.dumps({"case": "replay", **res, "machine": info}), flush=True)
        if args.inspect_mb and "inspect" in cases:
            for res in inspect_cases(base, args.inspect_mb):
                print(json.dumps({**res, "machine": info}), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
