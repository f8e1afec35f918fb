"""`qstore-config`: declare, delete, bind and list queues and exchanges on a running broker.

The seed's qpid-config, over the broker's `$management` node:

    qstore-config [-b BROKER] [--ha-admin] [--timeout S] [LOGIN OPTIONS] VERB ...
      add queue NAME [--durable] [--replicate all|configuration|none] [--max-queue-size N]
                     [--max-queue-count N] [--limit-policy ring|reject] [--lvq-key K]
                     [--priorities N] [--flow-stop-size N] [--flow-stop-count N]
                     [--flow-resume-size N] [--flow-resume-count N] [--dedup-window N]
                     [--argument K=V ...]
      del queue NAME [--force]
      add exchange TYPE NAME [--durable] [--replicate L] [--argument K=V ...]
      del exchange NAME
      bind EXCHANGE QUEUE [KEY] [all|any K=V ...] [--argument K=V ...]
      unbind EXCHANGE QUEUE [KEY]
      queues | exchanges | bindings [--json]

BROKER is `[USER[/PASS]@][ssl:]HOST[:PORT]`; the login options (`--sasl-mechanism`,
`--password-file`, `--ssl-ca-file`, `--ssl-cert-file`, `--ssl-key-file`, and QSTORE_USER /
QSTORE_PASSWORD) are described in _login.py.

Options may stand before or after the verb. The queue options become the queue's arguments
(`qpid.max_size`, `qpid.max_count`, `qpid.policy_type`, `qpid.last_value_queue_key`,
`qpid.priorities`, `qpid.replicate`, `qstore.dedup-window`), so `queues` shows them back in the
same option form. The broker validates everything; its refusal (4xx) is printed as one line with
exit status 1. A usage error exits 2; success 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from tools._mgmt import (
    ManagementClient,
    add_connection_options,
    connect,
    print_json,
    run_tool,
    table,
)

PROG = "qstore-config"
REPLICATE_LEVELS = ("all", "configuration", "none")

# Queue options that are stored as arguments: (option dest, argument key, option spelling).
QUEUE_ARGUMENTS = (
    ("max_queue_size", "qpid.max_size", "--max-queue-size"),
    ("max_queue_count", "qpid.max_count", "--max-queue-count"),
    ("limit_policy", "qpid.policy_type", "--limit-policy"),
    ("lvq_key", "qpid.last_value_queue_key", "--lvq-key"),
    ("priorities", "qpid.priorities", "--priorities"),
    ("flow_stop_size", "qpid.flow_stop_size", "--flow-stop-size"),
    ("flow_stop_count", "qpid.flow_stop_count", "--flow-stop-count"),
    ("flow_resume_size", "qpid.flow_resume_size", "--flow-resume-size"),
    ("flow_resume_count", "qpid.flow_resume_count", "--flow-resume-count"),
    ("replicate", "qpid.replicate", "--replicate"),
    ("dedup_window", "qstore.dedup-window", "--dedup-window"),
)


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return n


def convert_value(text: str) -> Any:
    """An `--argument` value: integers and true/false become their types, the rest stays text
    (the broker also accepts numbers as text, but a typed value shows as such in listings)."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        return text


def _key_value(text: str) -> tuple[str, Any]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return key, convert_value(value)


def _common(parser: argparse.ArgumentParser, *, listing: bool = False) -> None:
    add_connection_options(parser)
    if listing:
        parser.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )


def _arguments_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--argument",
        dest="arguments",
        action="append",
        type=_key_value,
        default=[],
        metavar="K=V",
        help=f"extra {what} argument (repeatable); integers and true/false are converted",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Declare, delete, bind and list queues and exchanges on a qstore broker.",
        epilog="Options may stand before or after the verb. Exit status: 0 success, 1 the broker "
        "refused or could not be reached, 2 bad usage.",
    )
    _common(parser, listing=True)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    add = verbs.add_parser("add", help="add a queue or an exchange")
    _common(add)
    add_kinds = add.add_subparsers(dest="kind", metavar="queue|exchange", required=True)
    aq = add_kinds.add_parser("queue", help="add a queue: add queue NAME [options]")
    _common(aq)
    aq.add_argument("name", metavar="NAME")
    aq.add_argument("--durable", action="store_true", help="the queue survives a restart")
    aq.add_argument(
        "--replicate", choices=REPLICATE_LEVELS, help="replication level (qpid.replicate)"
    )
    aq.add_argument("--max-queue-size", type=_count, metavar="N", help="byte limit (qpid.max_size)")
    aq.add_argument(
        "--max-queue-count", type=_count, metavar="N", help="message limit (qpid.max_count)"
    )
    aq.add_argument(
        "--limit-policy",
        choices=("ring", "reject"),
        help="at the limit: drop the oldest (ring) or refuse new ones (reject; qpid.policy_type)",
    )
    aq.add_argument(
        "--lvq-key", metavar="K", help="last-value queue key (qpid.last_value_queue_key)"
    )
    aq.add_argument(
        "--priorities", type=_count, metavar="N", help="priority levels (qpid.priorities)"
    )
    flow = (
        ("--flow-stop-size", "producers are held above N bytes (qpid.flow_stop_size; default "
         "80%% of the size limit; 0: not by size)"),
        ("--flow-stop-count", "producers are held above N messages (qpid.flow_stop_count; "
         "default 80%% of the count limit; 0: not by count)"),
        ("--flow-resume-size", "held producers go on below N bytes (qpid.flow_resume_size; "
         "default 70%% of the size limit)"),
        ("--flow-resume-count", "held producers go on below N messages "
         "(qpid.flow_resume_count; default 70%% of the count limit)"),
    )  # fmt: skip
    for option, text in flow:
        aq.add_argument(option, type=_count, metavar="N", help=text)
    aq.add_argument(
        "--dedup-window",
        type=_count,
        metavar="N",
        help="keep the message-ids of the last N messages: a message whose id is among them "
        "(a producer's resend) is accepted and not enqueued again (qstore.dedup-window; 0: off)",
    )
    _arguments_option(aq, "queue")

    ax = add_kinds.add_parser("exchange", help="add an exchange: add exchange TYPE NAME [options]")
    _common(ax)
    ax.add_argument("type", metavar="TYPE", help="direct, topic, fanout or headers")
    ax.add_argument("name", metavar="NAME")
    ax.add_argument("--durable", action="store_true", help="the exchange survives a restart")
    ax.add_argument(
        "--replicate", choices=REPLICATE_LEVELS, help="replication level (qpid.replicate)"
    )
    _arguments_option(ax, "exchange")

    delete = verbs.add_parser("del", help="delete a queue or an exchange")
    _common(delete)
    del_kinds = delete.add_subparsers(dest="kind", metavar="queue|exchange", required=True)
    dq = del_kinds.add_parser("queue", help="delete a queue: del queue NAME [--force]")
    _common(dq)
    dq.add_argument("name", metavar="NAME")
    dq.add_argument(
        "--force",
        "--force-if-not-empty",
        action="store_true",
        help="delete the queue even if it holds messages (they are lost)",
    )
    dx = del_kinds.add_parser("exchange", help="delete an exchange: del exchange NAME")
    _common(dx)
    dx.add_argument("name", metavar="NAME")

    bind = verbs.add_parser(
        "bind",
        help="bind a queue to an exchange",
        description="Bind QUEUE to EXCHANGE with KEY. For a headers exchange give the match "
        "either as --argument x-match=all --argument K=V ... or, as the seed does, after the key: "
        "bind EXCHANGE QUEUE KEY all|any K=V ...",
    )
    _common(bind)
    bind.add_argument("exchange", metavar="EXCHANGE")
    bind.add_argument("queue", metavar="QUEUE")
    bind.add_argument("key", metavar="KEY", nargs="?", default="")
    bind.add_argument("match", metavar="all|any K=V", nargs="*", default=[])
    _arguments_option(bind, "binding")

    unbind = verbs.add_parser("unbind", help="remove a binding")
    _common(unbind)
    unbind.add_argument("exchange", metavar="EXCHANGE")
    unbind.add_argument("queue", metavar="QUEUE")
    unbind.add_argument("key", metavar="KEY", nargs="?", default="")

    reload_acl = verbs.add_parser(
        "reload-acl", help="re-read the broker's ACL file (a bad file keeps the old rules)"
    )
    _common(reload_acl)

    for verb, what in (("queues", "queues"), ("exchanges", "exchanges"), ("bindings", "bindings")):
        p = verbs.add_parser(verb, help=f"list {what}")
        _common(p, listing=True)
    return parser


def _headers_match(parser: argparse.ArgumentParser, words: list[str]) -> dict[str, Any]:
    """The seed's `bind X Q KEY all|any k1=v1 k2=v2` form as binding arguments."""
    if not words:
        return {}
    mode, *pairs = words
    if mode not in ("all", "any"):
        parser.error(f"after the binding key expected all|any then K=V pairs, got {mode!r}")
    out: dict[str, Any] = {"x-match": mode}
    for pair in pairs:
        try:
            key, value = _key_value(pair)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"headers match: {exc}")
        out[key] = value
    return out


def queue_arguments(ns: argparse.Namespace) -> dict[str, Any]:
    args: dict[str, Any] = dict(getattr(ns, "arguments", []) or [])
    for dest, key, _ in QUEUE_ARGUMENTS:
        value = getattr(ns, dest, None)
        if value is not None:
            args[key] = value
    return args


def queue_attributes(q: dict[str, Any]) -> str:
    """A queue's settings written back as the options that make it (the seed's Attributes)."""
    args = dict(q.get("arguments") or {})
    out = ["--durable"] if q.get("durable") else []
    if q.get("auto-delete"):
        out.append("auto-delete")
    if q.get("exclusive"):
        out.append("exclusive")
    for _, key, option in QUEUE_ARGUMENTS:
        if key in args:
            out.append(f"{option}={args.pop(key)}")
    out += [f"--argument {k}={_text(v)}" for k, v in sorted(args.items())]
    return " ".join(out)


def exchange_attributes(x: dict[str, Any]) -> str:
    args = dict(x.get("arguments") or {})
    out = ["--durable"] if x.get("durable") else []
    if "qpid.replicate" in args:
        out.append(f"--replicate={args.pop('qpid.replicate')}")
    out += [f"--argument {k}={_text(v)}" for k, v in sorted(args.items())]
    return " ".join(out)


def _text(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _sorted(items: Any) -> list[dict[str, Any]]:
    return sorted((dict(i) for i in items or []), key=lambda d: str(d.get("name", "")))


def list_queues(client: ManagementClient, as_json: bool) -> None:
    queues = [q for q in _sorted(client.call("QUERY", "queue")) if q["name"] != client.reply_to]
    if as_json:
        print_json(queues)
        return
    print(table(("Queue Name", "Attributes"), [(q["name"], queue_attributes(q)) for q in queues]))


def list_exchanges(client: ManagementClient, as_json: bool) -> None:
    exchanges = _sorted(client.call("QUERY", "exchange"))
    if as_json:
        print_json(exchanges)
        return
    rows = [(x.get("type", ""), x["name"], exchange_attributes(x)) for x in exchanges]
    print(table(("Type", "Exchange Name", "Attributes"), rows))


def list_bindings(client: ManagementClient, as_json: bool) -> None:
    bindings = sorted(
        (dict(b) for b in client.call("QUERY", "binding") or []),
        key=lambda b: (b["exchange"], b["queue"], b["key"]),
    )
    if as_json:
        print_json(bindings)
        return
    types = {x["name"]: x.get("type", "") for x in client.call("QUERY", "exchange") or []}
    current = None
    for b in bindings:
        if b["exchange"] != current:
            current = b["exchange"]
            print(f"Exchange '{current}' ({types.get(current, '?')})")
        args = b.get("arguments") or {}
        extra = " {" + ", ".join(f"{k}={_text(v)}" for k, v in args.items()) + "}" if args else ""
        print(f"    bind [{b['key']}] => {b['queue']}{extra}")


def plan(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[str, str, Any, Any]:
    """The management request a change verb makes: (operation, type, name, body)."""
    verb, kind = ns.verb, getattr(ns, "kind", None)
    if verb == "add" and kind == "queue":
        return "CREATE", "queue", ns.name, {"durable": ns.durable, "arguments": queue_arguments(ns)}
    if verb == "add":
        args = dict(ns.arguments)
        if ns.replicate is not None:
            args["qpid.replicate"] = ns.replicate
        return (
            "CREATE",
            "exchange",
            ns.name,
            {"type": ns.type, "durable": ns.durable, "arguments": args},
        )
    if verb == "del" and kind == "queue":
        return "DELETE", "queue", ns.name, {"force": ns.force}
    if verb == "del":
        return "DELETE", "exchange", ns.name, {}
    if verb == "reload-acl":
        return "RELOAD", "acl", None, {}
    if verb == "bind":
        args = {**_headers_match(parser, ns.match), **dict(ns.arguments)}
        return (
            "CREATE",
            "binding",
            None,
            {"exchange": ns.exchange, "queue": ns.queue, "key": ns.key, "arguments": args},
        )
    return "DELETE", "binding", None, {"exchange": ns.exchange, "queue": ns.queue, "key": ns.key}


LISTINGS = {"queues": list_queues, "exchanges": list_exchanges, "bindings": list_bindings}


def run(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    listing = LISTINGS.get(ns.verb)
    request = None if listing else plan(ns, parser)  # usage errors before connecting
    with connect(ns) as client:
        if listing is not None:
            listing(client, bool(getattr(ns, "json", False)))
        else:
            assert request is not None
            client.call(*request)
            if ns.verb == "reload-acl":
                print(client.last_description)  # how many rules are now in force
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    ns = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    run_tool(PROG, lambda: run(ns, parser))


if __name__ == "__main__":
    main()
