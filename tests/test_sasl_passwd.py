"""`qstore-passwd` as a user runs it: a real process on a real file. Every mistake is one line
and an exit status; the password never appears in its output."""

from __future__ import annotations

import os
import pty
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qstore.sasl import UserDb

TOOL = str(Path(sys.executable).parent / "qstore-passwd")
PASSWORD = "pa55-w0rd-XYZ"
TIMEOUT = 30


def passwd(
    *args: str | Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [TOOL, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        input=stdin,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # no controlling terminal: the prompt cannot be used
    )
    assert PASSWORD not in result.stdout + result.stderr
    return result


def one_error(result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert result.returncode == status, result
    assert result.stderr.startswith("qstore-passwd: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    assert text in result.stderr


@pytest.fixture
def pwfile(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\n")
    return path


def test_add_list_passwd_del(tmp_path: Path, pwfile: Path) -> None:
    db = tmp_path / "sasl-db"
    result = passwd(db, "add", "admin", "--password-file", pwfile)
    assert result.returncode == 0 and "added admin@QPID" in result.stdout
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert PASSWORD not in db.read_text()
    assert UserDb.load(db).check_plain("admin", PASSWORD)

    assert (
        passwd(db, "add", "ha@QPID", "--password-env", "HA_PW", env={"HA_PW": "h"}).returncode == 0
    )
    result = passwd(db, "list")
    assert (result.returncode, result.stdout) == (0, "admin@QPID\nha@QPID\n")

    result = passwd(db, "passwd", "admin", "--password-env", "NEW", env={"NEW": "changed"})
    assert result.returncode == 0
    users = UserDb.load(db)
    assert users.check_plain("admin", "changed") and not users.check_plain("admin", PASSWORD)

    assert passwd(db, "del", "ha").returncode == 0
    assert passwd(db, "list").stdout == "admin@QPID\n"


def test_password_from_standard_input(tmp_path: Path) -> None:
    db = tmp_path / "sasl-db"
    result = passwd(db, "add", "bob", "--password-file", "-", stdin=PASSWORD + "\nignored\n")
    assert result.returncode == 0
    assert UserDb.load(db).check_plain("bob", PASSWORD)


def test_refusals(tmp_path: Path, pwfile: Path) -> None:
    db = tmp_path / "sasl-db"
    passwd(db, "add", "admin", "--password-file", pwfile)
    before = db.read_bytes()
    one_error(
        passwd(db, "add", "admin", "--password-file", pwfile),
        1,
        f"user admin@QPID already exists in {db} (use passwd to change it)",
    )
    one_error(passwd(db, "passwd", "nobody", "--password-file", pwfile), 1, "no user nobody@QPID")
    one_error(passwd(db, "del", "nobody"), 1, f"no user nobody@QPID in {db}")
    one_error(passwd(db, "add", "a\nb", "--password-file", pwfile), 1, "'a\\nb' holds a control")
    one_error(passwd(db, "add", "x@y", "--password-file", pwfile), 1, "holds '@'")
    one_error(passwd(db, "add", "c", "--password-env", "UNSET_VAR_X"), 1, "UNSET_VAR_X is not set")
    one_error(passwd(db, "add", "c", "--password-file", tmp_path / "no"), 1, "cannot read")
    (tmp_path / "empty").write_text("\n")
    one_error(passwd(db, "add", "c", "--password-file", tmp_path / "empty"), 1, "is empty")
    one_error(passwd(db, "add", "c"), 1, "no terminal to ask for the password")
    assert db.read_bytes() == before  # nothing refused changed the file


def test_usage_errors_exit_2(tmp_path: Path, pwfile: Path) -> None:
    db = tmp_path / "sasl-db"
    one_error(passwd(db), 2, "the following arguments are required")
    one_error(passwd(db, "frob"), 2, "invalid choice: 'frob'")
    one_error(passwd(db, "add"), 2, "add needs a USER")
    one_error(passwd(db, "list", "bob"), 2, "list takes no USER")
    one_error(passwd(db, "del", "bob", "--password-file", pwfile), 2, "del takes no password")
    one_error(
        passwd(db, "add", "b", "--password-file", pwfile, "--password-env", "X"),
        2,
        "not allowed with argument",
    )
    assert not db.exists()


def test_bad_or_missing_file(tmp_path: Path) -> None:
    one_error(passwd(tmp_path / "nope", "list"), 1, "nope: cannot read: No such file or directory")
    bad = tmp_path / "bad"
    bad.write_text("{")
    one_error(passwd(bad, "list"), 1, f"{bad}: not valid JSON")
    one_error(passwd(bad, "add", "x", "--password-env", "P", env={"P": "p"}), 1, "not valid JSON")
    assert bad.read_text() == "{"


def _read_until(fd: int, marker: bytes, seen: bytearray) -> None:
    deadline = time.monotonic() + TIMEOUT
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"terminal closed before {marker!r}: {bytes(seen)!r}")
            seen += chunk


def _prompted(db: Path, first: str, second: str) -> tuple[int, bytes]:
    """Run `add bob` on a pseudo-terminal, typing the two passwords at the prompts."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [TOOL, str(db), "add", "bob"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, b"Password for bob@QPID: ", seen)
        os.write(master, first.encode() + b"\n")
        _read_until(master, b"Again: ", seen)
        os.write(master, second.encode() + b"\n")
        status = proc.wait(TIMEOUT)
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        os.close(master)
    return status, bytes(seen)


def test_prompt_asks_twice_and_never_echoes(tmp_path: Path) -> None:
    db = tmp_path / "sasl-db"
    status, screen = _prompted(db, PASSWORD, PASSWORD)
    assert status == 0, screen
    assert PASSWORD.encode() not in screen
    assert b"added bob@QPID" in screen
    assert UserDb.load(db).check_plain("bob", PASSWORD)


def test_prompt_with_different_passwords_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "sasl-db"
    status, screen = _prompted(db, PASSWORD, PASSWORD + "typo")
    assert status == 1
    assert b"qstore-passwd: error: the two passwords differ; nothing changed" in screen
    assert PASSWORD.encode() not in screen
    assert not db.exists()
