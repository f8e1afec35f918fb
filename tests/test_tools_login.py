"""The tools' credentials and TLS: options into a login, password sources, one-line refusals.

The parts decided from options alone are checked on the tools' own parsers. What goes on the wire
is checked against real sockets: `SaslPeer` records the SASL login a tool sends and refuses it
(the seed's "Authentication failed"), `Sniffer` shows that an `ssl:` address sends a TLS
ClientHello and never an AMQP header, and `TlsProxy` puts TLS (a CA made by trustme) in front of
a real qstored so that a tool's verified TLS connection is proven end to end.
Until the broker checks passwords itself, those are the refusals there are to see.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
from sasl_peer import SaslPeer
from tls_support import TLS_RECORD, Sniffer, TlsProxy

from qstore.urls import Address
from tools import qstore_config, qstore_ha, qstore_stat
from tools._errors import UsageError
from tools._login import TlsSettings, check_mechanism, parse_broker_url
from tools._mgmt import ManagementClient, ToolError, login_of, query_status

ROOT = Path(__file__).resolve().parent.parent
TOOL_TIMEOUT = 30.0
SECRET = "s3cret-Pw"
NO_ENV: dict[str, str] = {}


def login(argv: list[str], env: dict[str, str] | None = None, parser: Any = None) -> Any:
    ns = (parser or qstore_config.build_parser()).parse_args(argv)
    return login_of(ns, NO_ENV if env is None else env)


def usage_error(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(UsageError) as info:
        login(argv, env)
    text = str(info.value)
    assert "\n" not in text and SECRET not in text
    return text


def run_tool(tool: str, *args: str, env: dict[str, str] | None = None) -> Any:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QSTORE_")}
    return subprocess.run(
        [sys.executable, "-m", f"tools.{tool}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env={**base, **(env or {})},
    )


def one_line(p: Any, code: int) -> str:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert SECRET not in p.stderr + p.stdout
    return lines[0]


# -- options into a login -------------------------------------------------------------------------


def test_credentials_in_the_seed_url() -> None:
    got = login(["-b", f"admin/{SECRET}@127.0.0.1:5673", "queues"])
    assert (got.user, got.password, got.mechanism) == ("admin", SECRET, "PLAIN")
    assert got.addresses == (Address("tcp", "127.0.0.1", 5673),)
    assert got.tls is None
    assert SECRET not in repr(got)


def test_options_before_or_after_the_verb() -> None:
    before = ["--sasl-mechanism", "plain", "--password-file", "/f", "-b", "u@h:1"]
    after = ["-b", "u@h:1", "--sasl-mechanism", "plain", "--password-file", "/f"]
    p = qstore_config.build_parser()
    a = p.parse_args([*before, "del", "queue", "q"])
    b = p.parse_args(["del", "queue", "q", *after])
    c = p.parse_args(["--sasl-mechanism", "plain", "del", "queue", "q", "--password-file", "/f"])
    for ns in (a, b, c):
        assert (ns.sasl_mechanism, ns.password_file) == ("plain", "/f")
    ha = qstore_ha.build_parser(False).parse_args(["status", "--ssl-ca-file", "ca.pem"])
    assert ha.ssl_ca_file == "ca.pem"
    assert qstore_ha.find_verb(["--password-file", "status", "ping"]) == "ping"
    st = qstore_stat.build_parser().parse_args(["-b", "u/p@ssl:h:1", "-q", "--ssl-ca-file", "c"])
    assert st.views == ["queues"] and st.ssl_ca_file == "c" and st.broker.user == "u"


def test_password_sources_in_order(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(f"{SECRET}\n")
    env = {"QSTORE_USER": "envuser", "QSTORE_PASSWORD": "envpw"}
    # The URL's password first, then the file, then the environment; the URL's user first.
    assert login(["-b", "u/x@h", "queues"], env).password == "x"
    got = login(["-b", "u@h", "--password-file", str(pw), "queues"], env)
    assert (got.user, got.password) == ("u", SECRET)
    got = login(["-b", "h", "queues"], env)
    assert (got.user, got.password, got.mechanism) == ("envuser", "envpw", "PLAIN")
    got = login(["-b", "h", "--password-file", str(pw), "queues"], {"QSTORE_USER": "e"})
    assert (got.user, got.password) == ("e", SECRET)
    # A password in the environment alone names nobody: an anonymous login.
    got = login(["-b", "h", "queues"], {"QSTORE_PASSWORD": "p"})
    assert (got.user, got.password, got.mechanism) == (None, None, None)


def test_usage_errors_are_one_line_and_never_show_the_password(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(SECRET)
    assert usage_error(["-b", "bob@h", "queues"]) == (
        "no password for user bob: give it as -b bob/PASS@HOST, in --password-file FILE or in "
        "$QSTORE_PASSWORD"
    )
    assert "no password for user envuser" in usage_error(["queues"], {"QSTORE_USER": "envuser"})
    assert "give the password once" in usage_error(
        ["-b", f"u/{SECRET}@h", "--password-file", str(pw), "queues"]
    )
    assert "--password-file needs a user" in usage_error(["--password-file", str(pw), "queues"])
    assert usage_error(["-b", "u@h", "--password-file", str(tmp_path / "none"), "queues"]) == (
        f"password file {tmp_path / 'none'}: no such file"
    )
    assert "PLAIN needs a user" in usage_error(["--sasl-mechanism", "PLAIN", "queues"])
    assert "EXTERNAL needs a client certificate" in usage_error(
        ["-b", "ssl:h", "--sasl-mechanism", "EXTERNAL", "queues"]
    )
    assert "unknown SASL mechanism 'DIGEST-MD5'" in usage_error(
        ["--sasl-mechanism", "DIGEST-MD5", "queues"]
    )
    # TLS options where no address is TLS would silently not be used.
    assert "no broker address is ssl:" in usage_error(["--ssl-ca-file", "ca.pem", "queues"])
    assert "--ssl-key-file needs --ssl-cert-file" in usage_error(
        ["-b", "ssl:h", "--ssl-key-file", "k.pem", "queues"]
    )


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "scram-sha-512", "SCRAM-SHA-1"])
def test_scram_is_refused_before_connecting(mech: str) -> None:
    text = usage_error(["-b", f"u/{SECRET}@h", "--sasl-mechanism", mech, "queues"])
    assert text.startswith(f"SASL mechanism {mech.upper()} is not available in this tool")
    with pytest.raises(UsageError):
        ManagementClient([Address("tcp", "h")], user="u", password="p", mechanism=mech)
    with pytest.raises(UsageError):  # not taken for "no answer": a promote would trust that
        query_status("127.0.0.1:1", 1.0, user="u", password="p", mechanism=mech)
    assert check_mechanism("external") == "EXTERNAL"


def test_tls_settings_from_ssl_addresses() -> None:
    got = login(["-b", "ssl:h:5671", "queues"])
    assert got.tls == TlsSettings() and got.mechanism is None
    got = login(["-b", "amqps://u:p@h", "--ssl-ca-file", "ca.pem", "queues"])
    assert got.addresses == (Address("ssl", "h", 5671),) and got.tls == TlsSettings("ca.pem")
    got = login(["-b", "ssl:h", "--ssl-cert-file", "c.pem", "--ssl-key-file", "k.pem", "queues"])
    assert got.tls == TlsSettings(None, "c.pem", "k.pem")
    assert got.mechanism == "EXTERNAL"  # the certificate is who we are
    got = login(["-b", "ssl:h", "--ssl-cert-file", "c", "--sasl-mechanism", "ANONYMOUS", "queues"])
    assert got.mechanism == "ANONYMOUS"


def test_bad_broker_url_error_hides_the_password() -> None:
    import argparse

    for text in (f"admin/{SECRET}@h:99999", f"admin/{SECRET}:5672", f"amqp://a:{SECRET}@"):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            parse_broker_url(text)
        assert SECRET not in str(info.value), str(info.value)
    p = run_tool("qstore_config", "-b", f"admin/{SECRET}@h:99999", "queues")
    assert p.returncode == 2 and SECRET not in p.stderr and "admin/****@h:99999" in p.stderr


def test_tls_files_checked_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--ssl-ca-file .*missing.pem: no such file$"):
        TlsSettings(str(tmp_path / "missing.pem")).domain()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(UsageError, match="not a PEM CA certificate"):
        TlsSettings(str(junk)).domain()


# -- what reaches the wire ------------------------------------------------------------------------


def test_failed_login_is_one_line_with_what_was_sent(tmp_path: Path) -> None:
    """Each password source reaches the broker as PLAIN's \\0user\\0password, and the refusal
    is the seed's line, exit 1, no traceback, no password."""
    pwfile = tmp_path / "pw"
    pwfile.write_text(f"{SECRET}\nnot this line\n")
    with SaslPeer(("SCRAM-SHA-256", "PLAIN", "ANONYMOUS")) as peer:
        where = f"127.0.0.1:{peer.port}"
        runs = [
            ("qstore_config", ["-b", f"admin/{SECRET}@{where}", "queues"], {}),
            ("qstore_stat", ["--broker", f"admin@{where}", "--password-file", str(pwfile)], {}),
            ("qstore_ha", ["status", "-b", where], {"QSTORE_USER": "admin", "QSTORE_PASSWORD": SECRET}),  # noqa: E501
            ("qstore_config", ["-b", f"amqp://admin:{SECRET}@{where}", "exchanges"], {}),
        ]  # fmt: skip
        for tool, args, env in runs:
            line = one_line(run_tool(tool, *args, env=env), 1)
            prog = tool.replace("_", "-")
            assert line == (
                f"{prog}: cannot connect to {where}: amqp:unauthorized-access: "
                "Authentication failed"
            )
        logins = peer.wait_for(len(runs))
    assert [(x.mechanism, x.response) for x in logins] == [
        ("PLAIN", f"\0admin\0{SECRET}".encode())
    ] * len(runs)


def test_query_status_logs_in_with_the_credentials_given() -> None:
    with SaslPeer(("PLAIN",)) as peer:
        assert query_status(f"127.0.0.1:{peer.port}", 5.0, user="ha", password=SECRET) is None
        assert query_status(f"ha/{SECRET}@127.0.0.1:{peer.port}", 5.0) is None
        logins = peer.wait_for(2)
    assert [x.response for x in logins] == [f"\0ha\0{SECRET}".encode()] * 2


def test_scram_tool_exits_2_without_connecting() -> None:
    with Sniffer() as sniffer:
        p = run_tool(
            "qstore_ha",
            "--sasl-mechanism",
            "SCRAM-SHA-256",
            "-b",
            f"admin/{SECRET}@127.0.0.1:{sniffer.port}",
            "ping",
        )
        line = one_line(p, 2)
        assert line.startswith("qstore-ha: SASL mechanism SCRAM-SHA-256 is not available")
        assert sniffer.wait_for(1, timeout=0.5) == []


def test_ssl_address_never_falls_back_to_plain_tcp() -> None:
    with Sniffer() as sniffer:
        where = f"127.0.0.1:{sniffer.port}"
        for tool, args in (
            ("qstore_config", ["-b", f"ssl:{where}", "queues"]),
            ("qstore_ha", ["-b", f"amqps://{where}", "status"]),
        ):
            line = one_line(run_tool(tool, *args), 1)
            assert line.startswith(f"{tool.replace('_', '-')}: cannot connect to ssl:{where}: TLS")
        first = sniffer.wait_for(2)
    assert len(first) == 2
    assert all(f[0] == TLS_RECORD for f in first), first  # a ClientHello, never "AMQP"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_broker(broker_proc: Any, ca: trustme.CA) -> Any:
    """A real broker behind TLS with a certificate for localhost signed by `ca`."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    with TlsProxy(ctx, broker_proc.port) as proxy:
        yield proxy


def test_tls_end_to_end_verified_against_the_ca(
    tls_broker: TlsProxy, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    where = f"localhost:{tls_broker.port}"
    p = run_tool("qstore_config", "-b", f"ssl:{where}", "--ssl-ca-file", str(ca_file), "queues")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    p = run_tool("qstore_ha", "status", "--ssl-ca-file", str(ca_file), "-b", f"amqps://{where}")
    assert p.returncode == 0 and p.stdout.strip() == "standalone", p.stderr
    assert [h.error for h in tls_broker.handshakes] == [None, None]
    assert all(h.first.startswith(b"AMQP") and h.relayed > 100 for h in tls_broker.handshakes)


def test_tls_wrong_ca_or_ip_is_one_line(tls_broker: TlsProxy, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    line = one_line(
        run_tool(
            "qstore_config",
            "-b",
            f"ssl:localhost:{tls_broker.port}",
            "--ssl-ca-file",
            str(other),
            "queues",
        ),
        1,
    )
    assert line == (
        f"qstore-config: cannot connect to ssl:localhost:{tls_broker.port}: TLS handshake failed: "
        "certificate verify failed (the certificate is not signed by --ssl-ca-file's CA, or does "
        "not name the host)"
    )
    # No CA file: the system's CAs, which do not know this test's CA.
    line = one_line(run_tool("qstore_stat", "-b", f"ssl:localhost:{tls_broker.port}", "-q"), 1)
    assert "certificate verify failed" in line


def test_tls_ip_address_hint(tls_broker: TlsProxy, ca: trustme.CA, tmp_path: Path) -> None:
    """proton matches a certificate's host names, never its IP addresses: connecting to an IP
    fails even with the right CA (and a certificate naming that IP), so the line says why."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with pytest.raises(ToolError) as info:
        ManagementClient(
            [Address("ssl", "127.0.0.1", tls_broker.port)],
            ssl=TlsSettings(str(ca_file)),
            timeout=10,
        )
    assert "connect by a name the certificate holds, e.g. ssl:localhost:PORT" in str(info.value)


def test_client_certificate_and_external(ca: trustme.CA, tmp_path: Path) -> None:
    """With --ssl-cert-file the tool presents its certificate (the server sees it) and logs in
    with EXTERNAL by default."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ca.issue_cert("tool@example.com")
    cert = tmp_path / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with SaslPeer(("EXTERNAL", "PLAIN"), context=server) as peer:
        args = ["-b", f"ssl:localhost:{peer.port}", "--ssl-ca-file", str(ca_file)]
        line = one_line(run_tool("qstore_config", *args, "--ssl-cert-file", str(cert), "queues"), 1)
        assert line.endswith("amqp:unauthorized-access: Authentication failed")
        # Without a certificate, the server's CERT_REQUIRED ends the handshake.
        one_line(run_tool("qstore_config", *args, "queues"), 1)
        logins = peer.wait_for(2)
    assert logins[0].mechanism == "EXTERNAL" and logins[0].tls_error is None
    assert logins[0].peer_cert is not None
    assert ("email", "tool@example.com") in [
        tuple(x) for x in logins[0].peer_cert.get("subjectAltName", ())
    ]
    assert logins[1].tls_error is not None and logins[1].mechanism is None


def test_login_of_default_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QSTORE_USER", raising=False)
    got = login_of(qstore_config.build_parser().parse_args(["queues"]))
    assert got.addresses == (Address("tcp", "127.0.0.1", 5672),) and got.user is None
