"""User names and identities: one rule for the user database, the SASL server and the logs.

A user is stored under its bare name (`admin`); ACL rules and logs see the identity
`admin@QPID` (the seed's realm). Names reach log lines and ACL files, so they may hold no
control characters and no white space, and `@` only as the realm suffix.
"""

from __future__ import annotations

from scramp.utils import saslprep

REALM = "QPID"
SUFFIX = "@" + REALM
MAX_NAME = 255  # characters: a name is a log token, not a document


class BadUserName(ValueError):
    """A user name the database cannot hold; the message is one line, safe to log."""


def printable(text: str, limit: int = 80) -> str:
    """Text from a peer as a log line may show it: control characters escaped, cut at `limit`.

    A peer chooses these strings (mechanism names, user names), and a newline in one would
    forge a log line."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def printable_bytes(data: bytes, limit: int = 16) -> str:
    """Bytes from a peer (a bad protocol header) as a short escaped text."""
    shown = repr(bytes(data[:limit]))[2:-1]
    return shown + ("..." if len(data) > limit else "")


def normalize_user(name: str) -> str:
    """The bare, SASLprep'd name under which a user is stored; `@QPID` is stripped.

    SCRAM normalises the name a client sends with SASLprep (scramp does), so the stored
    name must be normalised the same way for a lookup to match."""
    if name.endswith(SUFFIX):
        name = name[: -len(SUFFIX)]
    if not name:
        raise BadUserName("the user name is empty")
    if len(name) > MAX_NAME:
        raise BadUserName(f"the user name is longer than {MAX_NAME} characters")
    if "@" in name:
        raise BadUserName(
            f"the user name '{printable(name)}' holds '@' (only the realm suffix {SUFFIX} may)"
        )
    if any(not c.isprintable() or c.isspace() for c in name):
        raise BadUserName(
            f"the user name '{printable(name)}' holds a control or white-space character"
        )
    try:
        prepped = saslprep(name)
    except Exception as exc:  # scramp raises ScramException for prohibited characters
        raise BadUserName(f"the user name '{printable(name)}' is not valid: {exc}") from None
    if not prepped or "@" in prepped or any(not c.isprintable() or c.isspace() for c in prepped):
        raise BadUserName(f"the user name '{printable(name)}' is not valid after SASLprep")
    return prepped


def identity(name: str, realm: str = REALM) -> str:
    """The identity ACL rules and logs see: `name@QPID`, or the name as is if it holds '@'."""
    return name if "@" in name else f"{name}@{realm}"
