"""TLS on the broker's own listener, for clients, tools and the HA links (issue 10, "TLS").

Real `qstored` processes with a certificate from a CA made in the test (trustme), stock proton
clients (`amqps://` with an `SSLDomain`), our tools and `qstore.client`. Certificates name
"localhost" and clients connect to it: proton's TLS name check matches DNS names, not IPs.
The off-host refusal of `--require-encryption` is tested from a network namespace (a veth pair)
when this machine lets us make one (root and `ip netns`), else skipped; its rule (who counts
as loopback) is also tested as a pure function. Every wait is bounded.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from broker_harness import BrokerProcess, Brokers
from cluster_harness import FAST
from cryptography.hazmat.primitives import serialization
from proton import Message, SSLDomain
from proton.utils import BlockingConnection
from security_support import (
    PASSWORDS,
    SecureCluster,
    closing,
    connect,
    secure_args,
    wait_for_log,
)
from tls_support import TLS_RECORD, Sniffer

from broker.net.server import is_loopback
from qstore.client import Connection
from recovery.localcluster import free_ports

ROOT = Path(__file__).resolve().parent.parent
T = 10.0
WAIT = 20.0
HANDSHAKE_FAILED = "TLS handshake failed"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@dataclass
class Pki:
    """The files of one test: the CA, the broker's certificate (localhost, 127.0.0.1) and key."""

    ca: trustme.CA
    ca_file: Path
    cert: Path
    key: Path

    def client_cert(self, name: str) -> tuple[Path, Path]:
        """A client certificate with CN=name signed by the CA: (certificate, key)."""
        leaf = self.ca.issue_cert(f"{name}@example.com", common_name=name)
        cert, key = self.ca_file.with_name(f"{name}.pem"), self.ca_file.with_name(f"{name}.key")
        cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key


@pytest.fixture
def pki(ca: trustme.CA, tmp_path: Path) -> Pki:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    p = Pki(ca, tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    ca.cert_pem.write_to_path(str(p.ca_file))
    p.cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(p.key))
    return p


def other_ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@dataclass
class TlsBroker:
    proc: BrokerProcess
    ssl_port: int

    @property
    def amqps(self) -> str:
        return f"amqps://localhost:{self.ssl_port}"


def start_tls(brokers: Brokers, pki: Pki, *extra: str) -> TlsBroker:
    """A broker with `--auth yes`, its certificate, and a TLS port chosen here (there is no
    port file for it); the port file is written once both listeners are up."""
    (ssl_port,) = free_ports(1)
    args = secure_args(brokers.tmp_path, "--auto-create", "yes")
    args += ["--ssl-cert-file", str(pki.cert), "--ssl-key-file", str(pki.key)]
    args += ["--ssl-port", str(ssl_port), *extra]
    return TlsBroker(brokers.start(args=args), ssl_port)


def domain(ca_file: Path, cert: tuple[Path, Path] | None = None) -> SSLDomain:
    """A stock proton client's TLS settings: trust `ca_file`, check the host name."""
    d = SSLDomain(SSLDomain.MODE_CLIENT)
    d.set_trusted_ca_db(str(ca_file))
    d.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
    if cert is not None:
        d.set_credentials(str(cert[0]), str(cert[1]), None)
    return d


def round_trip(conn: BlockingConnection, queue: str, body: str) -> None:
    conn.create_sender(queue).send(Message(body=body, durable=True))
    rcv = conn.create_receiver(queue)
    msg = rcv.receive(timeout=T)
    rcv.accept()
    assert msg.body == body


def log_lines(broker: BrokerProcess, text: str) -> list[str]:
    return [line for line in broker.log().splitlines() if text in line]


def failure(url: str, **kw: object) -> str:
    """Connect with a stock client, expecting it to fail; its error text."""
    try:
        conn = BlockingConnection(url, timeout=T, **kw)  # type: ignore[arg-type]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    conn.close()
    raise AssertionError(f"{url} let the client in")


# -- clients ---------------------------------------------------------------------------------------


def test_stock_client_logs_in_over_tls(brokers: Brokers, pki: Pki) -> None:
    b = start_tls(brokers, pki)
    with closing(connect(b.amqps, "alice", ssl_domain=domain(pki.ca_file))) as conn:
        round_trip(conn, "tls-q", "over TLS")
    line = wait_for_log(b.proc, "user=alice@QPID")
    assert "peer=127.0.0.1:" in line
    assert PASSWORDS["alice"] not in b.proc.log()


def test_wrong_ca_and_plain_client_fail_and_broker_stays_healthy(
    brokers: Brokers, pki: Pki, tmp_path: Path
) -> None:
    b = start_tls(brokers, pki)
    text = failure(b.amqps, ssl_domain=domain(other_ca_file(tmp_path)), user="alice",
                   password=PASSWORDS["alice"], allowed_mechs="PLAIN")  # fmt: skip
    assert "certificate verify failed" in text.lower(), text
    line = wait_for_log(b.proc, HANDSHAKE_FAILED)
    assert "peer=127.0.0.1:" in line and "TLSV1_ALERT_UNKNOWN_CA" in line, line
    time.sleep(0.3)  # one failed handshake, one line
    assert len(log_lines(b.proc, HANDSHAKE_FAILED)) == 1, b.proc.log()
    # A plain AMQP client on the TLS port: its header is no ClientHello; it is dropped.
    text = failure(f"amqp://localhost:{b.ssl_port}", user="alice", password=PASSWORDS["alice"],
                   allowed_mechs="PLAIN")  # fmt: skip
    deadline = time.monotonic() + T
    while len(log_lines(b.proc, HANDSHAKE_FAILED)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(log_lines(b.proc, HANDSHAKE_FAILED)) == 2, b.proc.log()
    second = log_lines(b.proc, HANDSHAKE_FAILED)[1]
    assert "WRONG_VERSION_NUMBER (the peer does not speak TLS" in second, second
    # A TCP probe that hangs up before its ClientHello (a health check, a port scan).
    socket.create_connection(("127.0.0.1", b.ssl_port), timeout=T).close()
    deadline = time.monotonic() + T
    while len(log_lines(b.proc, HANDSHAKE_FAILED)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "peer closed the connection" in log_lines(b.proc, HANDSHAKE_FAILED)[-1]
    assert b.proc.alive()
    with closing(connect(b.amqps, "bob", ssl_domain=domain(pki.ca_file))) as conn:
        round_trip(conn, "still-tls", "fine")
    with closing(connect(b.proc.url, "bob")) as conn:
        round_trip(conn, "still-plain", "fine")
    assert "Traceback" not in b.proc.log()


def test_plain_and_tls_connections_are_told_apart(brokers: Brokers, pki: Pki) -> None:
    """The two listeners number their connections from one sequence: a TLS connection closing
    must not take a plain connection's consumers (the model knows them by connection id)."""
    b = start_tls(brokers, pki)
    with closing(connect(b.proc.url, "alice")) as plain:
        rcv = plain.create_receiver("shared-q")
        for i in range(3):  # TLS connections come and go, each with a consumer of its own
            with closing(connect(b.amqps, "bob", ssl_domain=domain(pki.ca_file))) as tls:
                tls.create_receiver(f"tls-q-{i}")
        with closing(connect(b.amqps, "bob", ssl_domain=domain(pki.ca_file))) as tls:
            tls.create_sender("shared-q").send(Message(body="to the plain consumer"))
        assert rcv.receive(timeout=T).body == "to the plain consumer"
        rcv.accept()
    accepts = [line.split("accept ")[1].split()[0] for line in log_lines(b.proc, " accept conn=")]
    assert len(accepts) == 5 and len(set(accepts)) == 5, accepts
    assert len(log_lines(b.proc, " tls=TLSv1.")) == 4, b.proc.log()


def test_encrypted_key_with_password_file(brokers: Brokers, pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    secret = "key-pass-" + uuid.uuid4().hex[:8]
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(secret.encode()),
        )
    )
    password_file = tmp_path / "key.password"
    password_file.write_text(secret + "\n")
    b = start_tls(brokers, pki, "--ssl-key-password-file", str(password_file))
    with closing(connect(b.amqps, "alice", ssl_domain=domain(pki.ca_file))) as conn:
        round_trip(conn, "enc-key", "locked key")
    assert secret not in b.proc.log()
    # The wrong password: the broker does not start, and says so in one line.
    password_file.write_text("not-the-password\n")
    with pytest.raises(RuntimeError) as err:
        start_tls(brokers, pki, "--ssl-key-password-file", str(password_file))
    assert "--ssl-cert-file: cannot use" in str(err.value)
    assert "Traceback" not in str(err.value) and "not-the-password" not in str(err.value)


def test_external_with_a_client_certificate(brokers: Brokers, pki: Pki) -> None:
    b = start_tls(brokers, pki, "--ssl-ca-file", str(pki.ca_file), "--ssl-require-client-auth")
    alice = pki.client_cert("alice")
    d = domain(pki.ca_file, alice)
    with closing(BlockingConnection(b.amqps, timeout=T, ssl_domain=d,
                                    allowed_mechs="EXTERNAL")) as conn:  # fmt: skip
        round_trip(conn, "ext-q", "by certificate")
    assert "user=alice@QPID" in wait_for_log(b.proc, "user=alice@QPID")
    # No certificate: the handshake fails (PLAIN with a good password does not help).
    text = failure(b.amqps, ssl_domain=domain(pki.ca_file), user="alice",
                   password=PASSWORDS["alice"], allowed_mechs="PLAIN")  # fmt: skip
    # (The client reads an EOF, not the "certificate required" alert: anyio drops the alert
    # OpenSSL wrote when the handshake failed; the broker's log says why.)
    assert "SSL Failure" in text, text
    line = wait_for_log(b.proc, HANDSHAKE_FAILED)
    assert "peer=127.0.0.1:" in line and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in line, line
    assert "user=alice@QPID" in log_lines(b.proc, " opened")[-1]  # only the first one got in


def test_optional_client_certificate(brokers: Brokers, pki: Pki) -> None:
    """--ssl-ca-file alone: a certificate is asked for, not required. With one, EXTERNAL; without,
    PLAIN as usual, and EXTERNAL is not offered (nobody to take the name from)."""
    b = start_tls(brokers, pki, "--ssl-ca-file", str(pki.ca_file))
    d = domain(pki.ca_file, pki.client_cert("carol"))
    with closing(BlockingConnection(b.amqps, timeout=T, ssl_domain=d,
                                    allowed_mechs="EXTERNAL")) as conn:  # fmt: skip
        round_trip(conn, "opt-q", "certificate")
    wait_for_log(b.proc, "user=carol@QPID")
    with closing(connect(b.amqps, "bob", ssl_domain=domain(pki.ca_file))) as conn:
        round_trip(conn, "opt-q", "password")
    wait_for_log(b.proc, "user=bob@QPID")
    # Asking for EXTERNAL without a certificate, or on plain TCP: not offered, no mechanism.
    for url, kw in ((b.amqps, {"ssl_domain": domain(pki.ca_file)}), (b.proc.url, {})):
        text = failure(url, allowed_mechs="EXTERNAL", **kw)
        assert "amqp:unauthorized-access" in text and "mech=none" in text, text


# -- HA links --------------------------------------------------------------------------------------


class TlsCluster(SecureCluster):
    """A `SecureCluster` with plain ports and TLS ports apart, client certificates required on
    the TLS ports; --ha-brokers-url is `ssl:localhost:<port>` for each (the TLS ports unless
    told)."""

    def __init__(self, brokers: Brokers, pki: Pki, n: int = 2, *, url_on_plain: bool = False):
        self.pki = pki
        self.ssl_ports = free_ports(n)
        self.url_on_plain = url_on_plain
        super().__init__(brokers, n)

    def brokers_url(self) -> str:
        ports = self.ports if self.url_on_plain else self.ssl_ports
        return ",".join(f"ssl:localhost:{p}" for p in ports)

    def args(self, i: int, password_file: Path | None = None) -> list[str]:
        return [
            *super().args(i, password_file),
            "--ssl-cert-file", str(self.pki.cert),
            "--ssl-key-file", str(self.pki.key),
            "--ssl-ca-file", str(self.pki.ca_file),
            "--ssl-require-client-auth",  # the brokers show their certificates to each other
            "--ssl-port", str(self.ssl_ports[i]),
        ]  # fmt: skip


def test_ha_links_over_tls_replicate_and_fail_over(brokers: Brokers, pki: Pki) -> None:
    c = TlsCluster(brokers, pki)
    assert c.promote(0)[0] == 200
    c.wait_state(1, "ready")
    wait_for_log(c.members[1], f"following primary localhost:{c.ssl_ports[0]}")
    # The backup came in over TLS, as the HA user.
    opened = wait_for_log(c.members[0], "user=ha@QPID opened as backup")
    assert "container=node1 " in opened
    conn_id = opened.split(" conn=")[1].split()[0]
    assert " tls=TLSv1." in wait_for_log(c.members[0], f" accept conn={conn_id} peer=")
    alice = domain(pki.ca_file, pki.client_cert("alice"))
    with closing(connect(f"amqps://localhost:{c.ssl_ports[0]}", "alice",
                         ssl_domain=alice)) as conn:  # fmt: skip
        conn.create_sender("orders").send(Message(body="order-1", durable=True))
    c.members[0].kill()
    assert c.promote(1)[0] == 200
    with closing(connect(f"127.0.0.1:{c.ports[1]}", "alice")) as conn:
        rcv = conn.create_receiver("orders")
        assert rcv.receive(timeout=5).body == "order-1"
        rcv.accept()
    for b in c.members:
        log = b.log_path.read_text()
        assert PASSWORDS["ha"] not in log
        assert HANDSHAKE_FAILED not in log


def test_ssl_ha_address_never_falls_back_to_tcp(brokers: Brokers, pki: Pki) -> None:
    """`ssl:` naming the plain ports: the backup speaks TLS to a plain listener, which never
    becomes a link; the backup stays joining and says why."""
    c = TlsCluster(brokers, pki, url_on_plain=True)
    assert c.promote(0)[0] == 200
    line = wait_for_log(c.members[1], f"cannot connect to ssl:localhost:{c.ports[0]}")
    assert HANDSHAKE_FAILED in line, line
    time.sleep(1.5)  # many link-maintenance intervals (0.1 s): it keeps trying, never in
    assert c.state(1) == "joining"
    assert "following primary" not in c.members[1].log()
    assert "opened as backup" not in c.members[0].log()


def test_ssl_ha_address_sends_a_client_hello_not_amqp(brokers: Brokers, pki: Pki) -> None:
    """A joining broker dialling an `ssl:` peer that is a plain TCP listener sends a TLS
    ClientHello there, never an AMQP header."""
    with Sniffer() as sniffer:
        (port,) = free_ports(1)
        tmp = brokers.tmp_path
        password_file = tmp / "ha.password"
        password_file.write_text(PASSWORDS["ha"] + "\n")
        args = [
            *secure_args(tmp),
            "--ha-cluster", "yes",
            "--ha-brokers-url", f"ssl:localhost:{sniffer.port},localhost:{port}",
            "--ha-username", "ha",
            "--ha-password-file", str(password_file),
            "--ssl-ca-file", str(pki.ca_file),
            *FAST,
        ]  # fmt: skip
        b = BrokerProcess(tmp / "n0", args, tmp / "n0.log", port)
        brokers.started.append(b)
        first = sniffer.wait_for(2)
    assert len(first) >= 2, b.log()
    assert all(f and f[0] == TLS_RECORD for f in first), first
    assert not any(f.startswith(b"AMQP") for f in first)


# -- --require-encryption -------------------------------------------------------------------------


def test_require_encryption_admits_loopback_plain_clients(brokers: Brokers, pki: Pki) -> None:
    b = start_tls(brokers, pki, "--require-encryption")
    with closing(connect(b.proc.url, "alice")) as conn:
        round_trip(conn, "loop-q", "local")
    with closing(connect(b.amqps, "alice", ssl_domain=domain(pki.ca_file))) as conn:
        round_trip(conn, "loop-q", "local tls")
    assert "not encrypted" not in b.proc.log()


@pytest.mark.parametrize(
    ("host", "admitted"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("10.213.77.2", False), ("::ffff:10.0.0.1", False), ("fe80::1%eth0", False),
     ("192.168.1.5", False), ("not-an-address", False)],
)  # fmt: skip
def test_require_encryption_rule(host: str, admitted: bool) -> None:
    """Which peers --require-encryption lets in over plain TCP: loopback only (the real
    refusal from off this host is the network-namespace test below)."""
    assert is_loopback(host) is admitted


NETNS_CLIENT = r"""
import sys
from proton import Message
from qstore.client import Connection
url, ca = sys.argv[1], sys.argv[2] or None
try:
    with Connection.establish(url, username="alice", password=sys.argv[3], ssl_ca_file=ca,
                              timeout=5) as conn:
        ssn = conn.session()
        ssn.sender("ns-q", timeout=5).send(Message(body="from the namespace"), timeout=5)
        msg = ssn.receiver("ns-q", timeout=5).fetch(timeout=5)
        ssn.acknowledge(msg)
        print("OK", msg.body)
except Exception as exc:
    print("FAILED", type(exc).__name__, exc)
"""


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str]]:
    """A network namespace joined to this one by a veth pair: (name, our address, its
    address). Skipped where namespaces cannot be made (not root, no `ip`)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8) for a network namespace")
    tag = uuid.uuid4().hex[:6]
    name, host_if, ns_if = f"qs-{tag}", f"qsh{tag}", f"qsn{tag}"
    r = random.Random(tag)  # a /30 of its own: other test runs may hold a namespace too
    net = f"10.{r.randrange(200, 250)}.{r.randrange(256)}.{4 * r.randrange(64)}"
    base = net.rsplit(".", 1)
    host_ip, ns_ip = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    try:
        try:
            ip("netns", "add", name)
            ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            ip("link", "set", ns_if, "netns", name)
            ip("addr", "add", f"{host_ip}/30", "dev", host_if)
            ip("link", "set", host_if, "up")
            ip("-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
            ip("-n", name, "link", "set", ns_if, "up")
            ip("-n", name, "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot make a network namespace: {exc}")
        yield name, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def test_require_encryption_refuses_off_host_plain_tcp(
    brokers: Brokers, ca: trustme.CA, tmp_path: Path, netns: tuple[str, str, str]
) -> None:
    name, host_ip, ns_ip = netns
    leaf = ca.issue_cert(host_ip)  # Python's ssl (qstore.client) checks IP addresses too
    cert, key, ca_file = tmp_path / "h.pem", tmp_path / "h.key", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    (ssl_port,) = free_ports(1)
    args = secure_args(tmp_path, "--auto-create", "yes", "--interface", host_ip)
    args += ["--ssl-cert-file", str(cert), "--ssl-key-file", str(key)]
    args += ["--ssl-port", str(ssl_port), "--require-encryption"]
    b = brokers.start(args=args)

    def client(url: str, ca: str) -> str:
        p = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", NETNS_CLIENT, url, ca,
             PASSWORDS["alice"]],
            cwd=ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return (p.stdout + p.stderr).strip()

    out = client(f"amqp://{host_ip}:{b.port}", "")
    assert out.startswith("FAILED"), out
    line = wait_for_log(b, "connection is not encrypted")
    assert f"peer={ns_ip}:" in line and "--require-encryption" in line, line
    out = client(f"amqps://{host_ip}:{ssl_port}", str(ca_file))
    assert out == "OK from the namespace", out
    assert f"peer={ns_ip}:" in wait_for_log(b, "user=alice@QPID")


# -- tools and qstore.client -----------------------------------------------------------------------


def run_tool(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSTORE_")}
    return subprocess.run(
        [sys.executable, "-m", f"tools.{tool}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


def test_qstore_config_over_tls(brokers: Brokers, pki: Pki, tmp_path: Path) -> None:
    b = start_tls(brokers, pki)
    password_file = tmp_path / "admin.password"
    password_file.write_text(PASSWORDS["admin"] + "\n")
    where = f"admin@ssl:localhost:{b.ssl_port}"
    login = ["-b", where, "--ssl-ca-file", str(pki.ca_file), "--password-file", str(password_file)]
    p = run_tool("qstore_config", *login, "add", "queue", "made-over-tls", "--durable")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    p = run_tool("qstore_config", *login, "queues")
    assert p.returncode == 0 and "made-over-tls" in p.stdout, p.stderr
    assert wait_for_log(b.proc, "user=admin@QPID")
    wrong = ["--ssl-ca-file", str(other_ca_file(tmp_path)), "--password-file", str(password_file)]
    p = run_tool("qstore_config", "-b", where, *wrong, "queues")
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "certificate verify failed" in lines[0], p.stderr
    assert PASSWORDS["admin"] not in p.stderr + p.stdout + b.proc.log()


def test_qstore_client_over_amqps(brokers: Brokers, pki: Pki) -> None:
    b = start_tls(brokers, pki)
    with Connection.establish(b.amqps, ssl_ca_file=str(pki.ca_file), username="bob",
                              password=PASSWORDS["bob"], timeout=T) as conn:  # fmt: skip
        ssn = conn.session()
        ssn.sender("client-q; {create: always}", timeout=T).send(Message(body="c1"), timeout=T)
        msg = ssn.receiver("client-q", timeout=T).fetch(timeout=T)
        assert msg.body == "c1"
        ssn.acknowledge(msg)
        ssn.sync(T)
    assert "user=bob@QPID" in wait_for_log(b.proc, "user=bob@QPID")
