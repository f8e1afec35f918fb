"""Journal benchmark: group-commit throughput and latency, the raw LMDB reference, and replay time.

Prints one JSON line per case. Appenders are asyncio tasks (the broker's shape); each appends 1 KiB
Enqueue records one at a time and waits until its record is durable (sync on, always).

Wall-clock figures follow the disk's fsync rate and whatever else the machine runs; the CPU time
per record of the event loop's thread and of the journal's writer thread (Linux) does not, so it
is printed too, to compare changes on a noisy machine.

    .venv/bin/python bench/journal_bench.py [--seconds 3] [--replay 1000000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import lmdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import machine as machine_info

from qstore.journal import Enqueue, Journal, QueueDeclare
from qstore.journal.records import prepare, seal

BODY = os.urandom(1024)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each append case")
    ap.add_argument(
        "--replay", type=int, default=1_000_000, help="live records for replay (0: skip)"
    )
    ap.add_argument("--dir", default=None, help="where to put the temporary journals")
    ap.add_argument("--appenders", default="1,10,100,1000")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="qstore-bench-", dir=args.dir))
    info = machine()
    try:
        raw = raw_reference(base / "raw", args.seconds)
        print(json.dumps({"case": "raw-lmdb", **raw, "machine": info}), flush=True)
        for n in (int(x) for x in args.appenders.split(",")):
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
        if args.replay:
            res = replay_case(base / "replay", args.replay)
            print(json.dumps({"case": "replay", **res, "machine": info}), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
