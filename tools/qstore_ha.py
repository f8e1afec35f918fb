"""`qstore-ha`: look at a broker's HA state and, for a cluster manager, promote one.

The seed's qpid-ha (manual 1.12.10), over the broker's `$management` node (request type `ha`):

    qstore-ha [-b BROKER] [--cluster-manager] [--timeout S] [LOGIN OPTIONS] VERB
      ping                            exit 0 if the broker answers
      status                          print the state (standalone joining catch-up ready
                                      recovering active)
      status --expect=STATE           print nothing; exit 0 only if the state matches (any state,
                                      the seed's `catchup`, or `primary` / `backup`)
      status --is-primary             print nothing; exit 0 only on a primary
      status --all [--json]           `ADDRESS STATE` for every broker of the brokers URL
      query [--all] [--json]          every status field, human readable
      ready [--wait S]                exit 0 only on a ready backup (waiting up to S seconds)
      promote                         [cluster manager only] promote this broker to primary

`promote` can make a cluster with two primaries, which loses data, so as in the seed it is only
accepted with `--cluster-manager`, and `--help` lists it only then. The tool always connects as
an admin (`qpid.ha-admin: true`) so that a backup lets it in. BROKER and the login options are
those of qstore-config (_login.py); `--all` asks every broker with the same login. Options may
stand before or after the verb. Exit status: 0 yes/success, 1 no, refused or unreachable (one
line on stderr, never a traceback), 2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from broker.ha.states import BrokerState, matches
from qstore.urls import Address, UrlError, parse_client_url
from tools._login import Login
from tools._mgmt import (
    DEFAULT_TIMEOUT,
    ManagementClient,
    ToolError,
    add_connection_options,
    login_of,
    parse_timeout,
    print_json,
    run_tool,
)
from tools.cluster_manager import NodeView, best_candidate

PROG = "qstore-ha"
CLUSTER_MANAGER = "--cluster-manager"
MANAGER_VERBS = ("promote", "recover")
# Options that take a value as the next word: skipped when looking for a verb in argv.
_VALUE_OPTIONS = (
    "-b",
    "--broker",
    "--timeout",
    "--expect",
    "--wait",
    "--sasl-mechanism",
    "--password-file",
    "--ssl-ca-file",
    "--ssl-cert-file",
    "--ssl-key-file",
)
_POLL = 0.1


class No(Exception):
    """The answer is no: exit 1 without a word (`status --expect`, `--is-primary`, `ready`)."""


def manager_only_warning(verb: str) -> str:
    return (
        f"{verb} is a cluster manager only command: used outside a cluster manager it can make "
        f"two primaries, which loses data; from a cluster manager use "
        f"'{PROG} {CLUSTER_MANAGER} {verb}'"
    )


def _expected_state(text: str) -> str:
    """`--expect` value: checked at parse time so a typo is a usage error, not a silent `no`."""
    if text.strip().lower() in ("primary", "backup"):
        return text
    try:
        BrokerState.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or primary / backup") from None
    return text


def _common(parser: argparse.ArgumentParser) -> None:
    """Options every level accepts (before or after the verb): the tools' connection options
    (always as an HA admin tool) and --cluster-manager."""
    add_connection_options(parser, ha_admin=False)
    parser.add_argument(
        CLUSTER_MANAGER,
        dest="cluster_manager",
        action="store_true",
        default=argparse.SUPPRESS,
        help="enable the commands only a cluster manager may use",
    )


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")


def build_parser(cluster_manager: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Show the HA state of qstore brokers"
        + (" and promote one (cluster manager)." if cluster_manager else "."),
        epilog="Options may stand before or after the verb. Exit status: 0 success or yes, "
        "1 no, refused or unreachable, 2 bad usage."
        + ("" if cluster_manager else f" Cluster manager commands: {PROG} {CLUSTER_MANAGER} -h."),
    )
    _common(parser)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("ping", help="exit 0 if the broker answers")
    _common(p)

    s = verbs.add_parser(
        "status",
        help="print the broker's HA state",
        description="Print the broker's HA state: standalone, joining, catch-up, ready, "
        "recovering or active.",
    )
    _common(s)
    one = s.add_mutually_exclusive_group()
    one.add_argument(
        "--expect",
        type=_expected_state,
        metavar="STATE",
        help="print nothing; exit 0 if the state is STATE (a state, `catchup`, `primary` "
        "= recovering or active, `backup` = joining, catch-up or ready), 1 otherwise",
    )
    one.add_argument(
        "--is-primary",
        action="store_true",
        help="print nothing; exit 0 if the broker is primary (recovering or active), 1 otherwise",
    )
    one.add_argument(
        "--all", action="store_true", help="the state of every broker of the brokers URL"
    )
    _json_option(s)

    q = verbs.add_parser("query", help="print every HA status field")
    _common(q)
    q.add_argument("--all", action="store_true", help="for every broker of the brokers URL")
    _json_option(q)

    r = verbs.add_parser("ready", help="exit 0 if the broker is a ready backup")
    _common(r)
    r.add_argument(
        "--wait",
        type=parse_timeout,
        metavar="S",
        help="wait up to S seconds for the broker to become a ready backup",
    )

    if cluster_manager:
        pr = verbs.add_parser(
            "promote",
            help="[cluster manager only] promote this backup to primary",
            description="[Cluster manager only] Promote this broker to primary. Only a cluster "
            "manager that ensures a single primary may use it: two primaries lose data.",
        )
        _common(pr)
        rc = verbs.add_parser(
            "recover",
            help="[cluster manager only] after a total failure, promote the best broker",
            description="[Cluster manager only] Ask every broker of the brokers URL for its "
            "state and journal position; if none is primary, promote the ready backup, else the "
            "joining broker, with the highest (epoch, seq), and say which brokers did not answer.",
        )
        _common(rc)
    return parser


def find_verb(argv: Sequence[str]) -> str | None:
    """The first word of argv that is not an option or an option's value (as the seed looks
    for its command among all the words)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _VALUE_OPTIONS:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


# -- talking to brokers ---------------------------------------------------------------------------


def connect(login: Login, timeout: float) -> ManagementClient:
    return ManagementClient.login(login, ha_admin=True, timeout=timeout)


def read_status(client: ManagementClient) -> dict[str, Any]:
    body = client.call("READ", "ha")
    if not isinstance(body, dict) or "state" not in body:
        raise ToolError(f"{client.where} answered without an HA status")
    st = {str(k): v for k, v in body.items()}
    try:
        BrokerState.parse(str(st["state"]))
    except ValueError as exc:
        raise ToolError(f"{client.where}: {exc}") from None
    return st


def state_of(st: dict[str, Any]) -> BrokerState:
    return BrokerState.parse(str(st["state"]))  # checked by read_status


def ask(login: Login, address: str, timeout: float) -> dict[str, Any]:
    """One broker's status over its own connection (for --all), logged in as the tool is."""
    with connect(dataclasses.replace(login, addresses=addresses_of(address)), timeout) as client:
        return read_status(client)


def addresses_of(url: str) -> tuple[Address, ...]:
    """The addresses of a brokers URL a broker reports (credentials in it, masked or not, are
    not ours to use: the tool logs in as its own options say)."""
    try:
        return parse_client_url(url).addresses
    except UrlError as exc:
        raise ToolError(f"the broker reports a brokers URL this tool cannot read: {exc}") from None


def cluster_statuses(
    first: dict[str, Any], login: Login, where: str, timeout: float
) -> list[tuple[str, dict[str, Any] | str]]:
    """(address, status or error) for every broker of the brokers URL, each asked itself; a
    broker outside a cluster has no brokers URL and stands alone."""
    url = str(first.get("brokers_url") or "")
    addresses = [str(a) for a in addresses_of(url)] if url else [where]
    out: list[tuple[str, dict[str, Any] | str]] = []
    for address in addresses:
        try:
            out.append((address, ask(login, address, timeout)))
        except ToolError as exc:
            out.append((address, str(exc)))
    return out


# -- printing -------------------------------------------------------------------------------------


def _position(st: dict[str, Any]) -> str:
    pos = st.get("position")
    if isinstance(pos, (list, tuple)) and len(pos) == 2:
        return f"epoch {pos[0]} seq {pos[1]}"
    return "" if pos is None else str(pos)


def query_lines(st: dict[str, Any], address: str | None = None) -> list[str]:
    rows: list[tuple[str, Any]] = [("Address:", address)] if address else []
    rows += [
        ("Name:", st.get("name", "")),
        ("Status:", st.get("state", "")),
        ("Epoch:", st.get("epoch", "")),
        ("Position:", _position(st)),
        ("Brokers URL:", st.get("brokers_url", "")),
    ]
    lines = [f"{k:<20} {v}".rstrip() for k, v in rows]
    members = [dict(m) for m in st.get("members") or []]
    if not members:
        lines.append(f"{'Members:':<20} (none known)")
    for i, m in enumerate(members):
        name, address = str(m.get("name") or ""), str(m.get("address") or "")
        words = [name] if address in ("", name) else [name, address]
        text = " ".join([*words, str(m.get("state") or "")]).strip()
        lines.append(f"{'Members:' if i == 0 else '':<20} {text}")
    return lines


def _as_json(address: str, result: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(result, str):
        return {"address": address, "error": result}
    return {"address": address, **result}


# -- verbs ----------------------------------------------------------------------------------------


def do_status(client: ManagementClient, ns: argparse.Namespace, timeout: float) -> int:
    st = read_status(client)
    state = state_of(st)
    if ns.is_primary:
        if not state.is_primary:
            raise No
        return 0
    if ns.expect is not None:
        if not matches(state, ns.expect):
            raise No
        return 0
    as_json = bool(getattr(ns, "json", False))
    if not ns.all:
        if as_json:
            print_json(st)
        else:
            print(state)
        return 0
    results = cluster_statuses(st, ns.login, client.where, timeout)
    if as_json:
        print_json([_as_json(a, r) for a, r in results])
        return 0
    for address, result in results:
        print(address, result if isinstance(result, str) else result.get("state", ""))
    return 0


def do_query(client: ManagementClient, ns: argparse.Namespace, timeout: float) -> int:
    st = read_status(client)
    as_json = bool(getattr(ns, "json", False))
    if not ns.all:
        if as_json:
            print_json(st)
        else:
            print("\n".join(query_lines(st)))
        return 0
    results = cluster_statuses(st, ns.login, client.where, timeout)
    if as_json:
        print_json([_as_json(a, r) for a, r in results])
        return 0
    blocks = [
        f"{'Address:':<20} {a}\n{'Error:':<20} {r}"
        if isinstance(r, str)
        else "\n".join(query_lines(r, a))
        for a, r in results
    ]
    print("\n\n".join(blocks))
    return 0


def do_ready(client: ManagementClient, ns: argparse.Namespace, timeout: float) -> int:
    deadline = time.monotonic() + (ns.wait or 0.0)
    while True:
        if state_of(read_status(client)) == BrokerState.READY:
            return 0
        if time.monotonic() >= deadline:
            raise No
        time.sleep(_POLL)


def do_promote(client: ManagementClient, ns: argparse.Namespace, timeout: float) -> int:
    client.call("PROMOTE", "ha")  # 409 "promote refused: why" -> ToolError -> one line, exit 1
    return 0


def do_recover(client: ManagementClient, ns: argparse.Namespace, timeout: float) -> int:
    """One pass of what qstore-cluster does after a total failure, for an external manager."""
    statuses = cluster_statuses(read_status(client), ns.login, client.where, timeout)
    views, missing = [], []
    for i, (address, st) in enumerate(statuses):
        if isinstance(st, str):
            missing.append(address)
            views.append(NodeView(i, False, None))
            continue
        pos = st.get("position") or [0, 0]
        views.append(NodeView(i, True, str(st["state"]), (int(pos[0]), int(pos[1]))))
        if state_of(st).is_primary:
            print(f"{address} is already primary ({st['state']}): nothing to do")
            return 0
    best = best_candidate(views, "ready") or best_candidate(views, "joining")
    if best is None:
        raise ToolError("no broker is ready or joining: nothing can be promoted")
    address = statuses[best.index][0]
    print(f"promoting {address} ({views[best.index].state}, position {list(best.position)})")
    if missing:
        print(f"not answering: {', '.join(missing)} (their journals were not compared)")
    with connect(dataclasses.replace(ns.login, addresses=addresses_of(address)), timeout) as target:
        target.call("PROMOTE", "ha")
    return 0


def do_ping(client: ManagementClient, ns: argparse.Namespace, timeout: float) -> int:
    read_status(client)
    return 0


VERBS: dict[str, Callable[[ManagementClient, argparse.Namespace, float], int]] = {
    "ping": do_ping,
    "status": do_status,
    "query": do_query,
    "ready": do_ready,
    "promote": do_promote,
    "recover": do_recover,
}


def run(ns: argparse.Namespace) -> int:
    """Connect, run the verb; `No` is a silent exit 1. With --expect or --is-primary a broker
    that cannot be reached is also a `no`, but its one line still goes to stderr, as in the
    seed (stdout stays empty)."""
    timeout = getattr(ns, "timeout", DEFAULT_TIMEOUT)
    ns.login = login_of(ns)
    try:
        with connect(ns.login, timeout) as client:
            return VERBS[ns.verb](client, ns, timeout)
    except No:
        return 1


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    manager = CLUSTER_MANAGER in args
    verb = find_verb(args)
    if not manager and verb in MANAGER_VERBS:
        print(f"{PROG}: {manager_only_warning(verb)}", file=sys.stderr)
        sys.exit(1)
    parser = build_parser(manager)
    ns = parser.parse_args(args)
    if getattr(ns, "json", False) and (
        getattr(ns, "expect", None) is not None or getattr(ns, "is_primary", False)
    ):
        parser.error("--json cannot go with --expect or --is-primary (they print nothing)")
    run_tool(PROG, lambda: run(ns))


if __name__ == "__main__":
    main()
