"""How a tool logs in to a broker: credentials and TLS, taken the seed's way.

    -b [amqp:][USER[/PASS]@]ADDR[,ADDR...]     ADDR = [tcp:|ssl:]HOST[:PORT]
    -b amqp[s]://[USER[:PASS]@]HOST[:PORT]      the usual URL form (amqps: TLS everywhere)
    --sasl-mechanism PLAIN|ANONYMOUS|EXTERNAL
    --password-file FILE                        the password is the file's first line
    QSTORE_USER, QSTORE_PASSWORD                 environment, when -b names no user / password
    --ssl-ca-file PEM                           the CAs that sign the brokers' certificates
    --ssl-cert-file PEM [--ssl-key-file PEM]    a client certificate (for EXTERNAL)

An `ssl:` address is TLS or nothing: the broker's certificate is verified against `--ssl-ca-file`
(the system's CAs without it) and must name the host connected to; there is no fall-back to plain
TCP. The tools run on pip's python-qpid-proton, whose SASL client knows PLAIN, ANONYMOUS and
EXTERNAL only (no Cyrus, so no SCRAM): asking for another mechanism is a usage error, found before
connecting, rather than a refusal from the broker that would not say why.

Everything here is decided from the options and the environment alone (`resolve_login`), so it is
tested without a broker; `_mgmt.ManagementClient` turns the result into a proton connection.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proton import SSLDomain, SSLException

from qstore.secrets import SecretError, read_password_file
from qstore.urls import Address, BrokerUrl, UrlError, mask_password, parse_client_url
from tools._errors import UsageError

SUPPORTED_MECHANISMS = ("PLAIN", "ANONYMOUS", "EXTERNAL")
ENV_USER = "QSTORE_USER"
ENV_PASSWORD = "QSTORE_PASSWORD"
_URL_FORMS = "[USER[/PASS]@]HOST[:PORT][,...] or amqp[s]://[USER[:PASS]@]HOST[:PORT]"


@dataclass(frozen=True)
class TlsSettings:
    """A TLS client's files. No CA file: the system's trusted CAs. No key file: the key is in
    the certificate's file."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def domain(self) -> SSLDomain:
        """A proton client domain that verifies the peer's certificate and name; `UsageError`
        naming the option whose file is unusable."""
        for option, path in (
            ("--ssl-ca-file", self.ca_file),
            ("--ssl-cert-file", self.cert_file),
            ("--ssl-key-file", self.key_file),
        ):
            if path is not None and not os.access(path, os.R_OK):
                why = "no such file" if not os.path.exists(path) else "not readable"
                raise UsageError(f"{option} {path}: {why}")
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        try:
            if self.ca_file:
                domain.set_trusted_ca_db(self.ca_file)
                domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME, self.ca_file)
            else:
                domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
        except SSLException:
            raise UsageError(f"--ssl-ca-file {self.ca_file}: not a PEM CA certificate") from None
        if self.cert_file:
            try:
                domain.set_credentials(self.cert_file, self.key_file or self.cert_file, None)
            except SSLException:
                raise UsageError(
                    f"--ssl-cert-file {self.cert_file}: not a PEM certificate with its key"
                    + (f" in --ssl-key-file {self.key_file}" if self.key_file else "")
                ) from None
        return domain


@dataclass(frozen=True)
class Login:
    """What a tool connects with: the addresses, who it is, how it proves it, and TLS."""

    addresses: tuple[Address, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    mechanism: str | None = None
    tls: TlsSettings | None = None


def check_mechanism(text: str | None) -> str | None:
    """A mechanism this client can do, in capitals; `UsageError` for any other."""
    if text is None:
        return None
    mech = text.strip().upper()
    if mech in SUPPORTED_MECHANISMS:
        return mech
    if mech.startswith("SCRAM-"):
        raise UsageError(
            f"SASL mechanism {mech} is not available in this tool (python-qpid-proton from pip "
            "has no Cyrus SASL): use PLAIN, over an ssl: address to keep the password off the "
            "wire, or EXTERNAL with a client certificate"
        )
    raise UsageError(
        f"unknown SASL mechanism {text.strip()!r} (this tool can do "
        f"{', '.join(SUPPORTED_MECHANISMS)})"
    )


def parse_broker_url(text: str) -> BrokerUrl:
    """`-b` value with optional credentials; the error never shows a password."""
    try:
        return parse_client_url(text)
    except UrlError as exc:
        if "@" not in text and "/" in text.split("//", 1)[-1]:
            # USER/PASS without "@": the address part would show the password; say less.
            raise argparse.ArgumentTypeError(
                f"bad broker address (not shown, it may hold a password): expected {_URL_FORMS}"
            ) from None
        raise argparse.ArgumentTypeError(
            f"bad broker address {mask_password(text)!r}: {exc}"
        ) from None


def add_login_options(parser: argparse.ArgumentParser) -> None:
    """The options `resolve_login` reads; SUPPRESS defaults so that a subparser repeating them
    (options after the verb) does not overwrite a value given before the verb."""
    parser.add_argument(
        "--sasl-mechanism",
        metavar="MECH",
        default=argparse.SUPPRESS,
        help="SASL mechanism: PLAIN (default with a user), EXTERNAL (default with a client "
        "certificate and no user) or ANONYMOUS",
    )
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"the password is FILE's first line (else in -b USER/PASS@..., else ${ENV_PASSWORD})",
    )
    parser.add_argument(
        "--ssl-ca-file",
        metavar="PEM",
        default=argparse.SUPPRESS,
        help="CA certificates that sign the brokers' certificates (for ssl: addresses; "
        "default: the system's)",
    )
    parser.add_argument(
        "--ssl-cert-file",
        metavar="PEM",
        default=argparse.SUPPRESS,
        help="client certificate for TLS (allows --sasl-mechanism EXTERNAL)",
    )
    parser.add_argument(
        "--ssl-key-file",
        metavar="PEM",
        default=argparse.SUPPRESS,
        help="the client certificate's private key (default: in --ssl-cert-file)",
    )


def resolve_login(
    ns: argparse.Namespace, url: BrokerUrl, env: Mapping[str, str] | None = None
) -> Login:
    """The login for `url` from the options in `ns` and the environment; `UsageError` (one line,
    never the password) when they cannot work together."""
    env = os.environ if env is None else env
    mechanism = check_mechanism(getattr(ns, "sasl_mechanism", None))
    password_file: str | None = getattr(ns, "password_file", None)
    ca, cert, key = (getattr(ns, f"ssl_{k}_file", None) for k in ("ca", "cert", "key"))
    tls_wanted = any(a.transport == "ssl" for a in url.addresses)
    if key and not cert:
        raise UsageError("--ssl-key-file needs --ssl-cert-file")
    if (ca or cert) and not tls_wanted:
        option = "--ssl-ca-file" if ca else "--ssl-cert-file"
        raise UsageError(
            f"{option} is for TLS, but no broker address is ssl: (write -b ssl:HOST:PORT or "
            "amqps://HOST:PORT)"
        )
    tls = TlsSettings(ca, cert, key) if tls_wanted else None

    if mechanism in ("ANONYMOUS", "EXTERNAL"):
        if mechanism == "EXTERNAL" and not cert:
            raise UsageError(
                "--sasl-mechanism EXTERNAL needs a client certificate: --ssl-cert-file PEM "
                "and an ssl: address"
            )
        return Login(url.addresses, None, None, mechanism, tls)

    user = url.user or env.get(ENV_USER) or None
    if url.password is not None and password_file is not None:
        raise UsageError("give the password once: in -b USER/PASS@... or with --password-file")
    password = url.password
    if password is None and password_file is not None:
        if user is None:
            raise UsageError(
                f"--password-file needs a user: -b USER@HOST or ${ENV_USER} (the password "
                "alone says nobody)"
            )
        try:
            password = read_password_file(password_file)
        except SecretError as exc:
            raise UsageError(str(exc)) from None
    if password is None and user is not None:
        password = env.get(ENV_PASSWORD) or None
    if user is not None and password is None:
        raise UsageError(
            f"no password for user {user}: give it as -b {user}/PASS@HOST, in --password-file "
            f"FILE or in ${ENV_PASSWORD}"
        )
    if mechanism == "PLAIN" and user is None:
        raise UsageError(f"--sasl-mechanism PLAIN needs a user: -b USER@HOST or ${ENV_USER}")
    if mechanism is None:
        mechanism = "PLAIN" if user else ("EXTERNAL" if cert else None)
    return Login(url.addresses, user, password, mechanism, tls)


def describe_addresses(addresses: Sequence[Address]) -> str:
    """How an error names where it tried: host:port, with ssl: kept so TLS is visible."""
    return ",".join(a.hostport if a.transport == "tcp" else str(a) for a in addresses)
