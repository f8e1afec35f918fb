"""The modes of what the journal creates: a data directory holds every message body, so it is the
broker's user's alone (the umask may take more away, never add). Existing files and directories
keep their modes: changing them behind an operator's back is not the journal's call."""

from __future__ import annotations

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
