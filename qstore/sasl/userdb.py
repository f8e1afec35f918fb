"""The user database behind `--sasl-db FILE`: salted SCRAM credentials, never a password.

The file is JSON:

    {"format": "qstore-sasl-db", "version": 1,
     "users": {"admin": {"iterations": 10000, "salt": "<base64>",
                         "SCRAM-SHA-256": {"stored_key": "<base64>", "server_key": "<base64>"},
                         "SCRAM-SHA-512": {"stored_key": "<base64>", "server_key": "<base64>"}}}}

SCRAM needs exactly these (RFC 5802 section 5: the server keeps StoredKey and ServerKey, not
the password), and PLAIN is checked by deriving the SCRAM-SHA-256 StoredKey from the offered
password with the stored salt and comparing. The keys are derived by scramp. One salt serves
both mechanisms: they hash with different functions.

The file is written atomically (a temporary file in the same directory, fsync, os.replace) and
is mode 0600 from the moment it exists. `CachedUserDb` re-reads it when it changes, so
`qstore-passwd` takes effect on the next login without a broker restart.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scramp import ScramMechanism

from qstore.sasl.names import BadUserName, normalize_user

log = logging.getLogger(__name__)

FORMAT = "qstore-sasl-db"
VERSION = 1
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
KEY_SIZES = {"SCRAM-SHA-256": 32, "SCRAM-SHA-512": 64}  # digest sizes in bytes
# 10000 PBKDF2 rounds cost ~4 ms (SHA-256) per PLAIN check on this machine kind: slow for a
# guesser holding a stolen file, cheap per login. scramp refuses fewer than 4096 (RFC 7677)
# and more than 10,000,000.
DEFAULT_ITERATIONS = 10_000
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
MIN_SALT_BYTES = 12  # scramp's minimum
FILE_MODE = 0o600

Credentials = tuple[bytes, bytes, bytes, int]  # salt, stored key, server key, iterations


class UserDbError(Exception):
    """A problem with the database or a request to it; the message is one line."""


@dataclass(frozen=True)
class UserRecord:
    """One user's credentials: a salt and iteration count shared by both mechanisms, and per
    mechanism (stored key, server key)."""

    iterations: int
    salt: bytes
    keys: Mapping[str, tuple[bytes, bytes]]


def verify_plain(credentials: Credentials, password: str) -> bool:
    """Whether `password` matches SCRAM-SHA-256 `credentials` (a PLAIN login).

    Costs one PBKDF2 at the stored iteration count: run it off the event loop. scramp derives
    the key (with SASLprep, as a SCRAM client would), compare_digest compares in constant time."""
    salt, stored_key, _server_key, iterations = credentials
    try:
        _salt, derived, _srv, _i = ScramMechanism("SCRAM-SHA-256").make_auth_info(
            password, iteration_count=iterations, salt=salt
        )
    except Exception:  # a password SASLprep prohibits cannot match any stored one
        return False
    return hmac.compare_digest(derived, stored_key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} is not valid base64") from None


def _parse_record(raw: Any) -> UserRecord:
    if not isinstance(raw, dict):
        raise ValueError("is not an object")
    iterations = raw.get("iterations")
    if type(iterations) is not int or not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(
            f"'iterations' must be a whole number from {MIN_ITERATIONS} to {MAX_ITERATIONS}"
        )
    salt = _unb64(raw.get("salt"), "'salt'")
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"'salt' is shorter than {MIN_SALT_BYTES} bytes")
    keys: dict[str, tuple[bytes, bytes]] = {}
    for mech in SCRAM_MECHANISMS:
        entry = raw.get(mech)
        if not isinstance(entry, dict):
            raise ValueError(f"'{mech}' is missing or not an object")
        pair = (
            _unb64(entry.get("stored_key"), f"'{mech}' stored_key"),
            _unb64(entry.get("server_key"), f"'{mech}' server_key"),
        )
        if any(len(k) != KEY_SIZES[mech] for k in pair):
            raise ValueError(f"'{mech}' keys are not {KEY_SIZES[mech]} bytes long")
        keys[mech] = pair
    return UserRecord(iterations, salt, keys)


class UserDb:
    """The users and their credentials, in memory. `load` and `save` touch the file."""

    def __init__(self, records: Mapping[str, UserRecord] | None = None) -> None:
        self._records: dict[str, UserRecord] = dict(records or {})

    # --- reading ------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str | bytes, source: str) -> UserDb:
        """A database from the file's text; `source` names it in errors."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserDbError(
                f"{source}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
            ) from None
        except UnicodeDecodeError:
            raise UserDbError(f"{source}: not UTF-8 text") from None
        except RecursionError:
            raise UserDbError(f"{source}: nested too deeply to be a user database") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise UserDbError(f'{source}: not a qstore user database (no "format": "{FORMAT}")')
        if doc.get("version") != VERSION:
            raise UserDbError(
                f"{source}: unsupported version {doc.get('version')!r} (expected {VERSION})"
            )
        users = doc.get("users")
        if not isinstance(users, dict):
            raise UserDbError(f"{source}: 'users' is missing or not an object")
        records: dict[str, UserRecord] = {}
        for name, raw in users.items():
            try:
                bare = normalize_user(name)
            except BadUserName as exc:
                raise UserDbError(f"{source}: {exc}") from None
            if bare != name:
                raise UserDbError(f"{source}: user {name!r} is not stored under its bare name")
            try:
                records[name] = _parse_record(raw)
            except ValueError as exc:
                raise UserDbError(f"{source}: user {name!r}: {exc}") from None
        return cls(records)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> UserDb:
        """The database in `path`; UserDbError (one line naming the file) if it cannot be read
        or is not a valid database."""
        db, _sig = _load_with_signature(path)
        return db

    def users(self) -> list[str]:
        """The bare user names, sorted."""
        return sorted(self._records)

    def __contains__(self, user: object) -> bool:
        if not isinstance(user, str):
            return False
        try:
            return normalize_user(user) in self._records
        except BadUserName:
            return False

    def __len__(self) -> int:
        return len(self._records)

    def credentials(self, user: str, mechanism: str) -> Credentials | None:
        """(salt, stored key, server key, iterations) of `user` (bare or `name@QPID`) for a SCRAM
        mechanism, in the form scramp's server wants; None for an unknown user or mechanism."""
        try:
            record = self._records.get(normalize_user(user))
        except BadUserName:
            return None
        if record is None or mechanism not in record.keys:
            return None
        stored_key, server_key = record.keys[mechanism]
        return record.salt, stored_key, server_key, record.iterations

    def check_plain(self, user: str, password: str) -> bool:
        """Whether `password` is `user`'s password. Costs one PBKDF2: not on the event loop."""
        creds = self.credentials(user, "SCRAM-SHA-256")
        return creds is not None and verify_plain(creds, password)

    # --- changing -----------------------------------------------------------------------------

    def set_password(
        self, user: str, password: str, *, iterations: int = DEFAULT_ITERATIONS
    ) -> None:
        """Add `user` or replace its credentials with ones derived from `password` (a new salt)."""
        try:
            name = normalize_user(user)
        except BadUserName as exc:
            raise UserDbError(str(exc)) from None
        if not password:
            raise UserDbError("the password is empty")
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise UserDbError(f"iterations must be from {MIN_ITERATIONS} to {MAX_ITERATIONS}")
        salt = secrets.token_bytes(SALT_BYTES)
        keys: dict[str, tuple[bytes, bytes]] = {}
        for mech in SCRAM_MECHANISMS:
            try:
                _s, stored_key, server_key, _i = ScramMechanism(mech).make_auth_info(
                    password, iteration_count=iterations, salt=salt
                )
            except Exception:  # scramp's SASLprep refusal; its text may quote the password
                raise UserDbError(
                    "the password holds characters SASLprep prohibits (control characters?)"
                ) from None
            keys[mech] = (stored_key, server_key)
        self._records[name] = UserRecord(iterations, salt, keys)

    def delete(self, user: str) -> None:
        """Remove `user`; UserDbError if there is no such user."""
        try:
            name = normalize_user(user)
        except BadUserName as exc:
            raise UserDbError(str(exc)) from None
        if self._records.pop(name, None) is None:
            raise UserDbError(f"no user {name!r}")

    # --- writing ------------------------------------------------------------------------------

    def dumps(self) -> str:
        """The file's text."""
        users: dict[str, Any] = {}
        for name in sorted(self._records):
            record = self._records[name]
            entry: dict[str, Any] = {"iterations": record.iterations, "salt": _b64(record.salt)}
            for mech in SCRAM_MECHANISMS:
                stored_key, server_key = record.keys[mech]
                entry[mech] = {"stored_key": _b64(stored_key), "server_key": _b64(server_key)}
            users[name] = entry
        return json.dumps({"format": FORMAT, "version": VERSION, "users": users}, indent=2) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the database to `path` atomically, mode 0600 from creation.

        A reader (the broker) sees the old file or the new one, never a partial one; a crash
        leaves at most a stray temporary file, never a truncated database."""
        write_private_file(path, self.dumps().encode("utf-8"))


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically; the file is mode 0600 from its creation.

    The temporary file is created with O_EXCL and mode 0600 (the umask can only narrow it;
    fchmod then makes it exactly 0600), fsync'd, renamed over `path`, and the directory fsync'd
    so the rename survives a crash."""
    target = Path(path)
    directory = target.parent
    tmp = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        why = exc.strerror
        raise UserDbError(f"{target}: cannot create a file in {directory}: {why}") from None
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UserDbError(f"{target}: cannot write: {exc.strerror}") from None
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --- the broker's view: reload on change -----------------------------------------------------

MAX_FILE_SIZE = 16 * 1024 * 1024  # a database of ~30k users; a bigger file is a mistake

Signature = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


def _signature(st: os.stat_result) -> Signature:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _load_with_signature(path: str | os.PathLike[str]) -> tuple[UserDb, Signature]:
    """The database and the stat signature of the very file it was read from (fstat of the open
    descriptor, so a replace between stat and read cannot pair old stat with new text)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > MAX_FILE_SIZE:
                raise UserDbError(f"{source}: larger than {MAX_FILE_SIZE} bytes")
            text = f.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise UserDbError(f"{source}: cannot read: {exc.strerror}") from None
    return UserDb.parse(text, source), _signature(st)


class CachedUserDb:
    """The broker's user database: loaded at start (UserDbError if bad), re-read when the file
    changes (device, inode, size or mtime), so `qstore-passwd` needs no broker restart.

    `current()` costs one stat when nothing changed. A changed file that is bad (or gone) is
    logged once per change and the last good copy stays in force: a half-edited file must not
    lock everybody out."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._db, self._sig = _load_with_signature(self.path)
        self._bad_sig: Signature | None = None  # the change already reported as bad
        self._missing_reported = False

    def current(self) -> UserDb:
        """The database as the file holds it now (or the last good copy)."""
        try:
            sig = _signature(os.stat(self.path))
        except OSError as exc:
            if not self._missing_reported:
                log.error(
                    "SASL: cannot read the user database %s (%s); keeping the last good copy",
                    self.path,
                    exc.strerror,
                )
                self._missing_reported = True
            return self._db
        self._missing_reported = False
        if sig == self._sig or sig == self._bad_sig:
            return self._db
        try:
            db, read_sig = _load_with_signature(self.path)
        except UserDbError as exc:
            log.error("SASL: %s; keeping the last good user database", exc)
            self._bad_sig = sig
            return self._db
        self._db, self._sig, self._bad_sig = db, read_sig, None
        log.info("SASL: user database %s reloaded (%d users)", self.path, len(db))
        return self._db
