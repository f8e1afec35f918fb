"""`qstore-stat`: a running broker's queues, exchanges, connections and identity with statistics.

    qstore-stat [-b BROKER | --broker BROKER] [--ha-admin] [--timeout S] [LOGIN OPTIONS] [--json]
                [-q|-e|-c|-b]

BROKER and the login options are those of qstore-config (_login.py).

The seed's qpid-stat uses `-b` for its brokers view, and newer qpid tools use `-b BROKER` for the
address; this tool takes both: `-b` takes a value only when the next word is not an option, so
`qstore-stat -b 127.0.0.1:5672 -q` lists queues of that broker while `qstore-stat -b` (or
`-b -q ...`, or `-b` last) is the brokers view. `--broker BROKER` is the unambiguous form; `-b`
may appear twice (`qstore-stat -b HOST -b`). Without a view, the brokers view is shown.

Exit status: 0 success, 1 the broker refused or could not be reached, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from tools._login import parse_broker_url
from tools._mgmt import (
    DEFAULT_BROKER,
    ManagementClient,
    add_connection_options,
    connect,
    print_json,
    run_tool,
    table,
)

PROG = "qstore-stat"
VIEWS = ("queues", "exchanges", "connections", "brokers")
REPLICATE = "qpid.replicate"

HELP = f"""\
views (choose one; default -b):
  -q, --queues       queues: depth, bytes, enqueues, dequeues, consumers, flow control
                     (flow: Y while flow-stopped; stops: times it was), replication,
                     dedup window (dedup: its size, -: none; dups: messages not enqueued
                     as their message-id was in it)
  -e, --exchanges    exchanges: type, routed, dropped, bindings
  -c, --connections  connections: peer, container, links, admin
  -b, --brokers      brokers: name, state, node id, pid, data dir, journal, statistics (with
                     the memory limit and alarm, and how many queues are flow-stopped)

-b is both the broker address and the brokers view (as in the seed's qpid-stat):
  qstore-stat -b 127.0.0.1:5672 -q    queues of the broker at 127.0.0.1:5672
  qstore-stat -b                      brokers view of the default broker ({DEFAULT_BROKER})
  qstore-stat -b HOST -b              brokers view of HOST
  qstore-stat --broker HOST -q        the unambiguous form of the address
-b takes a value only when the next word is not an option.

exit status: 0 success, 1 the broker refused or could not be reached, 2 bad usage
"""

# flow: Y while flow-stopped (qpidd's flowStopped); stops: times it was (flowStoppedCount)
QUEUE_COLUMNS = (
    "queue",
    "dur",
    "depth",
    "bytes",
    "enqueues",
    "dequeues",
    "cons",
    "flow",
    "stops",
    "replication",
    "dedup",
    "dups",
)
_BROKERS_VIEW = object()  # what `-b` without a value stands for


class _BrokerOrView(argparse.Action):
    """`-b [BROKER]`: with a value it is the broker address, without one the brokers view."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if values is _BROKERS_VIEW:
            _add_view(namespace, "brokers")
        else:
            namespace.broker = parse_broker_value(parser, values)


class _View(argparse.Action):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        _add_view(namespace, self.const)


def _add_view(namespace: argparse.Namespace, view: str) -> None:
    views = list(getattr(namespace, "views", None) or [])
    if view not in views:
        views.append(view)
    namespace.views = views


def parse_broker_value(parser: argparse.ArgumentParser, text: str) -> Any:
    try:
        return parse_broker_url(text)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [-b BROKER | --broker BROKER] [--ha-admin] [--timeout S] [--json] "
        "[--sasl-mechanism MECH] [--password-file FILE] [--ssl-ca-file PEM] "
        "[--ssl-cert-file PEM] [--ssl-key-file PEM] [-q | -e | -c | -b]",
        description="Show a qstore broker's queues, exchanges, connections or identity.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-b",
        dest="broker",
        nargs="?",
        const=_BROKERS_VIEW,
        action=_BrokerOrView,
        default=argparse.SUPPRESS,
        metavar="BROKER",
        help="the broker [USER[/PASS]@][ssl:]HOST[:PORT]; without a value: the brokers view",
    )
    add_connection_options(parser, short_b=False)  # -b is the broker or the brokers view
    parser.add_argument("--json", action="store_true", help="print JSON")
    for short, view in (("-q", "queues"), ("-e", "exchanges"), ("-c", "connections")):
        parser.add_argument(short, f"--{view}", action=_View, const=view, help=f"show {view}")
    parser.add_argument("--brokers", action=_View, const="brokers", help="show brokers")
    return parser


def queue_rows(client: ManagementClient, default_replication: str) -> list[dict[str, Any]]:
    out = []
    for q in client.call("QUERY", "queue") or []:
        if q["name"] == client.reply_to:  # this tool's own reply queue
            continue
        args = q.get("arguments") or {}
        out.append(
            {
                "name": q["name"],
                "durable": bool(q.get("durable")),
                "depth": q.get("depth", 0),
                "bytes": q.get("bytes", 0),
                "enqueues": q.get("enqueues", 0),
                "dequeues": q.get("dequeues", 0),
                "consumers": q.get("consumers", 0),
                "acquired": q.get("acquired", 0),
                "flowStopped": bool(q.get("flowStopped")),
                "flowStoppedCount": q.get("flowStoppedCount", 0),
                "replication": str(args.get(REPLICATE) or default_replication),
                "dedupWindow": q.get("dedupWindow", 0),
                "duplicatesDropped": q.get("duplicatesDropped", 0),
            }
        )
    return sorted(out, key=lambda r: r["name"])


def exchange_rows(client: ManagementClient) -> list[dict[str, Any]]:
    out = [
        {
            "name": x["name"],
            "type": x.get("type", ""),
            "durable": bool(x.get("durable")),
            "routed": x.get("routed", 0),
            "dropped": x.get("dropped", 0),
            "bindings": x.get("bindings", 0),
        }
        for x in client.call("QUERY", "exchange") or []
    ]
    return sorted(out, key=lambda r: r["name"])


def connection_rows(client: ManagementClient) -> list[dict[str, Any]]:
    out = [
        {
            "id": c.get("id"),
            "peer": c.get("peer", ""),
            "container": c.get("container", ""),
            "links": c.get("links", 0),
            "admin": bool(c.get("admin")),
        }
        for c in client.call("QUERY", "connection") or []
    ]
    return sorted(out, key=lambda r: (str(type(r["id"])), r["id"]))


def broker_row(info: dict[str, Any], address: str) -> dict[str, Any]:
    return {
        "name": info.get("name", ""),
        "address": address,
        "state": info.get("state", ""),
        "node-id": info.get("node-id", ""),
        "pid": info.get("pid"),
        "data-dir": info.get("data-dir", ""),
        "version": info.get("version", ""),
        "statistics": dict(info.get("statistics") or {}),
        "journal": dict(info.get("journal") or {}),
    }


def journal_line(journal: dict[str, Any]) -> str:
    """`full (LMDB map of 1.0 MiB reached): 1.0 MiB used of 1.0 MiB map, 64 KiB reserve`."""
    if not journal:
        return "(not reported)"
    state = str(journal.get("state", "?"))
    if journal.get("reason"):
        state += f" ({journal['reason']})"
    reserve, held = journal.get("reserve", 0), journal.get("reserve-held", 0)
    line = (
        f"{state}: {_size(journal.get('used', 0))} used of {_size(journal.get('map-size', 0))}"
        f" map, {_size(reserve)} reserve{'' if held >= reserve else f' ({_size(held)} held)'}, "
        f"{_size(journal.get('disk-free', 0))} disk free"
    )
    if journal.get("unjournaled"):
        line += f"; {journal['unjournaled']} dequeues not journaled (redelivered after a restart)"
    return line


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} B"


def _yes(flag: bool) -> str:
    return "Y" if flag else ""


def show(ns: argparse.Namespace, view: str) -> int:
    with connect(ns) as client:
        info = dict(client.call("READ", "broker") or {})
        if view == "brokers":
            rows: list[dict[str, Any]] = [broker_row(info, client.where)]
        elif view == "queues":
            rows = queue_rows(client, str(info.get("ha-replicate") or "none"))
        elif view == "exchanges":
            rows = exchange_rows(client)
        else:
            rows = connection_rows(client)
    if ns.json:
        print_json(rows)
    else:
        print(render(view, rows))
    return 0


def render(view: str, rows: list[dict[str, Any]]) -> str:
    if view == "queues":
        return "Queues\n" + table(
            QUEUE_COLUMNS,
            [
                (
                    r["name"],
                    _yes(r["durable"]),
                    r["depth"],
                    r["bytes"],
                    r["enqueues"],
                    r["dequeues"],
                    r["consumers"],
                    _yes(r["flowStopped"]),
                    r["flowStoppedCount"],
                    r["replication"],
                    r["dedupWindow"] or "-",
                    r["duplicatesDropped"],
                )
                for r in rows
            ],
        )
    if view == "exchanges":
        return "Exchanges\n" + table(
            ("exchange", "type", "dur", "routed", "dropped", "bindings"),
            [
                (
                    r["name"] or "(default)",
                    r["type"],
                    _yes(r["durable"]),
                    r["routed"],
                    r["dropped"],
                    r["bindings"],
                )
                for r in rows
            ],
        )
    if view == "connections":
        return "Connections\n" + table(
            ("id", "peer", "container", "links", "admin"),
            [(r["id"], r["peer"], r["container"], r["links"], _yes(r["admin"])) for r in rows],
        )
    out = [
        "Brokers\n"
        + table(
            ("name", "state", "node id", "pid", "data dir"),
            [(r["name"], r["state"], r["node-id"], r["pid"], r["data-dir"]) for r in rows],
        )
    ]
    for r in rows:
        stats = r["statistics"]
        out.append(f"\nJournal: {journal_line(r['journal'])}")
        out.append(f"\nStatistics of {r['name'] or r['address']}")
        out.append(table(("statistic", "value"), sorted(stats.items())))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    ns = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    views = list(getattr(ns, "views", None) or ["brokers"])
    if len(views) > 1:
        parser.error("choose one view: -q, -e, -c or -b (got " + ", ".join(views) + ")")
    run_tool(PROG, lambda: show(ns, views[0]))


if __name__ == "__main__":
    main()
