"""Log lines that a name cannot forge: control characters escaped in the message.

Queue, exchange, link, container and user names come from the network and reach log messages
as they are. A name holding a newline would start a new line of its own choosing ("INFO ...
promoted"), and other control characters can rewrite a terminal; so every line's formatted
message has them escaped: `\\n` and `\\r` and `\\t` as such, other C0 characters, DEL and C1 as
`\\xNN`, and the Unicode line and paragraph separators as `\\u2028` / `\\u2029` (log viewers and
Python's own `splitlines` break lines there too). The traceback of `log.exception` is left as it
is: it is ours, multi-line by nature, and follows the escaped line it belongs to.
"""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` on one line: control characters written as escapes (see the module doc)."""
    return _CONTROL.sub(_escape_one, text) if _CONTROL.search(text) else text


class EscapingFormatter(logging.Formatter):
    """A `logging.Formatter` whose message part never spans lines or holds control codes."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging's name
        return escape_controls(super().formatMessage(record))
