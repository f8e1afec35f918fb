"""Authentication through a real qstored and stock proton clients (seed 1.12.9, 1.12.12.2):
who gets in with `--auth yes` and `--auth no`, and what a failed login leaves in the log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from broker_harness import Brokers
from proton import Message
from security_support import (
    PASSWORDS,
    closing,
    connect,
    refusal,
    scram_open,
    start_secure,
    wait_for_log,
)

from qstore.sasl.userdb import UserDb


def test_plain_login_sends_and_receives(brokers: Brokers) -> None:
    b = start_secure(brokers)
    with closing(connect(b.url, "alice")) as c:
        c.create_sender("q").send(Message(body="hello", durable=True))
        assert c.create_receiver("q").receive(timeout=5).body == "hello"
    line = wait_for_log(b, "user=alice@QPID opened")
    assert "alice-secret" not in b.log()
    assert "container=" in line


def test_scram_sha_256_and_512_log_in(brokers: Brokers) -> None:
    b = start_secure(brokers)
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        ok, why = scram_open(b.port, "bob", PASSWORDS["bob"], mechanism)
        assert ok, why
    ok, why = scram_open(b.port, "bob", "wrong", "SCRAM-SHA-256")
    assert not ok and "auth" in why.lower()


def test_anonymous_client_is_refused_with_auth_on(brokers: Brokers) -> None:
    b = start_secure(brokers)
    text = refusal(b.url)  # stock client, no user: ANONYMOUS is not offered
    assert "unauthorized" in text.lower() or "authentication" in text.lower(), text
    with closing(connect(b.url, "admin")):  # the broker is fine after it
        pass


def test_wrong_password_and_unknown_user_are_logged_in_the_seed_style(brokers: Brokers) -> None:
    b = start_secure(brokers)
    text = refusal(b.url, "alice", "not-her-password")
    assert "unauthorized-access" in text or "Authentication failed" in text, text
    line = wait_for_log(b, "password verification failed")
    assert "SASL: Authentication failed" in line and "peer=127.0.0.1:" in line
    refusal(b.url, "mallory", "whatever-password")
    line = wait_for_log(b, "user not found")
    assert "SASL: Authentication failed" in line and "peer=127.0.0.1:" in line
    log = b.log()
    assert "not-her-password" not in log and "whatever-password" not in log


def test_repeated_failures_do_not_stall_the_broker(brokers: Brokers) -> None:
    """Password checks run off the event loop: a client logged in keeps its service while
    another peer fails again and again."""
    b = start_secure(brokers)
    with closing(connect(b.url, "admin")) as good:
        sender = good.create_sender("steady")
        for i in range(20):
            refusal(b.url, "alice", f"guess-{i}")
            sender.send(Message(body=i, durable=True))
        receiver = good.create_receiver("steady")
        assert [receiver.receive(timeout=5).body for _ in range(20)] == list(range(20))


def test_auth_no_takes_anonymous_and_any_plain_login(brokers: Brokers) -> None:
    b = brokers.start(args=["--auth", "no", "--auto-create", "yes"])
    with closing(connect(b.url)) as c:
        c.create_sender("q").send(Message(body=1))
    with closing(connect(b.url, "whoever", "any password")) as c:
        assert c.create_receiver("q").receive(timeout=5).body == 1
    wait_for_log(b, "user=whoever@QPID opened")


def test_a_user_added_while_running_can_log_in(brokers: Brokers) -> None:
    b = start_secure(brokers)
    refusal(b.url, "carol", "carol-secret")
    db_path = brokers.tmp_path / "sasl-db"
    db = UserDb.load(db_path)
    db.set_password("carol", "carol-secret")
    db.save(db_path)
    with closing(connect(b.url, "carol", "carol-secret")):
        pass


def test_auth_yes_without_a_user_database_stops_start_up(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "broker.main", "--data-dir", str(tmp_path / "d"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "qstore-passwd" in done.stderr and "--auth no" in done.stderr


def test_sasl_db_and_journal_files_are_private(brokers: Brokers) -> None:
    b = start_secure(brokers)
    db = brokers.tmp_path / "sasl-db"
    assert os.stat(db).st_mode & 0o077 == 0
    for path in b.data_dir.rglob("*"):
        if path.is_file():
            assert os.stat(path).st_mode & 0o077 == 0, path
