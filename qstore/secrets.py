"""A password read from a file, so that it need not stand on a command line (`ps` shows those).

Used by the tools' `--password-file` and the broker's `--ha-password-file`. The password is the
file's first line without its line ending: `echo secret > f` and an editor's trailing newline both
work, and the rest of the file may hold a comment for the person who keeps it. Surrounding spaces
are kept (they may be part of the password). No warning about the file's mode: whoever runs this
chose the file; refusing a 0644 file would only push people back to the command line.
"""

from __future__ import annotations

import os


class SecretError(Exception):
    """The password file cannot be used; the message is one line and never holds the secret."""


def read_password_file(path: str | os.PathLike[str]) -> str:
    """The first line of `path` without its line ending; `SecretError` if unreadable or empty."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            first = f.readline()
    except FileNotFoundError:
        raise SecretError(f"password file {name}: no such file") from None
    except IsADirectoryError:
        raise SecretError(f"password file {name}: is a directory") from None
    except PermissionError:
        raise SecretError(f"password file {name}: permission denied") from None
    except UnicodeDecodeError:
        raise SecretError(f"password file {name}: not UTF-8 text") from None
    except OSError as exc:
        raise SecretError(f"password file {name}: {exc.strerror or type(exc).__name__}") from None
    password = first.rstrip("\r\n")
    if not password:
        raise SecretError(f"password file {name}: the first line is empty")
    return password
