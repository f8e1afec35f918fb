"""`qstore-journal summary`: what a journal holds, at a glance.

One pass over the records counts them by type and replays them (without bodies) into the live
queues, exchanges and bindings a broker would recover from this journal.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TextIO

from qstore.journal import JournalReader, JournalState, RecordType

from ._inspect_common import Progress, damage_is_a_finding, dumps, table


def summarize(reader: JournalReader, name: str) -> dict[str, Any]:
    node, fmt = reader.node_id, reader.format_version
    st = JournalState(keep_bodies=False)
    counts: Counter[RecordType] = Counter()
    first = last = None
    with Progress(reader.count(), "reading") as progress, damage_is_a_finding(name):
        for e in reader.entries(progress=progress):
            counts[e.type] += 1
            first = e.seq if first is None else first
            last = e.seq
            st.apply(e)
    return {
        "data_dir": name,
        "node_id": str(node),
        "format_version": fmt,
        "records": sum(counts.values()),
        "seq_range": None if first is None else [first, last],
        "position": list(st.position),
        "size_on_disk": reader.size_on_disk(),
        "epochs": [
            {"number": ep.number, "node": str(ep.node), "origin": ep.origin, "seq": ep.seq}
            for ep in st.epochs
        ],
        "records_by_type": {t.label: counts[t] for t in RecordType if counts[t]},
        "queues": [
            {
                "name": q.name,
                "uuid": str(q.uuid),
                "depth": q.depth,
                "bytes": q.bytes,
                "arguments": q.arguments,
            }
            for q in st.queues.values()
        ],
        "exchanges": [
            {"name": x.name, "uuid": str(x.uuid), "type": x.type, "arguments": x.arguments}
            for x in st.exchanges.values()
        ],
        "bindings": [
            {"exchange": b.exchange, "queue": b.queue, "key": b.key, "arguments": b.arguments}
            for b in st.bindings.values()
        ],
    }


def print_summary(s: dict[str, Any], out: TextIO) -> None:
    rng = s["seq_range"]
    seqs = f" (seq {rng[0]}..{rng[1]})" if rng else ""
    epoch, origin = s["position"]
    out.write(
        f"journal:   {s['data_dir']}\nnode id:   {s['node_id']}\nformat:    {s['format_version']}\n"
        f"records:   {s['records']}{seqs}\nposition:  (epoch {epoch}, seq {origin})\n"
        f"size:      {s['size_on_disk']} bytes on disk\n"
    )
    section(
        out,
        "epochs",
        ["EPOCH", "NODE", "FROM SEQ"],
        [[str(e["number"]), e["node"], str(e["origin"])] for e in s["epochs"]],
    )
    section(
        out,
        "records by type",
        ["TYPE", "COUNT"],
        [[t, str(n)] for t, n in s["records_by_type"].items()],
    )
    section(
        out,
        "queues (after replay)",
        ["NAME", "DEPTH", "BYTES", "ARGUMENTS"],
        [
            [q["name"], str(q["depth"]), str(q["bytes"]), args_text(q["arguments"])]
            for q in s["queues"]
        ],
    )
    section(
        out,
        "exchanges",
        ["NAME", "TYPE", "ARGUMENTS"],
        [[x["name"], x["type"], args_text(x["arguments"])] for x in s["exchanges"]],
    )
    section(
        out,
        "bindings",
        ["EXCHANGE", "QUEUE", "KEY", "ARGUMENTS"],
        [
            [b["exchange"], b["queue"], b["key"] or '""', args_text(b["arguments"])]
            for b in s["bindings"]
        ],
    )


def section(out: TextIO, title: str, header: list[str], rows: list[list[str]]) -> None:
    out.write(f"{title}:\n")
    if not rows:
        out.write("  (none)\n")
    for line in table([header, *rows]) if rows else []:
        out.write(f"  {line}\n")


def args_text(arguments: dict[str, Any]) -> str:
    return dumps(arguments) if arguments else "-"
