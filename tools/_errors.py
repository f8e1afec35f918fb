"""The tools' two kinds of failure, each printed as one line (see `_mgmt.run_tool`)."""

from __future__ import annotations


class ToolError(Exception):
    """A failure to report as one line and exit status 1 (refused, unreachable, timed out)."""

    status = 1


class UsageError(ToolError):
    """A command that cannot work as written (a mechanism this client lacks, a user without a
    password, an unreadable password file): one line and exit status 2, before connecting."""

    status = 2
