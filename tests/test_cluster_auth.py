"""The local cluster with authentication: what `qstore-cluster up` makes in its data directory, and
the cluster it runs (real manager, real brokers, stock proton clients, free ports, temp dirs).

The manager runs in a session of its own and is stopped by pid in a finally, with any broker it
left behind (`stop_manager`); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from proton import Message
from proton.utils import BlockingConnection

from qstore.sasl.userdb import UserDb
from recovery.localcluster import broker_pids, consecutive_free_ports, stop_manager
from tools import cluster_auth
from tools._mgmt import query_status

WAIT = 30.0
SECRET_FILES = {cluster_auth.CREDENTIALS, cluster_auth.HA_PASSWORD}


def _until(pred: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the credentials, without brokers ------------------------------------------------------------


def test_first_ensure_makes_private_files_a_shell_can_source(tmp_path: Path) -> None:
    old = os.umask(0)  # whatever the umask, the secrets are 0600 from their first byte
    try:
        made = cluster_auth.ensure(tmp_path, "127.0.0.1:5672")
    finally:
        os.umask(old)
    creds = made.credentials
    assert made.created and made.notes == ()
    assert (creds.user, creds.ha_user) == ("admin", "qstore-ha")
    assert len(creds.password) >= 32 and creds.password != creds.ha_password
    for name in ("credentials", "sasl-db", "ha-password"):
        assert _mode(tmp_path / name) == 0o600, name
    assert (tmp_path / "ha-password").read_text() == creds.ha_password + "\n"
    db = UserDb.load(tmp_path / "sasl-db")
    assert db.users() == ["admin", "qstore-ha"]
    assert db.check_plain("admin", creds.password)
    assert db.check_plain("qstore-ha", creds.ha_password)
    assert not db.check_plain("admin", creds.ha_password)
    text = (tmp_path / "credentials").read_text()
    assert (
        f"# qstore-cluster credentials (keep private). Connect as {creds.url('127.0.0.1:5672')}"
        in text
    )
    assert creds.password not in repr(creds) and creds.ha_password not in repr(creds)
    # a shell loads it, as the README says
    out = subprocess.run(
        ["sh", "-c", 'set -a; . "$1"; set +a; env', "sh", str(tmp_path / "credentials")],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert env["QSTORE_USER"] == "admin" and env["QSTORE_PASSWORD"] == creds.password
    assert env["QSTORE_HA_USER"] == "qstore-ha" and env["QSTORE_HA_PASSWORD"] == creds.ha_password


def test_later_ensure_reuses_and_repairs_and_keeps_other_users(tmp_path: Path) -> None:
    first = cluster_auth.ensure(tmp_path, "127.0.0.1:5672").credentials
    before = {n: (tmp_path / n).read_bytes() for n in ("credentials", "sasl-db")}
    again = cluster_auth.ensure(tmp_path, "127.0.0.1:5672")
    assert not again.created and again.credentials == first
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # untouched
    # a user a person added stays; a lost sasl-db comes back with the same passwords
    db = UserDb.load(tmp_path / "sasl-db")
    db.set_password("carol", "carol-password")
    db.save(tmp_path / "sasl-db")
    (tmp_path / "ha-password").unlink()
    assert cluster_auth.ensure(tmp_path, "x:1").credentials == first
    assert UserDb.load(tmp_path / "sasl-db").users() == ["admin", "carol", "qstore-ha"]
    assert (tmp_path / "ha-password").read_text() == first.ha_password + "\n"
    (tmp_path / "sasl-db").unlink()
    repaired = cluster_auth.ensure(tmp_path, "x:1")
    assert repaired.credentials == first and not repaired.created
    assert any("added admin" in n for n in repaired.notes)
    db = UserDb.load(tmp_path / "sasl-db")
    assert db.check_plain("admin", first.password)
    assert db.check_plain("qstore-ha", first.ha_password)


def test_a_changed_password_in_the_sasl_db(tmp_path: Path) -> None:
    first = cluster_auth.ensure(tmp_path, "127.0.0.1:5672").credentials
    db = UserDb.load(tmp_path / "sasl-db")
    db.set_password("admin", "chosen-by-a-person")
    db.save(tmp_path / "sasl-db")
    notes = cluster_auth.ensure(tmp_path, "x:1").notes  # a note: the manager does not need it
    assert len(notes) == 1 and "admin's password" in notes[0]
    db.set_password("qstore-ha", "another-ha-password")
    db.save(tmp_path / "sasl-db")
    with pytest.raises(cluster_auth.CredentialsError) as err:  # the links would be refused
        cluster_auth.ensure(tmp_path, "x:1")
    text = str(err.value)
    assert "qstore-ha's password" in text and "qstore-passwd" in text and "\n" not in text
    assert first.ha_password not in text and "another-ha-password" not in text


@pytest.mark.parametrize(
    "text, problem",
    [
        ("QSTORE_USER=admin\nQSTORE_PASSWORD=pw-123\nQSTORE_HA_USER=h\n", "no QSTORE_HA_PASSWORD"),
        ("QSTORE_USER=admin\nQSTORE_PASSWORD pw-123\n", "line 2: expected KEY=VALUE"),
    ],
)
def test_a_bad_credentials_file_is_one_line_without_the_password(
    tmp_path: Path, text: str, problem: str
) -> None:
    (tmp_path / "credentials").write_text(text)
    with pytest.raises(cluster_auth.CredentialsError) as err:
        cluster_auth.ensure(tmp_path, "x:1")
    assert problem in str(err.value) and "pw-123" not in str(err.value)


def test_quoted_values_and_export_are_read() -> None:
    creds = cluster_auth.parse(
        "export QSTORE_USER='admin'\nQSTORE_PASSWORD=\"p w\"\nQSTORE_HA_USER=h\n"
        "QSTORE_HA_PASSWORD=hp\n",
        "f",
    )
    assert creds == cluster_auth.ClusterCredentials("admin", "p w", "h", "hp")


def test_the_connect_line_shows_the_password_only_on_a_terminal(tmp_path: Path) -> None:
    creds = cluster_auth.ClusterCredentials("admin", "s3cret", "qstore-ha", "h4")
    shown = cluster_auth.connect_line(creds, "127.0.0.1:5672", tmp_path, show=True)
    hidden = cluster_auth.connect_line(creds, "127.0.0.1:5672", tmp_path, show=False)
    assert (
        shown
        == f"connect as amqp://admin:s3cret@127.0.0.1:5672 (credentials in {tmp_path}/credentials)"
    )
    assert (
        hidden.startswith("connect as amqp://admin:****@127.0.0.1:5672 ") and "s3cret" not in hidden
    )


# -- qstore-cluster up, for real -----------------------------------------------------------------


@contextlib.contextmanager
def cluster_up(root: Path, base: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`qstore-cluster up` on BASE.. in `root`, its output in ROOT/manager.log (a log under the
    data dir, checked for passwords like the brokers' logs); stopped by pid, brokers too."""
    root.mkdir(exist_ok=True)
    log = open(root / "manager.log", "ab")  # noqa: SIM115 - closed in the finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.qstore_cluster", "up", "--data-dir", str(root),
         "--base-port", str(base), "--heartbeat", "0.5", "--poll", "0.1", *extra],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        try:
            stop_manager(proc, root)
        finally:
            log.close()


def states(base: int, login: dict[str, Any]) -> list[str | None]:
    found = [query_status(f"127.0.0.1:{base + i}", 1.0, **login) for i in range(3)]
    return [None if st is None else str(st["state"]) for st in found]


def wait_whole(base: int, login: dict[str, Any], proc: subprocess.Popen[bytes]) -> int:
    """Wait for an active primary and two ready backups; the primary's port."""
    found: list[str | None] = []

    def whole() -> bool:
        assert proc.poll() is None, f"qstore-cluster exited ({proc.returncode})"
        found[:] = states(base, login)
        return sorted(map(str, found)) == ["active", "ready", "ready"]

    _until(whole, "an active primary and two ready backups")
    return base + found.index("active")


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def round_trip(port: int, body: str, **login: Any) -> Any:
    conn = BlockingConnection(f"127.0.0.1:{port}", timeout=10, **login)
    try:
        conn.create_sender("cluster-auth").send(Message(body=body, durable=True))
        rcv = conn.create_receiver("cluster-auth")
        got = rcv.receive(timeout=10).body
        rcv.accept()
        return got
    finally:
        conn.close()


def test_up_requires_a_login_and_keeps_the_passwords_private(tmp_path: Path) -> None:
    root, base = tmp_path / "data", consecutive_free_ports(3)
    with cluster_up(root, base) as proc:
        _until(lambda: (root / "credentials").exists(), "the credentials file", 10)
        creds = cluster_auth.load(root)
        primary = wait_whole(base, creds.ha_login(), proc)
        for name in ("credentials", "sasl-db", "ha-password"):
            assert _mode(root / name) == 0o600, name
        # the admin logs in with a stock proton client; nobody logs in anonymously
        assert round_trip(primary, "as admin", **creds.proton_options()) == "as admin"
        with pytest.raises(Exception, match="unauthorized-access"):
            BlockingConnection(f"127.0.0.1:{primary}", timeout=10).close()
        with pytest.raises(Exception, match="unauthorized-access"):
            BlockingConnection(
                f"127.0.0.1:{primary}", timeout=10, user="admin", password="wrong",
                allowed_mechs="PLAIN",
            ).close()  # fmt: skip
        # the passwords are on no command line: the brokers read the HA one from a file
        pids = [p for p in broker_pids(root) if p]
        assert len(pids) == 3
        for pid in [*pids, proc.pid]:
            line = cmdline(pid)
            assert creds.password.encode() not in line and creds.ha_password.encode() not in line
        for pid in pids:
            args = cmdline(pid).split(b"\0")
            assert args[args.index(b"--ha-password-file") + 1] == os.fsencode(root / "ha-password")
            assert args[args.index(b"--auth") + 1] == b"yes"
        status = subprocess.run(
            [sys.executable, "-m", "tools.qstore_cluster", "status", "--data-dir", str(root)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.returncode == 0 and status.stdout.count("ready") == 2, status.stdout
        assert status.stdout.count("active") == 1
    manager_out = (root / "manager.log").read_text()
    assert "users admin and qstore-ha (created)" in manager_out
    assert f"connect as amqp://admin:****@127.0.0.1:{base} " in manager_out
    # no password in any file under the data dir but the two made to hold them (and the sasl-db
    # holds no password at all): logs, journals, cluster.json
    for path in root.rglob("*"):
        if path.is_file() and path.name not in SECRET_FILES:
            data = path.read_bytes()
            for secret in (creds.password, creds.ha_password):
                assert secret.encode() not in data, f"a password in {path}"
    assert "user=admin@QPID opened" in (root / f"node{primary - base}.log").read_text()

    # a second up on the same data dir reuses the same users and passwords
    kept = {n: (root / n).read_bytes() for n in ("credentials", "sasl-db", "ha-password")}
    with cluster_up(root, base) as proc:
        primary = wait_whole(base, creds.ha_login(), proc)
        assert {n: (root / n).read_bytes() for n in kept} == kept
        assert cluster_auth.load(root) == creds
        assert round_trip(primary, "again", **creds.proton_options()) == "again"
    assert "users admin and qstore-ha (reused)" in (root / "manager.log").read_text()


def test_up_auth_no_is_an_open_cluster(tmp_path: Path) -> None:
    root, base = tmp_path / "data", consecutive_free_ports(3)
    with cluster_up(root, base, "--auth", "no") as proc:
        primary = wait_whole(base, {}, proc)  # anonymous status polls are answered
        assert round_trip(primary, "open") == "open"  # anonymous clients too
        for pid in filter(None, broker_pids(root)):
            args = cmdline(pid).split(b"\0")
            assert args[args.index(b"--auth") + 1] == b"no" and b"--sasl-db" not in args
    assert not (root / "credentials").exists() and not (root / "sasl-db").exists()
    assert "authentication off" in (root / "manager.log").read_text()


def test_up_with_credentials_it_cannot_use_says_why_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    creds = cluster_auth.ensure(root, "x:1").credentials
    db = UserDb.load(root / "sasl-db")
    db.set_password("qstore-ha", "not-the-one-in-credentials")
    db.save(root / "sasl-db")
    out = subprocess.run(
        [sys.executable, "-m", "tools.qstore_cluster", "up", "--data-dir", str(root),
         "--base-port", str(consecutive_free_ports(3))],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""  # before any broker was started
    assert out.stderr.startswith("qstore-cluster: ") and out.stderr.count("\n") == 1, out.stderr
    assert "qstore-ha's password" in out.stderr and creds.ha_password not in out.stderr
    assert not (root / "cluster.json").exists()
