"""TEST ONLY: make the journal writer's append commits fail, to test how the broker handles a
write or fsync error it cannot otherwise provoke on a healthy disk.

`QSTORE_TEST_JOURNAL_FAULTS=PATH` in a broker's environment installs `FaultFile(PATH)` as the
writer's commit: while PATH exists, every append commit is aborted and fails with the errno
named in the file (`EIO` when empty), as LMDB's commit fails when its write or fsync of the data
pages does (the transaction is aborted, the meta page is not written). Removing the file ends the
fault. Unset (always, outside tests), the writer commits with LMDB's own `commit`, and nothing of
this module runs.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

import lmdb

log = logging.getLogger("qstore.journal")

ENV_VAR = "QSTORE_TEST_JOURNAL_FAULTS"


class FaultFile:
    """A commit that fails while `path` exists."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, txn: lmdb.Transaction) -> None:
        try:
            with open(self.path) as f:
                name = f.read().strip() or "EIO"
        except FileNotFoundError:
            txn.commit()
            return
        txn.abort()
        code = getattr(errno, name, errno.EIO)
        raise OSError(code, f"injected {os.strerror(code)} at commit ({ENV_VAR})")


def from_environment() -> Callable[[lmdb.Transaction], None] | None:
    """The fault hook a test asked for in the environment, or None (the normal case)."""
    path = os.environ.get(ENV_VAR)
    if not path:
        return None
    log.warning("journal fault injection is on (%s=%s): for tests only", ENV_VAR, path)
    return FaultFile(path)
