"""`qstore-passwd`: create and change the broker's user database (`qstored --sasl-db FILE`).

    qstore-passwd FILE add USER      a new user (creates FILE if missing)
    qstore-passwd FILE passwd USER   a new password for an existing user
    qstore-passwd FILE del USER      remove a user
    qstore-passwd FILE list          the users, as USER@QPID

The password is asked for twice at a prompt that does not echo it, or read from the first line
of `--password-file F` (`-` for standard input) or from the environment variable named by
`--password-env VAR`, so that scripts never put it on a command line. The file holds salted
SCRAM credentials only and is replaced atomically, mode 0600. A running broker picks up the
change at the next login. Mistakes are one line `qstore-passwd: error: ...` and exit status 2
(usage) or 1 (refused), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from qstore.sasl.names import BadUserName, identity, normalize_user
from qstore.sasl.userdb import UserDb, UserDbError

PROG = "qstore-passwd"
VERBS = ("add", "passwd", "del", "list")
MAX_PASSWORD = 1024  # characters; a longer "password" is a wrong file


class PasswdError(Exception):
    """A refusal, shown as one line and exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage mistake: one line (with a pointer to --help), exit status 2."""
        print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Create and change the qstore broker's user database (--sasl-db FILE).",
        epilog="Users appear in ACL rules and logs as USER@QPID.",
    )
    parser.add_argument("file", metavar="FILE", help="the user database (JSON, mode 0600)")
    parser.add_argument("verb", metavar="add|passwd|del|list", choices=VERBS)
    parser.add_argument("user", metavar="USER", nargs="?", help="the user (USER or USER@QPID)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--password-file",
        metavar="F",
        help="read the password from the first line of F ('-' for standard input)",
    )
    source.add_argument(
        "--password-env", metavar="VAR", help="read the password from environment variable VAR"
    )
    return parser


# --- the password ------------------------------------------------------------------------------


def _checked(password: str, where: str) -> str:
    if not password:
        raise PasswdError(f"the password from {where} is empty")
    if len(password) > MAX_PASSWORD:
        raise PasswdError(f"the password from {where} is longer than {MAX_PASSWORD} characters")
    return password


def password_from_file(name: str) -> str:
    """The first line of a file (or of standard input for '-'), without its line end."""
    try:
        if name == "-":
            line = sys.stdin.readline(MAX_PASSWORD + 2)
        else:
            with open(name, encoding="utf-8") as f:
                line = f.readline(MAX_PASSWORD + 2)
    except OSError as exc:
        raise PasswdError(f"cannot read the password file {name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PasswdError(f"the password file {name} is not UTF-8 text") from None
    return _checked(line.rstrip("\r\n"), "standard input" if name == "-" else name)


def password_from_env(var: str) -> str:
    value = os.environ.get(var)
    if value is None:
        raise PasswdError(f"the environment variable {var} is not set")
    return _checked(value, f"${var}")


def password_from_prompt(user: str) -> str:
    """Asked twice at the terminal, never echoed. getpass would fall back to reading standard
    input with echo when there is no terminal; that warning is made an error instead."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", getpass.GetPassWarning)
            first = getpass.getpass(f"Password for {user}: ")
            second = getpass.getpass("Again: ")
    except (EOFError, getpass.GetPassWarning):
        raise PasswdError(
            "no terminal to ask for the password (use --password-file or --password-env)"
        ) from None
    if first != second:
        raise PasswdError("the two passwords differ; nothing changed")
    return _checked(first, "the prompt")


# --- the file ----------------------------------------------------------------------------------


@contextlib.contextmanager
def locked_directory(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file's directory, so two runs cannot each read the old file
    and the second's save drop the first's change. (The file itself is replaced on save, so a
    lock on it would not hold across runs.)"""
    directory = path.parent
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise PasswdError(f"cannot open the directory {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load(path: Path, create: bool) -> UserDb:
    if create and not path.exists():
        return UserDb()
    return UserDb.load(path)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    verb = args.verb
    if verb == "list":
        if args.user is not None:
            raise _UsageError("list takes no USER")
        if args.password_file or args.password_env:
            raise _UsageError("list takes no password")
        for name in UserDb.load(path).users():
            print(identity(name))
        return 0
    if args.user is None:
        raise _UsageError(f"{verb} needs a USER")
    try:
        name = normalize_user(args.user)
    except BadUserName as exc:
        raise PasswdError(str(exc)) from None
    shown = identity(name)
    if verb == "del" and (args.password_file or args.password_env):
        raise _UsageError("del takes no password")
    with locked_directory(path):
        db = _load(path, create=verb == "add")
        if verb == "add" and name in db:
            raise PasswdError(f"user {shown} already exists in {path} (use passwd to change it)")
        if verb in ("passwd", "del") and name not in db:
            raise PasswdError(f"no user {shown} in {path}")
        if verb == "del":
            db.delete(name)
        else:
            if args.password_file:
                password = password_from_file(args.password_file)
            elif args.password_env:
                password = password_from_env(args.password_env)
            else:
                password = password_from_prompt(shown)
            db.set_password(name, password)
        db.save(path)
    done = {"add": "added", "passwd": "changed the password of", "del": "deleted"}[verb]
    print(f"{PROG}: {done} {shown} in {path}")
    return 0


class _UsageError(Exception):
    """A usage mistake found after parsing: exit status 2."""


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = run(args)
    except _UsageError as exc:
        parser.error(str(exc))
    except (PasswdError, UserDbError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        status = 130
    sys.exit(status)


if __name__ == "__main__":
    main()
