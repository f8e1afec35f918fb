"""The user database file: credentials only, mode 0600 from creation, atomic replace, one-line
errors for bad files, and the broker's cached copy that follows changes."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from scramp import ScramClient, ScramMechanism

from qstore.sasl import CachedUserDb, UserDb, UserDbError
from qstore.sasl.userdb import DEFAULT_ITERATIONS

PASSWORD = "Tr0ub4dor&3"


@pytest.fixture
def db() -> UserDb:
    users = UserDb()
    users.set_password("bob", PASSWORD)
    return users


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_credentials_work_with_scramp(db: UserDb) -> None:
    """The stored keys are what a SCRAM server needs: a scramp client with the password logs in
    against a scramp server that has only the stored credentials."""
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        creds = db.credentials("bob", mech)
        assert creds is not None and creds[3] == DEFAULT_ITERATIONS
        server = ScramMechanism(mech).make_server(lambda _name, c=creds: c)
        client = ScramClient([mech], "bob", PASSWORD)
        server.set_client_first(client.get_client_first())
        client.set_server_first(server.get_server_first())
        server.set_client_final(client.get_client_final())
        client.set_server_final(server.get_server_final())  # raises if anything is off


def test_names_and_lookups(db: UserDb) -> None:
    assert db.credentials("bob@QPID", "SCRAM-SHA-256") == db.credentials("bob", "SCRAM-SHA-256")
    assert db.credentials("bob@ELSEWHERE", "SCRAM-SHA-256") is None
    assert db.credentials("bob", "SCRAM-SHA-1") is None
    assert db.credentials("nobody", "SCRAM-SHA-256") is None
    db.set_password("carol@QPID", "x")  # stored under the bare name
    assert db.users() == ["bob", "carol"]
    assert "carol@QPID" in db and "carol" in db and "dave" not in db
    for bad in ["", "a b", "a\nb", "x@y", "@QPID"]:
        with pytest.raises(UserDbError):
            db.set_password(bad, "x")
    with pytest.raises(UserDbError, match="empty"):
        db.set_password("erin", "")


def test_check_plain(db: UserDb) -> None:
    assert db.check_plain("bob", PASSWORD)
    assert db.check_plain("bob@QPID", PASSWORD)
    assert not db.check_plain("bob", PASSWORD + "x")
    assert not db.check_plain("nobody", PASSWORD)
    assert not db.check_plain("bob", "bad\x00char")


def test_set_password_replaces_with_a_new_salt(db: UserDb) -> None:
    before = db.credentials("bob", "SCRAM-SHA-256")
    db.set_password("bob", "new one")
    after = db.credentials("bob", "SCRAM-SHA-256")
    assert before is not None and after is not None and before[0] != after[0]
    assert db.check_plain("bob", "new one") and not db.check_plain("bob", PASSWORD)


def test_delete(db: UserDb) -> None:
    db.delete("bob@QPID")
    assert db.users() == []
    with pytest.raises(UserDbError, match="no user 'bob'"):
        db.delete("bob")


def test_save_and_load(db: UserDb, tmp_path: Path) -> None:
    path = tmp_path / "sasl-db"
    db.save(path)
    text = path.read_text()
    assert PASSWORD not in text
    doc = json.loads(text)
    assert set(doc["users"]["bob"]) == {"iterations", "salt", "SCRAM-SHA-256", "SCRAM-SHA-512"}
    loaded = UserDb.load(path)
    assert loaded.users() == ["bob"]
    assert loaded.credentials("bob", "SCRAM-SHA-512") == db.credentials("bob", "SCRAM-SHA-512")
    assert loaded.check_plain("bob", PASSWORD)


def test_file_is_0600_from_creation_whatever_the_umask(
    db: UserDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with umask 0, the file holds its data only while mode 0600: checked at the fsync,
    when all of it has been written, and before the rename makes it visible."""
    path = tmp_path / "sasl-db"
    path.write_text("{}")
    path.chmod(0o644)  # an old file with a wider mode is replaced, not reused
    modes: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            modes.append(stat.S_IMODE(st.st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    old = os.umask(0)
    try:
        db.save(path)
    finally:
        os.umask(old)
    assert modes == [0o600]
    assert mode(path) == 0o600


def test_save_is_an_atomic_replace(db: UserDb, tmp_path: Path) -> None:
    path = tmp_path / "sasl-db"
    UserDb().save(path)
    with open(path, "rb") as reader:  # a broker in the middle of reading the old file
        old_inode = os.stat(path).st_ino
        db.save(path)
        assert os.stat(path).st_ino != old_inode
        assert json.loads(reader.read())["users"] == {}  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sasl-db"]  # no temporary left


def test_failed_save_keeps_the_old_file(
    db: UserDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sasl-db"
    UserDb().save(path)
    before = path.read_bytes()

    def fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(UserDbError, match="cannot write: No space left on device"):
        db.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sasl-db"]


def _good_user(db: UserDb) -> dict:
    return json.loads(db.dumps())["users"]["bob"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda u: "{not json", "not valid JSON (line 1 column 2"),
        (lambda u: "[]", "not a qstore user database"),
        (lambda u: {"format": "qstore-sasl-db", "version": 9, "users": {}}, "unsupported version"),
        (lambda u: {"format": "qstore-sasl-db", "version": 1}, "'users' is missing"),
        (lambda u: {"bob": {**u, "iterations": 10}}, "user 'bob': 'iterations' must be"),
        (lambda u: {"bob": {**u, "salt": "!!"}}, "user 'bob': 'salt' is not valid base64"),
        (lambda u: {"bob": {**u, "salt": "c2hvcnQ="}}, "'salt' is shorter than 12 bytes"),
        (lambda u: {"bob": {**u, "SCRAM-SHA-512": None}}, "'SCRAM-SHA-512' is missing"),
        (
            lambda u: {"bob": {**u, "SCRAM-SHA-256": {**u["SCRAM-SHA-256"], "stored_key": "AA=="}}},
            "keys are not 32 bytes long",
        ),
        (lambda u: {"bob@QPID": u}, "is not stored under its bare name"),
        (lambda u: {"a\nb": u}, "control or white-space"),
        (lambda u: {"bob": "password"}, "user 'bob': is not an object"),
        (lambda u: "[" * 100_000, "nested too deeply"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(
    db: UserDb, tmp_path: Path, make, message: str
) -> None:
    content = make(_good_user(db))
    if isinstance(content, dict) and "format" not in content:
        content = {"format": "qstore-sasl-db", "version": 1, "users": content}
    path = tmp_path / "sasl-db"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(UserDbError) as info:
        UserDb.load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserDbError, match=r"nope: cannot read: No such file or directory"):
        UserDb.load(tmp_path / "nope")


def test_cached_db_follows_changes_and_keeps_the_last_good_copy(
    db: UserDb, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sasl-db"
    db.save(path)
    cached = CachedUserDb(path)
    assert cached.current().users() == ["bob"]

    db.set_password("carol", "c")
    db.save(path)
    assert cached.current().users() == ["bob", "carol"]  # no restart needed

    caplog.set_level(logging.INFO, logger="qstore.sasl.userdb")
    caplog.clear()
    path.write_text("{broken")
    for _ in range(3):
        assert cached.current().users() == ["bob", "carol"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # logged once, not per login
    assert "not valid JSON" in errors[0].getMessage()
    assert "keeping the last good user database" in errors[0].getMessage()

    path.unlink()
    assert cached.current().users() == ["bob", "carol"]
    assert cached.current().users() == ["bob", "carol"]
    assert sum("cannot read" in r.getMessage() for r in caplog.records) == 1

    db.delete("bob")
    db.save(path)
    assert cached.current().users() == ["carol"]
    assert any("reloaded (1 users)" in r.getMessage() for r in caplog.records)


def test_cached_db_refuses_a_bad_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "sasl-db"
    path.write_text("[]")
    with pytest.raises(UserDbError, match="not a qstore user database"):
        CachedUserDb(path)
