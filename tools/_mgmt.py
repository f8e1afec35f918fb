"""A small blocking client of a broker's `$management` node, shared by the admin tools.

One request is a message to `$management` with application properties `operation`, `type` and
`name`, a map body, and a reply-to address: a dynamic receiver this client attaches once. The
answer carries `statusCode` and `statusDescription`. Every failure a person can cause (a bad
`-b`, a broker that is not there, one that drops us, a timeout) is a `ToolError` with a one-line
message, so the tools can print it and exit 1 instead of showing a traceback.

`--ha-admin` puts `qpid.ha-admin: true` in the connection properties, as the seed's tools do, so a
backup lets the tool in.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from proton import Message, symbol
from proton.utils import BlockingConnection, BlockingReceiver, BlockingSender

from qstore.urls import Address, UrlError, parse_addresses

DEFAULT_BROKER = "127.0.0.1:5672"
DEFAULT_TIMEOUT = 10.0
MANAGEMENT = "$management"
_CONDITION = re.compile(r"Condition\('[^']*', '([^']*)'")


class ToolError(Exception):
    """A failure to report as one line and exit status 1."""


def parse_broker(text: str) -> list[Address]:
    """`-b` value: host[:port][,host[:port]...] with optional amqp:/tcp: prefixes (seed grammar)."""
    try:
        return list(parse_addresses(text))
    except UrlError as exc:
        raise argparse.ArgumentTypeError(f"bad broker address {text!r}: {exc}") from None


def parse_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"bad timeout {text!r} (expected seconds > 0)")
    return value


def add_connection_options(parser: argparse.ArgumentParser, *, short_b: bool = True) -> None:
    """`-b/--broker`, `--ha-admin`, `--timeout`; SUPPRESS defaults so that a subparser repeating
    them (options after the verb) does not overwrite a value given before the verb."""
    flags = ("-b", "--broker") if short_b else ("--broker",)
    parser.add_argument(
        *flags,
        dest="broker",
        metavar="BROKER",
        type=parse_broker,
        default=argparse.SUPPRESS,
        help=f"broker address host[:port] (default {DEFAULT_BROKER})",
    )
    parser.add_argument(
        "--ha-admin",
        action="store_true",
        default=argparse.SUPPRESS,
        help="connect as an admin tool (allowed on a backup broker)",
    )
    parser.add_argument(
        "--timeout",
        type=parse_timeout,
        default=argparse.SUPPRESS,
        metavar="S",
        help=f"seconds to wait for the broker (default {DEFAULT_TIMEOUT:g})",
    )


def broker_addresses(ns: argparse.Namespace) -> list[Address]:
    return getattr(ns, "broker", None) or parse_broker(DEFAULT_BROKER)


class ManagementClient:
    """A connection to one broker with a reply receiver; `request()` is one round trip."""

    def __init__(
        self,
        addresses: Sequence[Address],
        *,
        ha_admin: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.timeout = timeout
        self.where = ",".join(a.hostport for a in addresses)
        props = {symbol("qpid.ha-admin"): True} if ha_admin else None
        urls = [f"{'amqps' if a.transport == 'ssl' else 'amqp'}://{a.hostport}" for a in addresses]
        self.conn: BlockingConnection | None = None
        try:
            # One address: the plain form (no reconnect); several: try each in turn once.
            if len(urls) == 1:
                self.conn = BlockingConnection(urls[0], timeout=timeout, properties=props)
            else:
                self.conn = BlockingConnection(
                    urls=urls, reconnect=False, timeout=timeout, properties=props
                )
            self.sender: BlockingSender = self.conn.create_sender(MANAGEMENT)
            self.receiver: BlockingReceiver = self.conn.create_receiver(None, dynamic=True)
            self.reply_to: str = self.receiver.remote_source.address
        except Exception as exc:
            self.close()
            raise ToolError(f"cannot connect to {self.where}: {_describe(exc)}") from None
        if not self.reply_to:
            self.close()
            raise ToolError(f"cannot connect to {self.where}: broker gave no reply address")

    def request(
        self,
        operation: str,
        type: str,
        name: str | None = None,
        body: Any = None,
        properties: dict[str, Any] | None = None,
    ) -> tuple[int, str, Any]:
        """Send one request and wait for its answer: (statusCode, statusDescription, body)."""
        assert self.conn is not None
        mid = str(uuid.uuid4())
        props: dict[str, Any] = {"operation": operation, "type": type}
        if name is not None:
            props["name"] = name
        props.update(properties or {})
        msg = Message(
            id=mid, reply_to=self.reply_to, properties=props, body=body if body is not None else {}
        )
        try:
            self.sender.send(msg, timeout=self.timeout)
            while True:
                reply = self.receiver.receive(timeout=self.timeout)
                self.receiver.accept()
                if reply.correlation_id in (mid, None):
                    break
        except Exception as exc:
            raise ToolError(
                f"{operation} {type} on {self.where} failed: {_describe(exc)}"
            ) from None
        rp = {str(k): v for k, v in (reply.properties or {}).items()}
        try:
            code = int(rp.get("statusCode", 0))
        except (TypeError, ValueError):
            code = 0
        return code, str(rp.get("statusDescription", "")), reply.body

    def call(
        self,
        operation: str,
        type: str,
        name: str | None = None,
        body: Any = None,
        properties: dict[str, Any] | None = None,
    ) -> Any:
        """`request()` that raises `ToolError(description)` unless the status is 2xx."""
        code, desc, out = self.request(operation, type, name, body, properties)
        if not 200 <= code < 300:
            raise ToolError(desc or f"{operation} {type} failed with status {code}")
        return out

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: best effort
                self.conn.close()
            self.conn = None

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe(exc: BaseException) -> str:
    """One line for an exception from proton or the socket layer."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    cond = getattr(exc, "condition", None)
    if cond is not None and getattr(cond, "description", None):
        return f"{cond.name}: {cond.description}"
    # proton's ConnectionException renders as "Connection URL disconnected: Condition('x', 'why')".
    found = _CONDITION.search(text)
    return found.group(1) if found else text


def connect(ns: argparse.Namespace) -> ManagementClient:
    return ManagementClient(
        broker_addresses(ns),
        ha_admin=bool(getattr(ns, "ha_admin", False)),
        timeout=getattr(ns, "timeout", DEFAULT_TIMEOUT),
    )


def run_tool(prog: str, body: Callable[[], int]) -> NoReturn:
    """Run a tool's body: `ToolError` -> "prog: message" on stderr and exit 1, never a traceback;
    a closed stdout (`| head`) exits quietly."""
    try:
        status = body()
    except ToolError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        sys.stderr.close()
        status = 1
    sys.exit(status)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table in the style of the seed's qpid-config/qpid-stat: header, rule, rows."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "=" * max(len(lines[0]), sum(widths) + 2 * (len(widths) - 1)))
    return "\n".join(lines)


def query_status(address: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any] | None:
    """A broker's HA status (`READ ha`) over an admin connection, or None if it does not answer.
    Also used by a joining broker asked to promote itself, to look at its peers."""
    try:
        client = ManagementClient(parse_broker(address), ha_admin=True, timeout=timeout)
    except (ToolError, argparse.ArgumentTypeError):
        return None
    try:
        code, _, body = client.request("READ", "ha")
    except ToolError:
        return None
    finally:
        client.close()
    return {str(k): v for k, v in body.items()} if code == 200 and isinstance(body, dict) else None
