"""The client side of a SASL exchange, for our own outgoing connections (HA links, tools, the
client library), in front of a client `proton.Transport` whose sasl() is never called.

It does what a pip-installed proton client cannot (SCRAM), and checks the server's SCRAM
signature, so a link that logs in with SCRAM also knows it reached a server that holds the
user's credentials.

    client = SaslClient(user="ha", password=secret)
    client.start(); write(client.take_output())
    client.feed(data); write(client.take_output())
    if client.state == "ok": transport.push(client.rest)   # the server's AMQP header, open...
    if client.state == "failed": log(client.failure); close()

A SCRAM login costs the client one PBKDF2 at the server's iteration count (~4-8 ms at the
default 10000) inside feed(); a server asking for more than MAX_ITERATIONS is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from scramp import ScramClient, ScramException

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
from qstore.sasl.names import printable, printable_bytes

PASSWORD_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")  # best first
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
KNOWN_MECHANISMS = (*PASSWORD_MECHANISMS, "EXTERNAL", "ANONYMOUS")
MAX_ITERATIONS = 1_000_000  # a PBKDF2 the client will run for a server (~0.4-0.8 s)


def outcome_name(code: int) -> str:
    """`auth`, `sys`, `sys-perm`, `sys-temp` (the spec's names), or the number."""
    try:
        return Outcome(code).name.lower().replace("_", "-")
    except ValueError:
        return str(code)


class SaslClient(SaslEndpoint):
    """One connection's client side.

    mechanism None picks the best the server offers: SCRAM-SHA-512, SCRAM-SHA-256, PLAIN when
    a user and password are given; else EXTERNAL (a TLS client certificate), then ANONYMOUS.
    A name, or several (a sequence, or one string separated by spaces as qpid's
    `sasl_mechanisms`), limits the choice to those, still best first; the ones that need a
    password are skipped without credentials.

    After a failure, `transient` tells a failure that another attempt may not meet (the server
    closed, answered sys or sys-temp, or broke the protocol) from a refusal that it would meet
    again (wrong credentials, no mechanism in common, a server that cannot prove it holds the
    user's SCRAM credentials): a client retries the first and gives up on the second.
    """

    MAX_FRAMES = 6  # mechanisms, up to two challenges, outcome, and room for empty frames

    def __init__(
        self,
        *,
        user: str | None,
        password: str | None,
        mechanism: str | Sequence[str] | None = None,
        hostname: str | None = None,
    ) -> None:
        super().__init__()
        allowed = _allowed(mechanism)
        credentials = user is not None and password is not None
        by_password = [m for m in allowed or PASSWORD_MECHANISMS if m in PASSWORD_MECHANISMS]
        if allowed is not None and not credentials and len(by_password) == len(allowed):
            raise ValueError(f"SASL mechanism {' '.join(allowed)} needs a user and a password")
        if (user is None) != (password is None) and by_password:
            # Never log in anonymously because half the credentials were lost on the way.
            raise ValueError("a SASL user needs a password (and a password a user)")
        if allowed is not None and not credentials:
            allowed = tuple(m for m in allowed if m not in PASSWORD_MECHANISMS)
        self.user = user
        self._password = password
        self.allowed = allowed  # None: any the credentials allow
        self.hostname = hostname
        self.outcome: int | None = None  # the server's sasl-outcome code, once one came
        self.transient = False  # a failure another attempt may not meet (see the class)
        self.offered: tuple[str, ...] = ()
        self._scram: ScramClient | None = None
        self._server_verified = False
        self._started = False
        self._got_mechanisms = False

    # The transport's contract (broker.net's SaslLayer): a client has no slow check to hand
    # off (its one PBKDF2 for SCRAM runs in `feed`, a few ms per connection).
    pending_check: None = None

    def check_done(self, ok: bool) -> None:
        raise RuntimeError("a SASL client never has a pending check")

    def start(self) -> None:
        """Queue the SASL protocol header (the client speaks first)."""
        if not self._started:
            self._started = True
            self._send(SASL_HEADER)

    # --- the exchange -------------------------------------------------------------------------

    def peer_closed(self) -> None:
        if self.state == "pending":
            self.transient = True  # a server going down, or busy: the next attempt may do
        super().peer_closed()

    def _closed_failure(self) -> str:
        return "SASL: the server closed the connection during authentication"

    def _on_header_bytes(self) -> bool:
        head = bytes(self._in[:HEADER_SIZE])
        if len(head) < HEADER_SIZE:
            if not (SASL_HEADER.startswith(head) or AMQP_HEADER.startswith(head)):
                self.transient = True
                self._fail(f"SASL: the server sent a bad protocol header '{printable_bytes(head)}'")
            return False
        if head == SASL_HEADER:
            del self._in[:HEADER_SIZE]
            return True
        if head == AMQP_HEADER:
            self._fail("SASL: the server does not use SASL (it answered with the AMQP header)")
        else:
            self.transient = True  # not an AMQP server at all: say so, but like a dead port
            self._fail(f"SASL: the server sent a bad protocol header '{printable_bytes(head)}'")
        return False

    def _on_frame(self, frame: SaslFrame) -> None:
        if isinstance(frame, Mechanisms) and not self._got_mechanisms:
            self._on_mechanisms(frame)
        elif isinstance(frame, Challenge) and self.mechanism is not None:
            self._on_challenge(frame.challenge)
        elif isinstance(frame, OutcomeFrame) and self.mechanism is not None:
            self._on_outcome(frame)
        else:
            self._fail(f"SASL: unexpected {frame_name(frame)} from the server")

    def _choose(self, offered: tuple[str, ...]) -> str | None:
        if self.allowed is not None:
            wanted = tuple(m for m in KNOWN_MECHANISMS if m in self.allowed)
        elif self.user is not None and self._password is not None:
            wanted = PASSWORD_MECHANISMS
        else:
            wanted = ("EXTERNAL", "ANONYMOUS")
        return next((m for m in wanted if m in offered), None)

    def _on_mechanisms(self, frame: Mechanisms) -> None:
        self._got_mechanisms = True
        self.offered = frame.mechanisms
        shown = " ".join(printable(m, 40) for m in frame.mechanisms[:16]) or "nothing"
        mech = self._choose(frame.mechanisms)
        if mech is None:
            if self.allowed is not None:
                names = " ".join(self.allowed)
                what = (
                    f"mechanism {names} not offered"
                    if len(self.allowed) == 1
                    else f"none of the mechanisms {names} offered"
                )
                self._fail(f"SASL: {what} by the server (it offers {shown})")
            else:
                self._fail(f"SASL: no usable mechanism offered by the server (it offers {shown})")
            return
        self.mechanism = mech
        if mech in SCRAM_MECHANISMS:
            assert self.user is not None and self._password is not None
            try:
                self._scram = ScramClient([mech], self.user, self._password)
                initial = self._scram.get_client_first().encode("utf-8")
            except ScramException:  # SASLprep refused the name or password; never quote them
                self._fail(f"SASL: the user name or password cannot be used with {mech}")
                return
        elif mech == "PLAIN":
            assert self.user is not None and self._password is not None
            initial = b"\0" + self.user.encode("utf-8") + b"\0" + self._password.encode("utf-8")
        else:  # EXTERNAL: the identity is the certificate's; ANONYMOUS: no trace
            initial = b""
        self._send(encode_frame(Init(mech, initial, self.hostname)))

    def _on_challenge(self, challenge: bytes) -> None:
        scram = self._scram
        if scram is None:
            self._fail(f"SASL: unexpected sasl-challenge for {self.mechanism}")
            return
        try:
            text = challenge.decode("utf-8")
            if scram.stage is None or scram.stage < 2:  # server-first
                scram.set_server_first(text)
                if int(scram.iterations) > MAX_ITERATIONS:
                    self._fail(
                        f"SASL: the server asks for {int(scram.iterations)} SCRAM iterations "
                        f"(more than {MAX_ITERATIONS})"
                    )
                    return
                self._send(encode_frame(Response(scram.get_client_final().encode("utf-8"))))
            elif not self._server_verified:  # server-final sent as a challenge
                scram.set_server_final(text)
                self._server_verified = True
                self._send(encode_frame(Response(b"")))
            else:
                self._fail("SASL: unexpected sasl-challenge after the SCRAM exchange")
        except (ScramException, UnicodeDecodeError) as exc:
            self._scram_failed(exc)

    def _scram_failed(self, exc: Exception) -> None:
        text = str(exc)
        if "signature" in text:
            self._fail(
                "SASL: the server's SCRAM signature does not match "
                "(it does not hold this user's credentials)"
            )
        else:
            self._fail(f"SASL: Authentication failed ({printable(text)})")

    def _on_outcome(self, frame: OutcomeFrame) -> None:
        self.outcome = frame.code
        if frame.code != Outcome.OK:
            # sys and sys-temp: the server failed, not our credentials (spec 5.3.3.6)
            self.transient = frame.code in (Outcome.SYS, Outcome.SYS_TEMP)
            self._fail(f"SASL: Authentication failed (outcome {outcome_name(frame.code)})")
            return
        if self._scram is not None and not self._server_verified:
            if not frame.additional_data:
                self._fail("SASL: the server accepted without its SCRAM signature")
                return
            try:
                self._scram.set_server_final(frame.additional_data.decode("utf-8"))
            except (ScramException, UnicodeDecodeError) as exc:
                self._scram_failed(exc)
                return
            self._server_verified = True
        self._password = None
        self._scram = None
        self._succeed()

    def _fail(self, failure: str) -> None:
        self._password = None
        self._scram = None
        super()._fail(failure)

    def _protocol_error(self, message: str) -> None:
        self.transient = True  # a broken or cut stream, not a refusal
        self._fail(f"SASL: protocol error: {message}")


def _allowed(mechanism: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The mechanisms a caller limits the choice to (None: no limit), each one known."""
    if mechanism is None:
        return None
    names = tuple(mechanism.split() if isinstance(mechanism, str) else mechanism)
    if not names:
        raise ValueError("no SASL mechanism given (an empty list)")
    for name in names:
        if name not in KNOWN_MECHANISMS:
            raise ValueError(f"unknown SASL mechanism {name!r} (known: {KNOWN_MECHANISMS})")
    return names
