"""The server side of one connection's SASL exchange, in front of proton's transport.

Proton as pip installs it (no Cyrus) cannot check a password, so the broker speaks SASL itself
and hands proton only the bytes from the client's AMQP header on (`rest`), on a
`Transport(Transport.SERVER)` whose sasl() is never called. SCRAM comes from scramp, working
from the stored keys; PLAIN is checked against the stored SCRAM-SHA-256 keys by a PBKDF2 that
the caller runs in a worker thread (`pending_check`), so a stream of bad passwords cannot stall
the event loop.

    server = SaslServer(mechanisms=DEFAULT_MECHANISMS, users=db)
    server.feed(data); write(server.take_output())
    if server.pending_check: ok = await to_thread(server.pending_check); server.check_done(ok)
    if server.state == "ok": transport.push(server.rest)   # identity in server.user
    if server.state == "failed": write(server.take_output()); log(server.failure); close()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scramp import ScramException, ScramMechanism
from scramp.utils import ServerError

from qstore.sasl.endpoint import SaslEndpoint
from qstore.sasl.frames import (
    AMQP_HEADER,
    HEADER_SIZE,
    SASL_HEADER,
    Challenge,
    Init,
    Mechanisms,
    Outcome,
    OutcomeFrame,
    Response,
    SaslFrame,
    encode_frame,
    frame_name,
)
from qstore.sasl.names import (
    REALM,
    BadUserName,
    identity,
    normalize_user,
    printable,
    printable_bytes,
)
from qstore.sasl.userdb import Credentials, UserDb, verify_plain

SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
KNOWN_MECHANISMS = (*SCRAM_MECHANISMS, "PLAIN", "EXTERNAL", "ANONYMOUS")
# What a broker passes: each connection offers the subset its mode allows (see SaslServer).
DEFAULT_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN", "EXTERNAL", "ANONYMOUS")

AUTH_FAILED = "SASL: Authentication failed: "
USER_NOT_FOUND = AUTH_FAILED + "user not found"
BAD_PASSWORD = AUTH_FAILED + "password verification failed"
NO_SASL = "SASL: client did not authenticate (sent the AMQP header without SASL)"


class SaslServer(SaslEndpoint):
    """One connection's server side.

    Offers those of `mechanisms` the mode allows, in their order: with auth=True SCRAM-SHA-256,
    SCRAM-SHA-512 and PLAIN (when there is a user database), never ANONYMOUS; with auth=False
    (qpidd's auth=no) ANONYMOUS and PLAIN, PLAIN taking the name unchecked. EXTERNAL in both
    modes only when `external_id` (the verified TLS client certificate's identity) is given.

    After "ok": `user` is the identity ("name@QPID"), `mechanism` the mechanism (None for a
    client that skipped SASL under auth=False) and `rest` the bytes for proton. After "failed":
    `failure` is one log line without any secret, and `take_output()` holds the last bytes to
    write (a sasl-outcome, or the SASL header for a peer that never spoke SASL) before closing.
    """

    def __init__(
        self,
        *,
        mechanisms: Sequence[str],
        users: UserDb | None,
        realm: str = REALM,
        auth: bool = True,
        external_id: str | None = None,
    ) -> None:
        super().__init__()
        unknown = [m for m in mechanisms if m not in KNOWN_MECHANISMS]
        if unknown:
            raise ValueError(f"unknown SASL mechanisms {unknown} (known: {KNOWN_MECHANISMS})")
        self.users = users
        self.realm = realm
        self.auth = auth
        self.external_id = external_id
        self.offered: tuple[str, ...] = tuple(
            dict.fromkeys(m for m in mechanisms if self._allowed(m))
        )
        if not self.offered:
            raise ValueError(f"none of {list(mechanisms)} can be offered (auth={auth})")
        self.user: str | None = None
        self.attempted_user: str | None = None  # the name the client gave, escaped, for logs
        self.pending_check: Callable[[], bool] | None = None
        self._pending_identity: str | None = None
        self._next_response: Callable[[bytes], None] | None = None

    def _allowed(self, mechanism: str) -> bool:
        if mechanism == "EXTERNAL":
            return self.external_id is not None
        if not self.auth:
            return mechanism in ("ANONYMOUS", "PLAIN")
        return self.users is not None and mechanism in (*SCRAM_MECHANISMS, "PLAIN")

    # --- the caller's side --------------------------------------------------------------------

    def check_done(self, ok: bool) -> None:
        """The result of `pending_check` (called on the event loop, after the worker returned).
        Ignored if the exchange already ended meanwhile (abort, a misbehaving peer)."""
        if self.state != "pending":
            return
        if self.pending_check is None:
            raise RuntimeError("check_done() without a pending check")
        self.pending_check = None
        self._paused = False
        if ok:
            assert self._pending_identity is not None
            self._accept(self._pending_identity)
        else:
            self._refuse(BAD_PASSWORD)

    def abort(self, failure: str, outcome: Outcome = Outcome.SYS_TEMP) -> None:
        """End a pending exchange from outside (e.g. too many checks in flight): the client gets
        `outcome` (sys-temp by default: try again later)."""
        if self.state == "pending":
            self._refuse(failure, outcome)

    # --- the exchange -------------------------------------------------------------------------

    def _closed_failure(self) -> str:
        if not self._header_done:
            return "SASL: client closed the connection before sending a protocol header"
        if self.mechanism is None:
            # A stock client with no mechanism in common (e.g. no user given, auth on) does this.
            offered = " ".join(self.offered)
            return (
                "SASL: client closed the connection without choosing a mechanism "
                f"(offered {offered})"
            )
        return f"SASL: client closed the connection during {self.mechanism} authentication"

    def _on_header_bytes(self) -> bool:
        head = bytes(self._in[:HEADER_SIZE])
        if len(head) < HEADER_SIZE:
            if not (SASL_HEADER.startswith(head) or AMQP_HEADER.startswith(head)):
                self._bad_header(head)
            return False
        if head == SASL_HEADER:
            del self._in[:HEADER_SIZE]
            self._send(SASL_HEADER + encode_frame(Mechanisms(self.offered)))
            return True
        if head == AMQP_HEADER and not self.auth:
            self.user = identity("anonymous", self.realm)
            self._succeed()  # the header itself goes to proton
            return False
        if head == AMQP_HEADER:
            self._send(SASL_HEADER)
            self._fail(NO_SASL)
            return False
        self._bad_header(head)
        return False

    def _bad_header(self, head: bytes) -> None:
        """A peer that does not speak AMQP with SASL: answer with the header we speak (so an
        AMQP peer sees a protocol mismatch) and stop."""
        self._send(SASL_HEADER)
        self._fail(f"SASL: bad protocol header '{printable_bytes(head)}' (expected AMQP SASL)")

    def _on_frame(self, frame: SaslFrame) -> None:
        if self._next_response is None:
            if not isinstance(frame, Init):
                self._refuse(f"SASL: expected sasl-init, got {frame_name(frame)}")
                return
            self._on_init(frame)
            return
        if not isinstance(frame, Response):
            self._refuse(f"SASL: expected sasl-response, got {frame_name(frame)}")
            return
        step, self._next_response = self._next_response, None
        step(frame.response)

    def _on_init(self, init: Init) -> None:
        mech = init.mechanism
        if mech not in self.offered:
            self._refuse(f"SASL: unsupported mechanism {printable(mech)}")
            return
        self.mechanism = mech
        steps: dict[str, Callable[[bytes], None]] = {
            "ANONYMOUS": self._anonymous,
            "EXTERNAL": self._external,
            "PLAIN": self._plain,
            "SCRAM-SHA-256": self._scram_first,
            "SCRAM-SHA-512": self._scram_first,
        }
        step = steps[mech]
        if init.initial_response is None and mech in ("PLAIN", *SCRAM_MECHANISMS):
            # The client waits to be asked: an empty challenge asks (RFC 4422 section 5).
            self._send(encode_frame(Challenge(b"")))
            self._next_response = step
            return
        step(init.initial_response or b"")

    def _anonymous(self, _trace: bytes) -> None:
        self._accept(identity("anonymous", self.realm))

    def _external(self, response: bytes) -> None:
        assert self.external_id is not None
        who = identity(self.external_id, self.realm)
        authzid = _utf8(response)
        if authzid is None or (authzid and identity(authzid, self.realm) != who):
            self.attempted_user = printable(authzid or repr(response))
            self._refuse(AUTH_FAILED + "EXTERNAL authorization id does not match the certificate")
            return
        self._accept(who)

    def _plain(self, response: bytes) -> None:
        parts = response.split(b"\0")
        texts = [_utf8(p) for p in parts]
        if len(parts) != 3 or any(t is None for t in texts):
            self._refuse(AUTH_FAILED + "malformed PLAIN response")
            return
        authzid, authcid, password = (t or "" for t in texts)
        self.attempted_user = printable(authcid)
        if not self.auth:
            self._plain_unchecked(authzid, authcid)
            return
        try:
            name = normalize_user(self._strip_realm(authcid))
            if authzid and normalize_user(self._strip_realm(authzid)) != name:
                self._refuse(AUTH_FAILED + "authorization id differs from the user")
                return
        except BadUserName:
            self._refuse(USER_NOT_FOUND)
            return
        assert self.users is not None
        creds = self.users.credentials(name, "SCRAM-SHA-256")
        if creds is None:
            self._refuse(USER_NOT_FOUND)
            return
        self._pending_identity = identity(name, self.realm)
        self.pending_check = _plain_check(creds, password)
        self._paused = True

    def _plain_unchecked(self, authzid: str, authcid: str) -> None:
        """auth=False: the name is taken as given (qpidd's auth=no), but must still be a name
        fit for logs and ACL rules."""
        if authzid and identity(authzid, self.realm) != identity(authcid, self.realm):
            self._refuse(AUTH_FAILED + "authorization id differs from the user")
            return
        bare, _at, realm = authcid.partition("@")
        try:
            normalize_user(bare)
        except BadUserName:
            self._refuse(AUTH_FAILED + "bad user name")
            return
        if realm and any(not c.isprintable() or c.isspace() for c in realm):
            self._refuse(AUTH_FAILED + "bad user name")
            return
        self._accept(identity(authcid, self.realm))

    def _strip_realm(self, name: str) -> str:
        suffix = "@" + self.realm
        return name[: -len(suffix)] if name.endswith(suffix) else name

    # --- SCRAM (scramp) -----------------------------------------------------------------------

    def _scram_first(self, client_first: bytes) -> None:
        assert self.mechanism is not None and self.users is not None
        users, mech, found = self.users, self.mechanism, []

        def lookup(username: str) -> Credentials | None:
            self.attempted_user = printable(username)
            creds = users.credentials(self._strip_realm(username), mech)
            if creds is not None:
                found.append(identity(normalize_user(self._strip_realm(username)), self.realm))
            return creds

        text = _utf8(client_first)
        if text is None:
            self._refuse(AUTH_FAILED + "malformed SCRAM message (not UTF-8)")
            return
        scram = ScramMechanism(mech).make_server(lookup)
        try:
            scram.set_client_first(text)
            server_first = scram.get_server_first()
        except ScramException as exc:
            if exc.server_error == ServerError.UNKNOWN_USER:
                self._refuse(USER_NOT_FOUND)
            else:
                self._refuse(AUTH_FAILED + f"malformed SCRAM message ({printable(str(exc))})")
            return
        self._send(encode_frame(Challenge(server_first.encode("utf-8"))))

        def final(client_final: bytes) -> None:
            text = _utf8(client_final)
            if text is None:
                self._refuse(AUTH_FAILED + "malformed SCRAM message (not UTF-8)")
                return
            try:
                scram.set_client_final(text)
                server_final = scram.get_server_final()
            except ScramException as exc:
                if exc.server_error == ServerError.INVALID_PROOF:
                    self._refuse(BAD_PASSWORD)
                else:
                    self._refuse(AUTH_FAILED + f"malformed SCRAM message ({printable(str(exc))})")
                return
            # The server's proof rides in the outcome's additional-data (AMQP 1.0 5.3.3.6).
            self._accept(found[0], server_final.encode("utf-8"))

        self._next_response = final

    # --- endings ------------------------------------------------------------------------------

    def _accept(self, who: str, additional_data: bytes | None = None) -> None:
        self._send(encode_frame(OutcomeFrame(Outcome.OK, additional_data)))
        self.user = who
        self._next_response = None
        self._succeed()

    def _refuse(self, failure: str, outcome: Outcome = Outcome.AUTH) -> None:
        """Fail and tell the client: a sasl-outcome once the headers were exchanged (before
        that, our header is all the client can read)."""
        if self._header_done:
            self._send(encode_frame(OutcomeFrame(outcome)))
        else:
            self._send(SASL_HEADER)
        self._fail(failure)

    def _fail(self, failure: str) -> None:
        self.pending_check = None  # drops the closure holding the password
        self._next_response = None
        super()._fail(failure)

    def _protocol_error(self, message: str) -> None:
        self._refuse(f"SASL: protocol error: {message}")


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _plain_check(creds: Credentials, password: str) -> Callable[[], bool]:
    """The PBKDF2 check as a closure for a worker thread; it holds the password only until it
    is dropped (check_done clears it)."""

    def check() -> bool:
        return verify_plain(creds, password)

    return check
