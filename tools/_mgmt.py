"""A small blocking client of a broker's `$management` node, shared by the admin tools.

One request is a message to `$management` with application properties `operation`, `type` and
`name`, a map body, and a reply-to address: a dynamic receiver this client attaches once. The
answer carries `statusCode` and `statusDescription`. Every failure a person can cause (a bad
`-b`, a broker that is not there, one that drops us, a timeout) is a `ToolError` with a one-line
message, so the tools can print it and exit 1 instead of showing a traceback.

`--ha-admin` puts `qpid.ha-admin: true` in the connection properties, as the seed's tools do, so a
backup lets the tool in. Credentials and TLS (`-b USER/PASS@HOST:PORT`, `--sasl-mechanism`,
`--password-file`, `--ssl-*`) are read by _login.py; a password never appears in what we print.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import re
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from proton import Message, symbol
from proton.utils import BlockingConnection, BlockingReceiver, BlockingSender

from qstore.ha import ADMIN_PROPERTY
from qstore.urls import Address, UrlError, parse_addresses
from tools._errors import ToolError, UsageError
from tools._login import (
    Login,
    TlsSettings,
    add_login_options,
    check_mechanism,
    describe_addresses,
    parse_broker_url,
    resolve_login,
)

DEFAULT_BROKER = "127.0.0.1:5672"
DEFAULT_TIMEOUT = 10.0
MANAGEMENT = "$management"
_CONDITION = re.compile(r"Condition\('([^']*)', '([^']*)'")


def parse_broker(text: str) -> list[Address]:
    """host[:port][,host[:port]...] with optional amqp:/tcp:/ssl: prefixes (seed grammar), no
    credentials: for addresses that come without them (a brokers URL a broker reports)."""
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


def add_connection_options(
    parser: argparse.ArgumentParser, *, short_b: bool = True, ha_admin: bool = True
) -> None:
    """`-b/--broker`, `--ha-admin`, `--timeout` and the login options, declared here once for
    every tool; SUPPRESS defaults (`connect` knows them) so that a subparser repeating them
    (options after the verb) does not overwrite a value given before the verb. `short_b=False`:
    the tool gives `-b` a meaning of its own; `ha_admin=False`: the tool always is one."""
    flags = ("-b", "--broker") if short_b else ("--broker",)
    parser.add_argument(
        *flags,
        dest="broker",
        metavar="BROKER",
        type=parse_broker_url,
        default=argparse.SUPPRESS,
        help=f"broker [USER[/PASS]@][ssl:]HOST[:PORT] (default {DEFAULT_BROKER})",
    )
    if ha_admin:
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
    add_login_options(parser)


def login_of(ns: argparse.Namespace, env: Mapping[str, str] | None = None) -> Login:
    """The broker addresses and login the options (and the environment, default os.environ) ask
    for; `UsageError` if they cannot work together."""
    url = getattr(ns, "broker", None) or parse_broker_url(DEFAULT_BROKER)
    return resolve_login(ns, url, env)


class ManagementClient:
    """A connection to one broker with a reply receiver; `request()` is one round trip."""

    def __init__(
        self,
        addresses: Sequence[Address],
        *,
        user: str | None = None,
        password: str | None = None,
        mechanism: str | None = None,
        ssl: TlsSettings | None = None,
        ha_admin: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """`mechanism`: PLAIN, ANONYMOUS or EXTERNAL (None: PLAIN with a user, else whatever the
        broker offers that proton can do). `ssl`: the TLS files for `ssl:` addresses (None: the
        system's CAs); an `ssl:` address is never tried over plain TCP."""
        self.timeout = timeout
        self.last_description = ""  # the statusDescription of the last `call`
        self.where = describe_addresses(addresses)
        mechanism = check_mechanism(mechanism) or ("PLAIN" if user else None)
        options: dict[str, Any] = {
            "user": user,
            "password": password,
            "allow_insecure_mechs": True,  # PLAIN over plain TCP, as the seed's clients allow
        }
        if mechanism:
            options["allowed_mechs"] = mechanism
        if ha_admin:
            options["properties"] = {symbol(ADMIN_PROPERTY): True}
        if any(a.transport == "ssl" for a in addresses):
            options["ssl_domain"] = (ssl or TlsSettings()).domain()
        urls = [f"{'amqps' if a.transport == 'ssl' else 'amqp'}://{a.hostport}" for a in addresses]
        self.conn: BlockingConnection | None = None
        try:
            # One address: the plain form (no reconnect); several: try each in turn once.
            if len(urls) == 1:
                self.conn = BlockingConnection(urls[0], timeout=timeout, **options)
            else:
                self.conn = BlockingConnection(
                    urls=urls, reconnect=False, timeout=timeout, **options
                )
            self.sender: BlockingSender = self.conn.create_sender(MANAGEMENT)
            self.receiver: BlockingReceiver = self.conn.create_receiver(None, dynamic=True)
            self.reply_to: str = self.receiver.remote_source.address
        except Exception as exc:
            self.close()
            why = _describe(exc)
            raise ToolError(
                f"cannot connect to {self.where}: {why}{_tls_hint(addresses, why)}"
            ) from None
        if not self.reply_to:
            self.close()
            raise ToolError(f"cannot connect to {self.where}: broker gave no reply address")

    @classmethod
    def login(
        cls, login: Login, *, ha_admin: bool = False, timeout: float = DEFAULT_TIMEOUT
    ) -> ManagementClient:
        """A client for what `resolve_login` decided."""
        return cls(
            login.addresses,
            user=login.user,
            password=login.password,
            mechanism=login.mechanism,
            ssl=login.tls,
            ha_admin=ha_admin,
            timeout=timeout,
        )

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
        self.last_description = desc
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
    """One line for an exception from proton or the socket layer: `condition: description`.
    proton's exceptions name the URL we built (no credentials are ever in it)."""
    cond = getattr(exc, "condition", None)
    if cond is not None and getattr(cond, "description", None):
        return _clean(f"{cond.name}: {cond.description}")
    text = " ".join(str(exc).split()) or type(exc).__name__
    # proton's ConnectionException renders as "Connection URL disconnected: Condition('x', 'why')".
    found = _CONDITION.search(text)
    return _clean(f"{found.group(1)}: {found.group(2)}") if found else text


def _clean(text: str) -> str:
    """proton's SASL outcome reads "Authentication failed [mech=PLAIN]": the seed's line ends at
    "failed" (the mechanism is the tool's own choice). Its TLS failures read "amqp:connection:
    framing-error: SSL Failure: error:0A000086:SSL routines::certificate verify failed": only
    the last part says anything to a person."""
    text = re.sub(r"\s*\[mech=[^\]]*\]$", "", " ".join(text.split()))
    _, tls, reason = text.partition("SSL Failure:")
    if tls:
        return f"TLS handshake failed: {reason.rsplit('::', 1)[-1].strip()}"
    return text


def _tls_hint(addresses: Sequence[Address], why: str) -> str:
    """proton checks a certificate's DNS names, never its IP addresses: connecting to an IP
    literal fails verification even with the right CA, which no message says."""
    if "certificate verify failed" not in why:
        return ""
    hint = " (the certificate is not signed by --ssl-ca-file's CA, or does not name the host"
    if any(a.transport == "ssl" and _is_ip(a.host) for a in addresses):
        hint += (
            "; this client matches host names, never IP addresses: connect by a name the "
            "certificate holds, e.g. ssl:localhost:PORT"
        )
    return hint + ")"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def connect(ns: argparse.Namespace) -> ManagementClient:
    return ManagementClient.login(
        login_of(ns),
        ha_admin=bool(getattr(ns, "ha_admin", False)),
        timeout=getattr(ns, "timeout", DEFAULT_TIMEOUT),
    )


def run_tool(prog: str, body: Callable[[], int]) -> NoReturn:
    """Run a tool's body: `ToolError` -> "prog: message" on stderr and exit 1 (`UsageError`: 2),
    never a traceback; a closed stdout (`| head`) exits quietly."""
    try:
        status = body()
    except ToolError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        status = exc.status
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


def query_status(
    address: str,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    user: str | None = None,
    password: str | None = None,
    mechanism: str | None = None,
    ssl: TlsSettings | None = None,
) -> dict[str, Any] | None:
    """A broker's HA status (`READ ha`) over an admin connection, or None if it does not answer
    (refused logins included). Also used by a joining broker asked to promote itself, to look at
    its peers, with the HA credentials. `address` may carry credentials (USER/PASS@HOST:PORT);
    the keywords win over them. A mechanism this client cannot do raises `UsageError`: treating
    that as "no answer" would make every peer look dead to whoever decides on a promote."""
    try:
        url = parse_broker_url(address)
    except argparse.ArgumentTypeError:
        return None
    mechanism = check_mechanism(mechanism)
    try:
        client = ManagementClient(
            url.addresses,
            user=user or url.user,
            password=password if user else url.password,
            mechanism=mechanism,
            ssl=ssl,
            ha_admin=True,
            timeout=timeout,
        )
    except UsageError:
        raise
    except ToolError:
        return None
    try:
        code, _, body = client.request("READ", "ha")
    except ToolError:
        return None
    finally:
        client.close()
    return {str(k): v for k, v in body.items()} if code == 200 and isinstance(body, dict) else None
