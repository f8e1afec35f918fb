"""qstore.client over TLS: `amqps://` and `ssl:` URLs, verified, never plain TCP.

Until the broker has a TLS listener, `TlsProxy` terminates TLS (a CA made by trustme) in front of
a real qstored, so messages make the whole trip through the client's TLS path; `Sniffer` is a
plain port that shows what an `ssl:` URL sends there (a ClientHello, never an AMQP header), and
`SaslPeer` behind TLS shows the login the client sends (EXTERNAL with a client certificate).
Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from proton import Message
from sasl_peer import SaslPeer
from tls_support import TLS_RECORD, Sniffer, TlsProxy

from qstore.client import AuthenticationError, Connection, ConnectionError, TlsError

T = 10.0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def tls_broker(broker_proc: Any, ca: trustme.CA) -> Iterator[TlsProxy]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    with TlsProxy(ctx, broker_proc.port) as proxy:
        yield proxy


def test_amqps_round_trip_through_tls(tls_broker: TlsProxy, ca_file: str) -> None:
    """Messages from 1 byte to 1 MB both ways, each body many TLS records."""
    q = f"q-{uuid.uuid4().hex[:8]}"
    sizes = [1, 100, 16_000, 16_385, 70_000, 1_000_000] * 3
    with Connection.establish(
        f"amqps://127.0.0.1:{tls_broker.port}", ssl_ca_file=ca_file, timeout=T
    ) as conn:
        ssn = conn.session()
        snd = ssn.sender(f"{q}; {{create: always}}", timeout=T)
        for i, n in enumerate(sizes):
            snd.send(Message(body=bytes([i]) * n), timeout=T)
        rcv = ssn.receiver(q, timeout=T)
        for i, n in enumerate(sizes):
            msg = rcv.fetch(timeout=T)
            assert msg.body == bytes([i]) * n
            ssn.acknowledge(msg)
        ssn.sync(T)
    assert len(tls_broker.handshakes) == 1
    hs = tls_broker.handshakes[0]
    assert hs.error is None and hs.first.startswith(b"AMQP") and hs.relayed > sum(sizes)


def test_seed_ssl_prefix_and_host_name(tls_broker: TlsProxy, ca_file: str) -> None:
    for url in (f"ssl:localhost:{tls_broker.port}", f"amqp:ssl:127.0.0.1:{tls_broker.port}"):
        conn = Connection.establish(url, ssl_ca_file=ca_file, timeout=T)
        assert conn.connected
        conn.close(timeout=2)
    assert [h.error for h in tls_broker.handshakes] == [None, None]


def test_own_context(tls_broker: TlsProxy, ca: trustme.CA) -> None:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with Connection.establish(f"ssl:127.0.0.1:{tls_broker.port}", ssl_context=ctx, timeout=T) as c:
        assert c.connected


def test_wrong_ca_is_a_tls_error_never_retried(tls_broker: TlsProxy) -> None:
    """The system's CAs do not know this test's CA; reconnect does not retry a certificate."""
    started = time.monotonic()
    with pytest.raises(TlsError) as info:
        Connection.establish(
            f"amqps://127.0.0.1:{tls_broker.port}", reconnect=True, reconnect_timeout=30, timeout=T
        )
    assert time.monotonic() - started < 5
    text = str(info.value)
    assert text.startswith(f"ssl:127.0.0.1:{tls_broker.port}: TLS certificate verification failed")
    assert "\n" not in text
    time.sleep(0.3)  # a retry would show as a second handshake
    assert len(tls_broker.handshakes) == 1


def test_host_name_not_in_the_certificate(tls_broker: TlsProxy, ca_file: str) -> None:
    """The certificate names localhost and 127.0.0.1: ::1 is not one of its names."""
    proxy_on_v6 = _v6_forward(tls_broker.port)
    if proxy_on_v6 is None:
        pytest.skip("no IPv6 loopback")
    with proxy_on_v6 as v6, pytest.raises(TlsError, match="IP address mismatch"):
        Connection.establish(f"ssl:[::1]:{v6.port}", ssl_ca_file=ca_file, timeout=T)


def test_ssl_never_falls_back_to_plain_tcp(ca_file: str) -> None:
    with Sniffer() as sniffer:
        for url in (f"ssl:127.0.0.1:{sniffer.port}", f"amqps://127.0.0.1:{sniffer.port}"):
            with pytest.raises(ConnectionError) as info:
                Connection.establish(url, ssl_ca_file=ca_file, timeout=T)
            assert "TLS handshake failed" in str(info.value)
        first = sniffer.wait_for(2)
    assert len(first) == 2 and all(f[0] == TLS_RECORD for f in first), first


def test_handshake_is_bounded_by_the_connect_timeout(ca_file: str) -> None:
    """A peer that accepts the TCP connection and never answers the ClientHello."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="TLS handshake timed out"):
            Connection.establish(f"ssl:127.0.0.1:{port}", ssl_ca_file=ca_file, connect_timeout=0.5)
        assert time.monotonic() - started < 3


def test_tls_options_that_cannot_apply(tmp_path: Path, ca_file: str) -> None:
    with pytest.raises(ValueError, match="no URL is ssl: or amqps://"):
        Connection("127.0.0.1:5672", ssl_ca_file=ca_file)
    with pytest.raises(ValueError, match="either ssl_context or"):
        Connection("ssl:h", ssl_context=ssl.create_default_context(), ssl_ca_file=ca_file)
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match=r"^ssl_ca_file .*missing.pem: No such file"):
        Connection("ssl:h", ssl_ca_file=str(missing))
    with pytest.raises(ValueError, match="ssl_key_file needs ssl_cert_file"):
        Connection("ssl:h", ssl_key_file=ca_file)


def test_client_certificate_logs_in_with_external(ca: trustme.CA, tmp_path: Path) -> None:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED
    cert = tmp_path / "client.pem"
    ca.issue_cert("app@example.com").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with SaslPeer(("EXTERNAL", "PLAIN", "ANONYMOUS"), context=server) as peer:
        url = f"ssl:localhost:{peer.port}"
        with pytest.raises(AuthenticationError):
            Connection.establish(url, ssl_ca_file=str(ca_file), ssl_cert_file=str(cert), timeout=T)
        with pytest.raises(AuthenticationError):  # a user and password: PLAIN, inside TLS
            Connection.establish(
                f"amqps://app:pw%401@localhost:{peer.port}",
                ssl_ca_file=str(ca_file),
                ssl_cert_file=str(cert),
                timeout=T,
            )
        logins = peer.wait_for(2)
    assert [(x.mechanism, x.response) for x in logins] == [
        ("EXTERNAL", b""),  # no authorization id: the broker takes the certificate's identity
        ("PLAIN", b"\0app\0pw@1"),
    ]
    assert ("email", "app@example.com") in logins[0].peer_cert["subjectAltName"]


class _Forward:
    """TCP on [::1] relayed to 127.0.0.1:`target` (bytes untouched)."""

    def __init__(self, listener: socket.socket, target: int) -> None:
        self.listener, self.target = listener, target
        self.port = listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._run = threading.Thread(target=self._accept, daemon=True)
        self._run.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            up = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            for a, b in ((conn, up), (up, conn)):
                t = threading.Thread(target=_pipe, args=(a, b), daemon=True)
                self._threads.append(t)
                t.start()

    def __enter__(self) -> _Forward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self._run.join(5)
        for t in self._threads:
            t.join(5)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    src.settimeout(5)
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _v6_forward(target: int) -> _Forward | None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        return None
    listener.settimeout(10)
    return _Forward(listener, target)
