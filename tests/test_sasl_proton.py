"""Interop over real sockets on 127.0.0.1 with stock python-qpid-proton (as pip installs it, no
Cyrus): the stock client logs in through SaslServer and then talks AMQP to a stock proton
server transport; SaslClient logs in to SaslServer (SCRAM) and to proton's own SASL server."""

from __future__ import annotations

import pytest
from proton import ConnectionException, Message
from proton.utils import BlockingConnection
from sasl_peers import ProtonSaslServer, SaslFrontServer, sasl_client_connect

from qstore.sasl import DEFAULT_MECHANISMS, SASL_HEADER, SaslClient, SaslServer, UserDb
from qstore.sasl.server import BAD_PASSWORD, NO_SASL, USER_NOT_FOUND

PASSWORD = "s3cret-pw"
TIMEOUT = 10


@pytest.fixture(scope="module")
def users() -> UserDb:
    db = UserDb()
    db.set_password("bob", PASSWORD)
    return db


@pytest.fixture
def auth_server(users: UserDb):
    with SaslFrontServer(lambda: SaslServer(mechanisms=DEFAULT_MECHANISMS, users=users)) as s:
        yield s


@pytest.fixture
def open_server(users: UserDb):
    with SaslFrontServer(
        lambda: SaslServer(mechanisms=DEFAULT_MECHANISMS, users=users, auth=False)
    ) as s:
        yield s


@pytest.mark.parametrize("mechs", ["PLAIN", None])
def test_stock_client_logs_in_with_plain_and_sends(auth_server: SaslFrontServer, mechs) -> None:
    """allowed_mechs None: the stock client picks PLAIN itself from what is offered."""
    conn = BlockingConnection(
        auth_server.url, user="bob", password=PASSWORD, allowed_mechs=mechs, timeout=TIMEOUT
    )
    try:
        conn.create_sender("q").send(Message(body="hello"))
    finally:
        conn.close()
    (seen,) = auth_server.wait_done(1)
    assert (seen.state, seen.user, seen.mechanism) == ("ok", "bob@QPID", "PLAIN")
    assert seen.bodies == ["hello"]  # the bytes after SASL reached proton intact


def test_stock_client_wrong_password_is_unauthorized(auth_server: SaslFrontServer) -> None:
    with pytest.raises(ConnectionException, match="amqp:unauthorized-access"):
        BlockingConnection(
            auth_server.url,
            user="bob",
            password="wrong",
            allowed_mechs="PLAIN",
            timeout=TIMEOUT,
        )
    (seen,) = auth_server.wait_done(1)
    assert (seen.state, seen.failure) == ("failed", BAD_PASSWORD)
    assert "wrong" not in seen.failure


def test_stock_client_unknown_user_is_unauthorized(auth_server: SaslFrontServer) -> None:
    with pytest.raises(ConnectionException, match="amqp:unauthorized-access"):
        BlockingConnection(
            auth_server.url, user="eve", password="x", allowed_mechs="PLAIN", timeout=TIMEOUT
        )
    (seen,) = auth_server.wait_done(1)
    assert (seen.state, seen.failure) == ("failed", USER_NOT_FOUND)


def test_anonymous_stock_client_is_refused_with_auth_on(auth_server: SaslFrontServer) -> None:
    with pytest.raises(ConnectionException, match="amqp:unauthorized-access"):
        BlockingConnection(auth_server.url, timeout=TIMEOUT)
    (seen,) = auth_server.wait_done(1)
    assert seen.state == "failed"
    assert "without choosing a mechanism" in (seen.failure or "")


def test_stock_client_without_sasl_is_refused_with_auth_on(auth_server: SaslFrontServer) -> None:
    """A client that skips SASL (sasl_enabled=False) sends the bare AMQP header."""
    with pytest.raises(ConnectionException):
        BlockingConnection(auth_server.url, sasl_enabled=False, timeout=TIMEOUT)
    (seen,) = auth_server.wait_done(1)
    assert (seen.state, seen.failure) == ("failed", NO_SASL)
    assert seen.sasl_output == SASL_HEADER


def test_open_server_takes_anonymous_plain_and_no_sasl(open_server: SaslFrontServer) -> None:
    BlockingConnection(open_server.url, timeout=TIMEOUT).close()
    BlockingConnection(
        open_server.url, user="carol", password="anything", allowed_mechs="PLAIN", timeout=TIMEOUT
    ).close()
    BlockingConnection(open_server.url, sasl_enabled=False, timeout=TIMEOUT).close()
    seen = open_server.wait_done(3)
    assert [(s.state, s.user, s.mechanism) for s in seen] == [
        ("ok", "anonymous@QPID", "ANONYMOUS"),
        ("ok", "carol@QPID", "PLAIN"),
        ("ok", "anonymous@QPID", None),
    ]
    assert all(s.remote_container for s in seen)  # each reached AMQP open


@pytest.mark.parametrize("mech", [None, "SCRAM-SHA-256", "PLAIN"])
def test_sasl_client_against_sasl_server_over_a_socket(
    auth_server: SaslFrontServer, mech: str | None
) -> None:
    result = sasl_client_connect(
        auth_server.port, SaslClient(user="bob", password=PASSWORD, mechanism=mech)
    )
    assert result.sasl.state == "ok", result.sasl.failure
    assert result.remote_container is not None  # AMQP open answered after SASL
    (seen,) = auth_server.wait_done(1)
    assert (seen.user, seen.mechanism) == ("bob@QPID", mech or "SCRAM-SHA-512")


def test_sasl_client_wrong_password_over_a_socket(auth_server: SaslFrontServer) -> None:
    result = sasl_client_connect(auth_server.port, SaslClient(user="bob", password="nope"))
    assert result.sasl.failure == "SASL: Authentication failed (outcome auth)"
    (seen,) = auth_server.wait_done(1)
    assert seen.failure == BAD_PASSWORD


def test_sasl_client_anonymous_against_proton_sasl_server() -> None:
    with ProtonSaslServer("ANONYMOUS") as server:
        result = sasl_client_connect(server.port, SaslClient(user=None, password=None))
        assert (result.sasl.state, result.sasl.mechanism) == ("ok", "ANONYMOUS")
        assert result.remote_container is not None
        (seen,) = server.wait_done(1)
        assert (seen.state, seen.mechanism, seen.user) == ("ok", "ANONYMOUS", "anonymous")
        assert seen.remote_container == "qstore-sasl-test"


def test_sasl_client_with_credentials_will_not_fall_back_to_anonymous() -> None:
    """Proton's own server (no Cyrus) offers only ANONYMOUS: a client configured with a password
    says so instead of logging in anonymously."""
    with ProtonSaslServer("ANONYMOUS PLAIN") as server:
        result = sasl_client_connect(server.port, SaslClient(user="bob", password=PASSWORD))
        assert result.sasl.failure == (
            "SASL: no usable mechanism offered by the server (it offers ANONYMOUS)"
        )
        server.wait_done(1)
