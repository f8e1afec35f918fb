"""What the security tests share: a user database made with the real `UserDb`, brokers started
with `--auth yes`, stock proton connections with credentials, a test CA (trustme), and a small
SCRAM client on a real socket (pip's proton cannot do SCRAM: our SaslClient, then proton)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from broker_harness import BrokerProcess, Brokers
from cluster_harness import FAST
from proton import Collector, Connection, Event, Message, Transport, symbol
from proton.utils import BlockingConnection, SyncRequestResponse

from qstore.ha import ADMIN_PROPERTY
from qstore.sasl import SaslClient
from qstore.sasl.userdb import UserDb
from recovery.localcluster import free_ports

TIMEOUT = 10.0
PASSWORDS = {"admin": "admin-secret-1", "alice": "alice-secret-2", "bob": "bob-secret-3",
             "eve": "eve-secret-5", "ha": "ha-secret-4"}  # fmt: skip


def make_sasl_db(path: Path, users: dict[str, str] | None = None) -> Path:
    db = UserDb()
    for user, password in (users or PASSWORDS).items():
        db.set_password(user, password)
    db.save(path)
    return path


def secure_args(tmp_path: Path, *extra: str, acl: str | None = None) -> list[str]:
    """`--auth yes` with the test users; an ACL file if its text is given."""
    db = tmp_path / "sasl-db"
    if not db.exists():
        make_sasl_db(db)
    args = ["--auth", "yes", "--sasl-db", str(db)]
    if acl is not None:
        path = tmp_path / "broker.acl"
        path.write_text(acl)
        args += ["--acl-file", str(path)]
    return [*args, *extra]


def start_secure(brokers: Brokers, *extra: str, acl: str | None = None) -> BrokerProcess:
    return brokers.start(args=secure_args(brokers.tmp_path, "--auto-create", "yes", *extra,
                                          acl=acl))  # fmt: skip


def connect(
    url: str, user: str | None = None, password: str | None = None, **kw: Any
) -> BlockingConnection:
    """A stock proton BlockingConnection logging in with PLAIN (all pip's proton can do)."""
    if user is not None:
        kw.setdefault("allowed_mechs", "PLAIN")
        kw.setdefault("password", PASSWORDS.get(user) if password is None else password)
        kw["user"] = user
    return BlockingConnection(url, timeout=TIMEOUT, **kw)


def refusal(url: str, user: str | None = None, password: str | None = None, **kw: Any) -> str:
    """Connect, expecting a refusal; the client's error text."""
    try:
        conn = connect(url, user, password, **kw)
    except Exception as exc:
        return str(exc)
    conn.close()
    raise AssertionError(f"{user or 'anonymous'} was let in")


def wait_for_log(broker: BrokerProcess, text: str, timeout: float = TIMEOUT) -> str:
    """The first log line holding `text` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in broker.log().splitlines():
            if text in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no log line with {text!r} in:\n{broker.log()[-4000:]}")


def scram_open(port: int, user: str, password: str, mechanism: str = "SCRAM-SHA-256",
               props: dict[Any, Any] | None = None) -> tuple[bool, str]:  # fmt: skip
    """Log in with SCRAM over a real socket (our SaslClient), then open an AMQP connection with
    proton. (True, container of the broker) once the broker's open arrives, else (False, why)."""
    sasl = SaslClient(user=user, password=password, mechanism=mechanism, hostname="127.0.0.1")
    sasl.start()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(sasl.take_output())
        while sasl.state == "pending":
            data = sock.recv(65536)
            if not data:
                sasl.peer_closed()
                break
            sasl.feed(data)
            sock.sendall(sasl.take_output())
        if sasl.state != "ok":
            return False, str(sasl.failure)
        transport = Transport(Transport.CLIENT)
        conn = Connection()
        collector = Collector()
        conn.collect(collector)
        transport.bind(conn)
        if props:
            conn.properties = props
        conn.open()
        if sasl.rest:
            transport.push(sasl.rest)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            out = transport.pending()
            if out > 0:
                sock.sendall(transport.peek(out))
                transport.pop(out)
            ev = collector.peek()
            while ev is not None:
                if ev.type == Event.CONNECTION_REMOTE_OPEN:
                    return True, str(conn.remote_container)
                collector.pop()
                ev = collector.peek()
            data = sock.recv(65536)
            if not data:
                return False, "socket closed"
            transport.push(data)
    return False, "timed out"


_request_response: dict[int, SyncRequestResponse] = {}


def mgmt(conn: BlockingConnection, operation: str, kind: str, name: str | None = None,
         body: Any = None) -> tuple[int, str, Any]:  # fmt: skip
    """One `$management` request over `conn`: (statusCode, statusDescription, body)."""
    rr = _request_response.get(id(conn))
    if rr is None or rr.connection is not conn:  # one per connection (its link name is fixed)
        rr = _request_response[id(conn)] = SyncRequestResponse(conn, "$management")
    props: dict[str, Any] = {"operation": operation, "type": kind}
    if name is not None:
        props["name"] = name
    reply = rr.call(Message(body=body if body is not None else {}, properties=props))
    p = reply.properties or {}
    return int(p["statusCode"]), str(p.get("statusDescription", "")), reply.body


@contextlib.contextmanager
def closing(conn: BlockingConnection) -> Iterator[BlockingConnection]:
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


ADMIN = {symbol(ADMIN_PROPERTY): True}  # open properties of an HA admin (a tool)
WAIT = 20.0


class SecureCluster:
    """Brokers with `--auth yes`, the HA identity `ha` given by a password file."""

    def __init__(
        self, brokers: Brokers, n: int, *, auth: bool = True, acl: str | None = None
    ) -> None:
        self.acl = acl
        self.brokers = brokers
        self.ports = free_ports(n)
        self.url = self.brokers_url()
        tmp = brokers.tmp_path
        self.password_file = tmp / "ha.password"
        self.password_file.write_text(PASSWORDS["ha"] + "\n")
        self.auth = auth
        self.members: list[BrokerProcess] = [self.start(i) for i in range(n)]

    def brokers_url(self) -> str:
        """--ha-brokers-url: the plain ports (a subclass may say otherwise)."""
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def args(self, i: int, password_file: Path | None = None) -> list[str]:
        tmp = self.brokers.tmp_path
        auth = secure_args(tmp, acl=self.acl) if self.auth else ["--auth", "no"]
        return [
            *auth,
            "--ha-cluster", "yes",
            "--ha-brokers-url", self.url,
            "--ha-replicate", "all",
            "--ha-username", "ha",
            "--ha-password-file", str(password_file or self.password_file),
            "--auto-create", "yes",
            "--name", f"node{i}",
            *FAST,
        ]  # fmt: skip

    def start(
        self, i: int, password_file: Path | None = None, extra: tuple[str, ...] = ()
    ) -> BrokerProcess:
        tmp = self.brokers.tmp_path
        args = [*self.args(i, password_file), *extra]
        b = BrokerProcess(tmp / f"node{i}", args, tmp / f"node{i}.log", self.ports[i])
        self.brokers.started.append(b)
        return b

    def admin(self, i: int, user: str = "ha") -> BlockingConnection:
        return connect(f"127.0.0.1:{self.ports[i]}", user, properties=ADMIN)

    def state(self, i: int, user: str = "ha") -> str | None:
        try:
            with closing(self.admin(i, user)) as c:
                code, _, body = mgmt(c, "READ", "ha")
        except Exception:
            return None
        return str(body["state"]) if code == 200 else None

    def wait_state(self, i: int, state: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(i) == state:
                return
            time.sleep(0.1)
        raise AssertionError(f"node{i} not {state} (is {self.state(i)}):\n{self.members[i].log()}")

    def promote(self, i: int, user: str = "ha") -> tuple[int, str]:
        with closing(self.admin(i, user)) as c:
            code, text, _ = mgmt(c, "PROMOTE", "ha")
        return code, text
