"""SaslServer and SaslClient talking to each other in-process, bytes through, and each of them
against a peer that misbehaves (frames built by hand)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scramp import ScramMechanism

from qstore.sasl import (
    AMQP_HEADER,
    DEFAULT_MECHANISMS,
    MAX_SASL_FRAME,
    SASL_HEADER,
    Outcome,
    SaslClient,
    SaslServer,
    UserDb,
)
from qstore.sasl.frames import (
    Challenge,
    Init,
    Mechanisms,
    OutcomeFrame,
    Response,
    SaslFrame,
    decode_frame,
    encode_frame,
    split_frame,
)
from qstore.sasl.server import BAD_PASSWORD, NO_SASL, USER_NOT_FOUND
from qstore.sasl.userdb import UserRecord

PASSWORD = "correct horse"
OPEN = b"\x00\x00\x00\x1e\x02\x00\x00\x00 pretend this is an open frame"


@pytest.fixture(scope="module")
def users() -> UserDb:
    db = UserDb()
    db.set_password("bob", PASSWORD)
    db.set_password("alice", "another one")
    return db


def frames_in(data: bytes) -> list[SaslFrame]:
    """The SASL frames in server or client output (after a SASL header, if any)."""
    if data.startswith(SASL_HEADER):
        data = data[len(SASL_HEADER) :]
    out = []
    while data:
        n = split_frame(data)
        assert n, "output ends in a partial frame"
        frame = decode_frame(data[:n])
        assert frame is not None
        out.append(frame)
        data = data[n:]
    return out


def in_a_worker(check: Callable[[], bool]) -> bool:
    """Run a password check in a thread, as the broker does (off its event loop)."""
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(check()))
    worker.start()
    worker.join(10)
    assert result, "the password check did not finish"
    return result[0]


def exchange(server: SaslServer, client: SaslClient, max_rounds: int = 10) -> None:
    """Pass bytes both ways until both sides are done (or the client gives up); a PLAIN check
    runs in a worker thread, as the broker runs it."""
    client.start()
    for _ in range(max_rounds):
        out = client.take_output()
        if out:
            server.feed(out)
        if server.pending_check is not None:
            server.check_done(in_a_worker(server.pending_check))
        out = server.take_output()
        if out:
            client.feed(out)
        if server.state != "pending" and client.state != "pending":
            return
        if client.state == "failed" and not client.take_output():
            return  # the client closes; the server would see EOF
    raise AssertionError(f"no end after {max_rounds} rounds: {server.state} {client.state}")


def new_server(users: UserDb, **kw) -> SaslServer:
    kw.setdefault("mechanisms", DEFAULT_MECHANISMS)
    return SaslServer(users=users, **kw)


def offered(server: SaslServer) -> tuple[str, ...]:
    server.feed(SASL_HEADER)
    (mechs,) = frames_in(server.take_output())
    assert isinstance(mechs, Mechanisms)
    return mechs.mechanisms


# --- success -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "used"),
    [
        (None, "SCRAM-SHA-512"),
        ("SCRAM-SHA-512", "SCRAM-SHA-512"),
        ("SCRAM-SHA-256", "SCRAM-SHA-256"),
        ("PLAIN", "PLAIN"),
    ],
)
@pytest.mark.parametrize("name", ["bob", "bob@QPID"])
def test_password_login(users: UserDb, asked: str | None, used: str, name: str) -> None:
    server = new_server(users)
    client = SaslClient(user=name, password=PASSWORD, mechanism=asked, hostname="h")
    exchange(server, client)
    assert (server.state, server.user, server.mechanism) == ("ok", "bob@QPID", used)
    assert (client.state, client.mechanism) == ("ok", used)
    assert server.rest == b"" and client.rest == b""
    assert server.failure is None and client.failure is None


def test_anonymous_with_auth_off(users: UserDb) -> None:
    server = new_server(users, auth=False)
    client = SaslClient(user=None, password=None)
    exchange(server, client)
    assert (server.state, server.user, server.mechanism) == ("ok", "anonymous@QPID", "ANONYMOUS")


@pytest.mark.parametrize(("name", "who"), [("whoever", "whoever@QPID"), ("x@ELSE", "x@ELSE")])
def test_plain_with_auth_off_takes_the_name_unchecked(users: UserDb, name: str, who: str) -> None:
    server = new_server(users, auth=False)
    client = SaslClient(user=name, password="anything")
    exchange(server, client)
    assert (server.state, server.user, server.mechanism) == ("ok", who, "PLAIN")
    assert server.pending_check is None  # nothing was checked


@pytest.mark.parametrize(
    ("external_id", "who"), [("CN=client", "CN=client@QPID"), ("alice@EXAMPLE", "alice@EXAMPLE")]
)
def test_external(users: UserDb, external_id: str, who: str) -> None:
    server = new_server(users, external_id=external_id)
    assert "EXTERNAL" in offered(new_server(users, external_id=external_id))
    client = SaslClient(user=None, password=None)  # no user: EXTERNAL before ANONYMOUS
    exchange(server, client)
    assert (server.state, server.user, client.mechanism) == ("ok", who, "EXTERNAL")


def test_external_with_a_different_authzid_is_refused(users: UserDb) -> None:
    server = new_server(users, external_id="CN=client")
    server.feed(SASL_HEADER + encode_frame(Init("EXTERNAL", b"admin", None)))
    assert server.state == "failed"
    assert "does not match the certificate" in (server.failure or "")


# --- what is offered ---------------------------------------------------------------------------


def test_offers(users: UserDb) -> None:
    assert offered(new_server(users)) == ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
    assert offered(new_server(users, auth=False)) == ("PLAIN", "ANONYMOUS")
    assert "EXTERNAL" in offered(new_server(users, external_id="CN=x"))
    assert "ANONYMOUS" not in offered(new_server(users, external_id="CN=x"))
    assert offered(new_server(users, mechanisms=["PLAIN"])) == ("PLAIN",)
    with pytest.raises(ValueError, match="unknown SASL mechanisms"):
        new_server(users, mechanisms=["CRAM-MD5"])
    with pytest.raises(ValueError, match="can be offered"):
        new_server(users, mechanisms=["ANONYMOUS"])  # auth on never offers it


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mech", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_wrong_password(users: UserDb, mech: str) -> None:
    server = new_server(users)
    client = SaslClient(user="bob", password="not the password", mechanism=mech)
    exchange(server, client)
    assert (server.state, server.failure, server.user) == ("failed", BAD_PASSWORD, None)
    assert client.state == "failed"
    assert client.failure == "SASL: Authentication failed (outcome auth)"
    assert "not the password" not in (server.failure or "") + (client.failure or "")


@pytest.mark.parametrize("mech", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_unknown_user_fails_at_once(users: UserDb, mech: str) -> None:
    server = new_server(users)
    client = SaslClient(user="mallory", password="x", mechanism=mech)
    client.start()
    server.feed(client.take_output())
    client.feed(server.take_output())  # mechanisms -> sasl-init
    server.feed(client.take_output())
    # No challenge and no password check: the outcome follows the init directly.
    assert server.pending_check is None
    assert frames_in(server.take_output()) == [OutcomeFrame(Outcome.AUTH)]
    assert (server.state, server.failure) == ("failed", USER_NOT_FOUND)
    assert server.attempted_user == "mallory"


def test_mechanism_not_offered(users: UserDb) -> None:
    server = new_server(users, mechanisms=["SCRAM-SHA-256"])
    client = SaslClient(user="bob", password=PASSWORD, mechanism="PLAIN")
    exchange(server, client)
    assert client.failure == (
        "SASL: mechanism PLAIN not offered by the server (it offers SCRAM-SHA-256)"
    )
    assert server.state == "pending"  # the client just goes; the caller then sees EOF
    server.peer_closed()
    assert server.failure == (
        "SASL: client closed the connection without choosing a mechanism (offered SCRAM-SHA-256)"
    )


def test_client_asking_for_an_unoffered_mechanism(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER + encode_frame(Init("ANONYMOUS\nforged log line", b"", None)))
    assert server.state == "failed"
    assert server.failure == "SASL: unsupported mechanism ANONYMOUS\\nforged log line"
    assert frames_in(server.take_output())[-1] == OutcomeFrame(Outcome.AUTH)


def test_anonymous_client_against_auth_on(users: UserDb) -> None:
    client = SaslClient(user=None, password=None)
    exchange(new_server(users), client)
    assert client.failure == (
        "SASL: no usable mechanism offered by the server (it offers SCRAM-SHA-256 SCRAM-SHA-512 "
        "PLAIN)"
    )


def test_plain_with_a_foreign_authzid_is_refused(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER + encode_frame(Init("PLAIN", b"alice\0bob\0" + PASSWORD.encode())))
    assert server.state == "failed" and server.pending_check is None
    assert "authorization id differs" in (server.failure or "")


def test_malformed_plain_response(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER + encode_frame(Init("PLAIN", b"bob-without-separators")))
    assert server.failure == "SASL: Authentication failed: malformed PLAIN response"


def test_malformed_scram_message(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER + encode_frame(Init("SCRAM-SHA-256", b"n,,garbage")))
    assert server.state == "failed"
    assert (server.failure or "").startswith("SASL: Authentication failed: malformed SCRAM")


# --- headers, framing, bounds ------------------------------------------------------------------


def test_plain_amqp_header_with_auth_off_is_anonymous(users: UserDb) -> None:
    server = new_server(users, auth=False)
    server.feed(AMQP_HEADER[:3])
    assert server.state == "pending"
    server.feed(AMQP_HEADER[3:] + OPEN)
    assert (server.state, server.user, server.mechanism) == ("ok", "anonymous@QPID", None)
    assert server.rest == AMQP_HEADER + OPEN  # proton gets the header itself
    assert server.take_output() == b""


def test_plain_amqp_header_with_auth_on_is_refused(users: UserDb) -> None:
    server = new_server(users)
    server.feed(AMQP_HEADER + OPEN)
    assert (server.state, server.failure) == ("failed", NO_SASL)
    assert server.take_output() == SASL_HEADER  # the peer sees a protocol mismatch


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"G", "'G'"),  # refused at the first byte that cannot be AMQP
        (b"GET / HTTP/1.1\r\n", "'GET / HT'"),
        (b"AMQP\x01", "'AMQP\\x01'"),
        (b"AMQP\x01\x01\x00\x0a", "'AMQP\\x01\\x01\\x00\\n'"),  # AMQP 0-10
        (b"AMQP\x03\x01\x00\x01", "'AMQP\\x03\\x01\\x00\\x01'"),
    ],
)
def test_garbage_header(users: UserDb, data: bytes, shown: str) -> None:
    server = new_server(users)
    server.feed(data)
    assert server.state == "failed"
    assert server.failure == f"SASL: bad protocol header {shown} (expected AMQP SASL)"
    assert server.take_output() == SASL_HEADER


def test_oversized_frame_is_refused_before_its_body(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER + (10 * 1024 * 1024).to_bytes(4, "big") + b"\x02\x01\x00\x00")
    assert server.state == "failed"
    assert "exceeds the limit 65536" in (server.failure or "")
    assert frames_in(server.take_output())[-1] == OutcomeFrame(Outcome.AUTH)


def test_flood_while_a_password_check_runs_is_bounded(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER + encode_frame(Init("PLAIN", b"\0bob\0" + PASSWORD.encode())))
    assert server.pending_check is not None
    server.take_output()
    server.feed(b"x" * (MAX_SASL_FRAME // 2))
    assert server.state == "pending"
    server.feed(b"x" * MAX_SASL_FRAME)
    assert server.state == "failed" and "more than" in (server.failure or "")
    assert server.pending_check is None
    server.check_done(True)  # the worker's late answer changes nothing
    assert server.state == "failed" and server.user is None


def test_too_many_frames(users: UserDb) -> None:
    server = new_server(users)
    empty = b"\x00\x00\x00\x08\x02\x01\x00\x00"
    server.feed(SASL_HEADER + empty * 5)
    assert server.state == "failed" and "more than 4 SASL frames" in (server.failure or "")


def test_unexpected_performative(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER + encode_frame(Response(b"hello")))
    assert server.failure == "SASL: expected sasl-init, got sasl-response"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_any_bytes_after_the_header_end_in_a_state(users: UserDb, chunks: list[bytes]) -> None:
    """Whatever a peer sends, the server never raises and never holds more than its bound."""
    server = new_server(users)
    server.feed(SASL_HEADER)
    for chunk in chunks:
        server.feed(chunk)
        assert len(server._in) <= 8 + MAX_SASL_FRAME
    assert server.state in ("pending", "failed", "ok")
    if server.state == "failed":
        assert "\n" not in (server.failure or "")


# --- bytes after the exchange ------------------------------------------------------------------


def test_bytes_after_plain_login_land_in_rest(users: UserDb) -> None:
    """A client that pipelines its AMQP header and open behind sasl-init: the bytes wait while
    the password is checked, then go to proton."""
    server = new_server(users)
    init = encode_frame(Init("PLAIN", b"\0bob\0" + PASSWORD.encode()))
    server.feed(SASL_HEADER + init + AMQP_HEADER)
    assert server.pending_check is not None
    server.feed(OPEN)  # arrives during the check
    server.check_done(server.pending_check())
    assert (server.state, server.user, server.rest) == ("ok", "bob@QPID", AMQP_HEADER + OPEN)
    assert frames_in(server.take_output())[-1] == OutcomeFrame(Outcome.OK)
    server.feed(b"more")
    assert server.rest == AMQP_HEADER + OPEN + b"more"


def test_bytes_after_the_outcome_land_in_the_clients_rest(users: UserDb) -> None:
    server = new_server(users)
    client = SaslClient(user="bob", password=PASSWORD, mechanism="SCRAM-SHA-256")
    client.start()
    server.feed(client.take_output())
    client.feed(server.take_output())
    server.feed(client.take_output())
    client.feed(server.take_output())
    server.feed(client.take_output())
    assert server.state == "ok"
    # The server's outcome and its AMQP header and open in one write.
    client.feed(server.take_output() + AMQP_HEADER + OPEN)
    assert (client.state, client.rest) == ("ok", AMQP_HEADER + OPEN)


def test_abort_sends_sys_temp(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER + encode_frame(Init("PLAIN", b"\0bob\0" + PASSWORD.encode())))
    server.take_output()
    server.abort("SASL: too many logins in progress")
    assert (server.state, server.failure) == ("failed", "SASL: too many logins in progress")
    assert frames_in(server.take_output()) == [OutcomeFrame(Outcome.SYS_TEMP)]


def test_abort_before_the_header_sends_only_the_header(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER[:4])
    server.abort("SASL: busy")
    assert server.take_output() == SASL_HEADER


def test_peer_closing_during_a_check_drops_it(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER + encode_frame(Init("PLAIN", b"\0bob\0" + PASSWORD.encode())))
    server.take_output()
    assert server.pending_check is not None
    server.peer_closed()
    assert server.pending_check is None and server.take_output() == b""
    assert server.failure == "SASL: client closed the connection during PLAIN authentication"
    server.check_done(True)
    assert server.state == "failed"


def test_server_asks_with_an_empty_challenge_when_no_initial_response(users: UserDb) -> None:
    server = new_server(users)
    server.feed(SASL_HEADER + encode_frame(Init("PLAIN", None, None)))
    assert frames_in(server.take_output())[-1] == Challenge(b"")
    server.feed(encode_frame(Response(b"\0bob\0" + PASSWORD.encode())))
    server.check_done(server.pending_check())
    assert (server.state, server.user) == ("ok", "bob@QPID")


# --- the client checks the server --------------------------------------------------------------


def test_client_refuses_a_server_that_does_not_hold_the_server_key(users: UserDb) -> None:
    """A server that learnt the stored key (enough to accept the client's proof) but not the
    server key cannot produce the signature: the client refuses it."""
    real = users.credentials("bob", "SCRAM-SHA-256")
    assert real is not None
    salt, stored_key, _server_key, iterations = real
    keys = {m: (stored_key, b"\0" * 32) for m in ("SCRAM-SHA-256",)}
    keys["SCRAM-SHA-512"] = (b"\0" * 64, b"\0" * 64)
    impostor_db = UserDb({"bob": UserRecord(iterations, salt, keys)})
    server = new_server(impostor_db)
    client = SaslClient(user="bob", password=PASSWORD, mechanism="SCRAM-SHA-256")
    exchange(server, client)
    assert server.state == "ok"  # the proof matched the stored key
    assert client.state == "failed"
    assert client.failure == (
        "SASL: the server's SCRAM signature does not match "
        "(it does not hold this user's credentials)"
    )


def _scramp_server(users: UserDb, mech: str):
    return ScramMechanism(mech).make_server(lambda name: users.credentials(name, mech))


def test_client_accepts_server_final_as_a_challenge(users: UserDb) -> None:
    """Servers built on Cyrus send the server-final message as a challenge and the outcome
    without additional data; the client answers with an empty response."""
    scram = _scramp_server(users, "SCRAM-SHA-256")
    client = SaslClient(user="bob", password=PASSWORD, mechanism="SCRAM-SHA-256")
    client.start()
    client.feed(SASL_HEADER + encode_frame(Mechanisms(("SCRAM-SHA-256",))))
    (init,) = frames_in(client.take_output()[len(SASL_HEADER) :])
    assert isinstance(init, Init) and init.initial_response
    scram.set_client_first(init.initial_response.decode())
    client.feed(encode_frame(Challenge(scram.get_server_first().encode())))
    (response,) = frames_in(client.take_output())
    assert isinstance(response, Response)
    scram.set_client_final(response.response.decode())
    client.feed(encode_frame(Challenge(scram.get_server_final().encode())))
    assert frames_in(client.take_output()) == [Response(b"")]
    client.feed(encode_frame(OutcomeFrame(Outcome.OK)))
    assert client.state == "ok"


def test_client_refuses_ok_without_a_scram_signature(users: UserDb) -> None:
    scram = _scramp_server(users, "SCRAM-SHA-256")
    client = SaslClient(user="bob", password=PASSWORD, mechanism="SCRAM-SHA-256")
    client.start()
    client.feed(SASL_HEADER + encode_frame(Mechanisms(("SCRAM-SHA-256",))))
    (init,) = frames_in(client.take_output()[len(SASL_HEADER) :])
    scram.set_client_first(init.initial_response.decode())
    client.feed(encode_frame(Challenge(scram.get_server_first().encode())))
    client.take_output()
    client.feed(encode_frame(OutcomeFrame(Outcome.OK)))
    assert client.failure == "SASL: the server accepted without its SCRAM signature"


def test_client_refuses_a_huge_iteration_count() -> None:
    client = SaslClient(user="bob", password=PASSWORD, mechanism="SCRAM-SHA-256")
    client.start()
    client.feed(SASL_HEADER + encode_frame(Mechanisms(("SCRAM-SHA-256",))))
    (init,) = frames_in(client.take_output()[len(SASL_HEADER) :])
    nonce = init.initial_response.decode().split("r=")[1]
    first = f"r={nonce}srv,s=c2FsdHNhbHRzYWx0,i=9000000"
    client.feed(encode_frame(Challenge(first.encode())))
    assert client.state == "failed" and "9000000 SCRAM iterations" in (client.failure or "")
    assert client.take_output() == b""  # no PBKDF2 run, nothing sent


@pytest.mark.parametrize(
    ("data", "failure"),
    [
        (AMQP_HEADER, "SASL: the server does not use SASL (it answered with the AMQP header)"),
        (b"HTTP/1.1 400", "SASL: the server sent a bad protocol header 'HTTP/1.1'"),
        (b"X", "SASL: the server sent a bad protocol header 'X'"),
    ],
)
def test_client_against_a_server_without_sasl(data: bytes, failure: str) -> None:
    client = SaslClient(user=None, password=None)
    client.start()
    client.feed(data)
    assert (client.state, client.failure) == ("failed", failure)


@pytest.mark.parametrize(
    ("asked", "credentials", "auth", "used"),
    [
        ("PLAIN SCRAM-SHA-256", True, True, "SCRAM-SHA-256"),  # best first, not the given order
        (["SCRAM-SHA-512", "PLAIN"], True, True, "SCRAM-SHA-512"),
        ("PLAIN ANONYMOUS", False, False, "ANONYMOUS"),  # no credentials: PLAIN is skipped
        ("PLAIN ANONYMOUS", True, False, "PLAIN"),
    ],
)
def test_client_limited_to_several_mechanisms(
    users: UserDb, asked: str | list[str], credentials: bool, auth: bool, used: str
) -> None:
    server = new_server(users, auth=auth)
    user, password = ("bob", PASSWORD) if credentials else (None, None)
    client = SaslClient(user=user, password=password, mechanism=asked)
    exchange(server, client)
    assert (client.state, client.mechanism, server.mechanism) == ("ok", used, used)


def test_client_none_of_several_mechanisms_offered(users: UserDb) -> None:
    client = SaslClient(user="bob", password=PASSWORD, mechanism="EXTERNAL ANONYMOUS")
    exchange(new_server(users), client)
    assert client.state == "failed" and not client.transient
    assert client.failure == (
        "SASL: none of the mechanisms EXTERNAL ANONYMOUS offered by the server "
        "(it offers SCRAM-SHA-256 SCRAM-SHA-512 PLAIN)"
    )


@pytest.mark.parametrize(
    ("replies", "transient"),
    [
        ([encode_frame(OutcomeFrame(Outcome.AUTH))], False),  # these credentials: refused
        ([encode_frame(OutcomeFrame(Outcome.SYS_PERM))], False),
        ([encode_frame(OutcomeFrame(Outcome.SYS_TEMP))], True),  # the server, for now
        ([encode_frame(OutcomeFrame(Outcome.SYS))], True),
        ([b"\x00\x00\x00\x08\x02\x07\x00\x00"], True),  # not a SASL frame: a broken stream
        ([], True),  # the server hung up (below)
    ],
)
def test_client_tells_a_transient_failure_from_a_refusal(
    replies: list[bytes], transient: bool
) -> None:
    client = SaslClient(user="bob", password="x", mechanism="PLAIN")
    client.start()
    client.feed(SASL_HEADER + encode_frame(Mechanisms(("PLAIN",))))
    for data in replies:
        client.feed(data)
    if not replies:
        client.peer_closed()
    assert (client.state, client.transient) == ("failed", transient), client.failure


@pytest.mark.parametrize(("data", "transient"), [(AMQP_HEADER, False), (b"HTTP/1.1", True)])
def test_client_against_a_non_sasl_server_is_transient_only_for_garbage(
    data: bytes, transient: bool
) -> None:
    client = SaslClient(user=None, password=None)
    client.start()
    client.feed(data)
    assert (client.state, client.transient) == ("failed", transient)


def test_client_reports_the_outcome_code() -> None:
    client = SaslClient(user="bob", password="x", mechanism="PLAIN")
    client.start()
    client.feed(SASL_HEADER + encode_frame(Mechanisms(("PLAIN",))))
    client.feed(encode_frame(OutcomeFrame(Outcome.SYS_TEMP)))
    assert client.failure == "SASL: Authentication failed (outcome sys-temp)"


def test_client_constructor_checks() -> None:
    with pytest.raises(ValueError, match="needs a user and a password"):
        SaslClient(user=None, password=None, mechanism="PLAIN")
    with pytest.raises(ValueError, match="unknown SASL mechanism"):
        SaslClient(user="a", password="b", mechanism="GSSAPI")
    with pytest.raises(ValueError, match="needs a password"):
        SaslClient(user="a", password=None)
    with pytest.raises(ValueError, match="needs a password"):  # half the credentials: not lost
        SaslClient(user="a", password=None, mechanism="PLAIN ANONYMOUS")
    with pytest.raises(ValueError, match="needs a user and a password"):
        SaslClient(user=None, password=None, mechanism=["SCRAM-SHA-256", "PLAIN"])
    with pytest.raises(ValueError, match="empty"):
        SaslClient(user="a", password="b", mechanism="  ")
    SaslClient(user="a", password=None, mechanism="EXTERNAL")  # the certificate is the identity
