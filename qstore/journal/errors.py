"""Errors raised by the journal: each names what a person needs to act on."""

from __future__ import annotations


class JournalError(Exception):
    """Base class of every journal error.

    `reported`: the journal has logged what this error means already (a write error, records
    that consume which could not be written), so whoever gets it for a record nobody waits on
    need not log it again, once per record."""

    reported = False


class JournalLocked(JournalError):
    """Another process holds the data directory's lock file."""


class JournalFull(JournalError):
    """The LMDB map or the disk is full: new durable work is refused, reads still work.

    `reason` names what is full (the map and its size, or the disk and the OS's error)."""

    def __init__(self, reason: str, consequence: str = "") -> None:
        then = f": {consequence}" if consequence else ""
        super().__init__(f"journal is full ({reason}){then}")
        self.reason = reason


class JournalClosed(JournalError):
    """The journal was closed while an append was waiting."""


class NotAJournal(JournalError):
    """The directory is missing or holds no qstore journal."""


class CorruptRecord(JournalError):
    """A record failed its crc32c or could not be decoded; `seq` names it."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"journal record seq={seq} is damaged: {reason}")
        self.seq = seq
        self.reason = reason


class UnsupportedFormat(JournalError):
    """A record or journal written by a newer format version than this code reads."""
