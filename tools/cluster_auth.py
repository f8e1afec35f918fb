"""The local cluster's own users, made by `qstore-cluster up` so that it runs with `--auth yes`.

On the first `up` in a data directory it makes two users with random passwords:

    DATA_DIR/sasl-db       the brokers' --sasl-db: `admin` and the HA user `qstore-ha` (0600)
    DATA_DIR/credentials   both passwords, for people and scripts (0600); a shell can source it:
                               set -a; . DATA_DIR/credentials; set +a
                           and the tools then log in as admin (QSTORE_USER / QSTORE_PASSWORD)
    DATA_DIR/ha-password   the HA password alone, for the brokers' --ha-password-file (0600)

so that no password stands on a command line. A later `up` reuses them; users a person added to
the sasl-db with `qstore-passwd` are kept. The passwords are 192 random bits
(`secrets.token_urlsafe`), so the database stores them with scramp's minimum PBKDF2 count: key
stretching protects guessable passwords, and each PLAIN check (the manager's status polls log in
several times a second) then costs less.

Every file is written by `write_private_file`: mode 0600 from its first byte, replaced atomically.
Errors are `CredentialsError`, one line that never holds a password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qstore.sasl.userdb import MIN_ITERATIONS, UserDb, UserDbError, write_private_file

ADMIN_USER = "admin"
HA_USER = "qstore-ha"
SASL_DB = "sasl-db"
CREDENTIALS = "credentials"
HA_PASSWORD = "ha-password"
PASSWORD_BYTES = 24  # token_urlsafe: 32 characters of [A-Za-z0-9_-], safe unquoted in a shell
KEYS = ("QSTORE_USER", "QSTORE_PASSWORD", "QSTORE_HA_USER", "QSTORE_HA_PASSWORD")


class CredentialsError(Exception):
    """The cluster's credentials cannot be made or read; one line, never a password."""


@dataclass(frozen=True)
class ClusterCredentials:
    """Who logs in to the local cluster: `user` for clients, `ha_user` for the brokers' links,
    the manager's status polls and promotes (only the HA identity may do those)."""

    user: str
    password: str = field(repr=False)
    ha_user: str
    ha_password: str = field(repr=False)

    def ha_login(self) -> dict[str, Any]:
        """Keywords of `query_status` and `ManagementClient` for the HA identity (PLAIN: the
        only password mechanism pip's proton can do)."""
        return {"user": self.ha_user, "password": self.ha_password, "mechanism": "PLAIN"}

    def client_options(self) -> dict[str, Any]:
        """Keywords of `qstore.client.Connection.establish` for the client user."""
        return {"username": self.user, "password": self.password}

    def proton_options(self) -> dict[str, Any]:
        """Keywords of a stock proton `BlockingConnection` / `Container.connect`."""
        return {"user": self.user, "password": self.password, "allowed_mechs": "PLAIN"}

    def url(self, address: str) -> str:
        return f"amqp://{self.user}:{self.password}@{address}"


def render(creds: ClusterCredentials, address: str) -> str:
    """The credentials file: comments, then KEY=VALUE lines a shell can source."""
    return (
        f"# qstore-cluster credentials (keep private). Connect as {creds.url(address)}\n"
        "# In a shell: set -a; . THIS_FILE; set +a   (the tools then log in as QSTORE_USER)\n"
        f"QSTORE_USER={creds.user}\n"
        f"QSTORE_PASSWORD={creds.password}\n"
        f"QSTORE_HA_USER={creds.ha_user}\n"
        f"QSTORE_HA_PASSWORD={creds.ha_password}\n"
    )


def parse(text: str, source: str) -> ClusterCredentials:
    """The credentials in a file's text; `source` names it in errors (which quote no value)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.removeprefix("export ").partition("=")
        if not eq or not key.strip().isidentifier():
            raise CredentialsError(f"{source} line {number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    missing = [k for k in KEYS if not values.get(k)]
    if missing:
        raise CredentialsError(f"{source}: no {', '.join(missing)}")
    return ClusterCredentials(*(values[k] for k in KEYS))


def load(root: Path) -> ClusterCredentials:
    """DATA_DIR/credentials."""
    path = root / CREDENTIALS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CredentialsError(f"{path}: cannot read: {why}") from None
    return parse(text, str(path))


@dataclass(frozen=True)
class Prepared:
    """What `ensure` did: the credentials, whether they are new, notes for the person."""

    credentials: ClusterCredentials
    created: bool
    notes: tuple[str, ...] = ()


def ensure(root: Path, address: str) -> Prepared:
    """The cluster's credentials in `root`, made on first use, reused after: the sasl-db holds
    both users (added back if a person removed them or the file), the HA password file matches.

    `address` (the first broker's) goes in the credentials file's comment. A sasl-db whose HA
    user has another password than the credentials file is an error: the brokers' links and
    the manager would be refused and nothing would say why."""
    cred_path, db_path = root / CREDENTIALS, root / SASL_DB
    notes: list[str] = []
    created = not cred_path.exists()
    try:
        if created:
            creds = ClusterCredentials(
                ADMIN_USER, secrets.token_urlsafe(PASSWORD_BYTES),
                HA_USER, secrets.token_urlsafe(PASSWORD_BYTES),
            )  # fmt: skip
            # the credentials first: a crash before the sasl-db is written is repaired below
            # on the next up; the other order would leave users nobody knows the password of
            write_private_file(cred_path, render(creds, address).encode("utf-8"))
        else:
            creds = load(root)
        db = UserDb.load(db_path) if db_path.exists() else UserDb()
        changed = False
        for user, password in ((creds.user, creds.password), (creds.ha_user, creds.ha_password)):
            if user not in db:
                db.set_password(user, password, iterations=MIN_ITERATIONS)
                changed = True
                if not created:
                    notes.append(f"added {user} to {db_path} (from {cred_path})")
            elif not db.check_plain(user, password):
                if user == creds.ha_user:
                    raise CredentialsError(
                        f"{db_path}: {user}'s password is not the one in {cred_path}; the "
                        f"brokers could not log in to each other. Set it back with "
                        f"'qstore-passwd {db_path} passwd {user} --password-file "
                        f"{root / HA_PASSWORD}' (or remove both files to start afresh)"
                    )
                notes.append(
                    f"{user}'s password in {db_path} was changed: {cred_path} no longer holds it"
                )
        if changed:
            db.save(db_path)
        write_private_file(root / HA_PASSWORD, (creds.ha_password + "\n").encode("utf-8"))
    except UserDbError as exc:
        raise CredentialsError(str(exc)) from None
    return Prepared(creds, created, tuple(notes))


def connect_line(creds: ClusterCredentials, address: str, root: Path, *, show: bool) -> str:
    """How to connect, printed once by `up`. The password only where `show` (the manager's
    stdout is a terminal): redirected, that output is a log, and a log never holds a password."""
    url = creds.url(address) if show else f"amqp://{creds.user}:****@{address}"
    return f"connect as {url} (credentials in {root / CREDENTIALS})"
