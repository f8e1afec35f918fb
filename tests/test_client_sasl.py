"""qstore.client logs in with our SASL client (qstore.sasl), not proton's: SCRAM when the broker
offers it, PLAIN only when asked or when nothing better is offered, ANONYMOUS without
credentials, EXTERNAL with a client certificate. Real qstored processes (`--auth yes` unless
said), real sockets; `Tap` relays a client's bytes to the broker and keeps a copy, which is how a
test sees whether the password crossed the wire. The broker's "opened" line names the mechanism.

Every wait is bounded; brokers are stopped by the harness, also on failure.
"""

from __future__ import annotations

import select
import socket
import time
import uuid
from pathlib import Path

import pytest
import trustme
from broker_harness import BrokerProcess, Brokers
from proton import Message
from security_support import PASSWORDS, SecureCluster, secure_args, start_secure, wait_for_log
from tls_support import Sniffer, ThreadedServer

from qstore.client import AuthenticationError, Connection
from recovery.localcluster import free_ports

T = 10.0  # bound on every blocking call
ALICE = PASSWORDS["alice"]


class Tap(ThreadedServer):
    """A TCP relay on 127.0.0.1 to `target` that keeps what clients sent (`sent`) and counts
    the connections it accepted."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sent = bytearray()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with socket.create_connection(("127.0.0.1", self.target), timeout=T) as up:
            while not self._stop.is_set():
                for src in select.select([conn, up], [], [], 0.1)[0]:
                    data = src.recv(65536)
                    if not data:
                        return
                    if src is conn:
                        self.sent += data
                    (up if src is conn else conn).sendall(data)


def round_trip(conn: Connection, body: str) -> None:
    """Send `body` (acknowledged by the broker) to a fresh queue and fetch it back."""
    ssn = conn.session()
    queue = f"q-{uuid.uuid4().hex[:8]}; {{create: always, node: {{durable: True}}}}"
    ssn.sender(queue, timeout=T).send(Message(body=body, durable=True), sync=True, timeout=T)
    assert ssn.receiver(queue, timeout=T).fetch(timeout=T).body == body
    ssn.acknowledge()
    ssn.sync(timeout=T)


def opened_line(broker: BrokerProcess, container: str) -> str:
    """The broker's "opened" log line for the client connection `container`."""
    return wait_for_log(broker, f"container={container} ")


@pytest.mark.parametrize(
    ("asked", "used"),
    [
        (None, "SCRAM-SHA-512"),
        ("SCRAM-SHA-256", "SCRAM-SHA-256"),
        ("SCRAM-SHA-512", "SCRAM-SHA-512"),
    ],
)
def test_scram_login_keeps_the_password_off_the_wire(
    brokers: Brokers, asked: str | None, used: str
) -> None:
    b = start_secure(brokers)
    cid = f"c-{uuid.uuid4().hex[:8]}"
    with Tap(b.port) as tap:
        url = f"alice/{ALICE}@127.0.0.1:{tap.port}"
        with Connection.establish(url, sasl_mechanisms=asked, container_id=cid, timeout=T) as c:
            assert c.sasl_mechanism == used
            round_trip(c, "by " + used)
        line = opened_line(b, cid)
        assert f"mechanism={used} user=alice@QPID opened" in line, line
        assert tap.sent.startswith(b"AMQP\x03\x01\x00\x00")  # SASL first: nothing of proton's
        assert b"alice" in tap.sent  # the tap sees the login: the user name, not the password
        assert ALICE.encode() not in tap.sent


def test_plain_when_asked_sends_the_password(brokers: Brokers) -> None:
    b = start_secure(brokers)
    cid = f"c-{uuid.uuid4().hex[:8]}"
    with Tap(b.port) as tap:
        url = f"alice/{ALICE}@127.0.0.1:{tap.port}"
        with Connection.establish(url, sasl_mechanisms="PLAIN", container_id=cid, timeout=T) as c:
            assert c.sasl_mechanism == "PLAIN"
            round_trip(c, "by PLAIN")
        assert "mechanism=PLAIN user=alice@QPID opened" in opened_line(b, cid)
        assert b"\0alice\0" + ALICE.encode() in tap.sent  # what SCRAM spares


def test_several_mechanisms_allowed_take_the_best_offered(brokers: Brokers) -> None:
    b = start_secure(brokers)
    url = f"alice/{ALICE}@{b.url}"
    with Connection.establish(url, sasl_mechanisms="PLAIN SCRAM-SHA-256", timeout=T) as c:
        assert c.sasl_mechanism == "SCRAM-SHA-256"


@pytest.mark.parametrize(("user", "password"), [("alice", "not-her-password"), ("mallory", "x")])
def test_a_refused_login_is_an_authentication_error_never_retried(
    brokers: Brokers, user: str, password: str
) -> None:
    b = start_secure(brokers)
    with Tap(b.port) as tap:
        t0 = time.monotonic()
        with pytest.raises(AuthenticationError, match="unauthorized-access") as err:
            Connection.establish(
                f"{user}/{password}@127.0.0.1:{tap.port}",
                reconnect=True,
                reconnect_interval_max=0.05,
                timeout=T,
            )
        assert time.monotonic() - t0 < T
        assert "SASL: Authentication failed (outcome auth)" in str(err.value)
        assert err.value.condition == "amqp:unauthorized-access"
        assert tap.connections == 1  # the I/O thread is gone: nobody tries again
    assert password not in str(err.value)
    wait_for_log(b, "SASL: Authentication failed")


def test_no_mechanism_in_common_is_an_authentication_error(brokers: Brokers) -> None:
    b = start_secure(brokers)
    with pytest.raises(AuthenticationError, match="no usable mechanism offered") as err:
        Connection.establish(b.url, reconnect=True, timeout=T)  # no user: ANONYMOUS, EXTERNAL
    assert "SCRAM-SHA-256" in str(err.value)  # what the broker offers
    with pytest.raises(AuthenticationError, match="mechanism EXTERNAL not offered"):
        Connection.establish(b.url, sasl_mechanisms="EXTERNAL", timeout=T)


def test_options_that_cannot_log_in_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="unknown SASL mechanism 'GSSAPI'"):
        Connection("127.0.0.1", sasl_mechanisms="GSSAPI")
    with pytest.raises(ValueError, match="needs a user and a password"):
        Connection("127.0.0.1", sasl_mechanisms="SCRAM-SHA-256")
    with pytest.raises(ValueError, match="needs a password"):
        Connection("alice@127.0.0.1")


def test_anonymous_against_auth_no(brokers: Brokers) -> None:
    b = brokers.start(args=["--auto-create", "yes"])  # the harness starts brokers with --auth no
    cid = f"c-{uuid.uuid4().hex[:8]}"
    with Connection.establish(b.url, container_id=cid, timeout=T) as c:
        assert c.sasl_mechanism == "ANONYMOUS"
        round_trip(c, "anonymous")
    assert "mechanism=ANONYMOUS user=anonymous@QPID opened" in opened_line(b, cid)


def test_a_broker_hanging_up_during_the_login_is_a_failed_attempt(brokers: Brokers) -> None:
    """Unlike a refusal: a peer that closes mid-login sends us to the next URL."""
    b = start_secure(brokers)
    with Sniffer() as sniffer:
        url = f"alice/{ALICE}@127.0.0.1:{sniffer.port}"
        with Connection.establish(url, reconnect_urls=[b.url], timeout=T) as c:
            assert c.url == b.url and c.sasl_mechanism == "SCRAM-SHA-512"
        assert sniffer.wait_for(1) == [b"AMQP\x03\x01\x00\x00"]


def test_fail_over_in_an_authenticated_cluster(brokers: Brokers) -> None:
    c = SecureCluster(brokers, 2)
    assert c.promote(0)[0] == 200
    c.wait_state(1, "ready")
    primary, backup = (f"127.0.0.1:{p}" for p in c.ports)
    cid = f"c-{uuid.uuid4().hex[:8]}"
    # The backup first: it logs us in, then drops the socket at our open; on to the primary.
    conn = Connection.establish(
        f"alice/{ALICE}@{backup}",
        reconnect=True,
        reconnect_urls=[primary],
        reconnect_interval_max=0.2,
        container_id=cid,
        heartbeat=1,
        timeout=T,
    )
    try:
        assert conn.url == primary and conn.sasl_mechanism == "SCRAM-SHA-512"
        assert "mechanism=SCRAM-SHA-512 user=alice@QPID opened" in opened_line(c.members[0], cid)
        ssn = conn.session()
        queue = "orders; {create: always, node: {durable: True}}"
        ssn.sender(queue, timeout=T).send(Message(body="order-1", durable=True), timeout=T)
        ssn.sync(timeout=T)
        rcv = ssn.receiver(queue, timeout=T)
        c.members[0].kill()
        assert c.promote(1)[0] == 200
        assert rcv.fetch(timeout=2 * T).body == "order-1"
        ssn.acknowledge()
        ssn.sync(timeout=T)
        assert conn.url == backup and conn.reconnects >= 1
        assert conn.sasl_mechanism == "SCRAM-SHA-512"
        assert "mechanism=SCRAM-SHA-512 user=alice@QPID opened" in opened_line(c.members[1], cid)
    finally:
        conn.close(timeout=2)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_tls_client_certificate_logs_in_with_external(
    brokers: Brokers, ca: trustme.CA, tmp_path: Path
) -> None:
    """A real broker's TLS listener: the certificate alone logs in (EXTERNAL, its common name);
    with a user and password as well, SCRAM inside TLS."""
    ca_file, server_pem, client_pem = (tmp_path / n for n in ("ca.pem", "server.pem", "alice.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    leaf = ca.issue_cert("alice@example.com", common_name="alice")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    ssl_port = free_ports(1)[0]
    tls = ["--ssl-cert-file", str(server_pem), "--ssl-ca-file", str(ca_file)]
    b = brokers.start(
        args=secure_args(tmp_path, "--auto-create", "yes", "--ssl-port", str(ssl_port), *tls)
    )
    opts = {"ssl_ca_file": str(ca_file), "ssl_cert_file": str(client_pem), "timeout": T}
    cid = f"c-{uuid.uuid4().hex[:8]}"
    with Connection.establish(f"ssl:127.0.0.1:{ssl_port}", container_id=cid, **opts) as c:
        assert c.sasl_mechanism == "EXTERNAL"
        round_trip(c, "by certificate")
    assert "mechanism=EXTERNAL user=alice@QPID opened" in opened_line(b, cid)
    url = f"amqps://alice:{ALICE}@127.0.0.1:{ssl_port}"
    with Connection.establish(url, **opts) as c:
        assert c.sasl_mechanism == "SCRAM-SHA-512"
