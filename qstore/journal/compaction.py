"""Which records compaction may delete, and in what order.

Units come from `JournalState.apply`, in the order of their cancelling record. A unit is deleted
front to back (cancelled records first, the canceller last), so a crash between two bounded
transactions leaves a journal that still replays to the same state. A horizon (a local seq) holds
back units whose canceller is newer than it: an HA backup that may have to truncate its journal at
a point shared with a primary keeps the records that the prefix up to that point needs. The
canceller is kept with each unit because it is not always in it (a Delivery or a re-declare
cancels an older record but stays live itself).

The newest record is never deleted (its unit waits for the next append): a reopened journal learns
its last seq and position from it, so seqs and origin seqs are not reused after a restart.
"""

from __future__ import annotations

from collections import deque


class CompactionQueue:
    """Pending garbage units, handed out in bounded batches."""

    def __init__(self) -> None:
        self._units: deque[tuple[int, list[int]]] = deque()  # (canceller seq, seqs)
        self.pending = 0  # seqs waiting
        self.removed = 0  # seqs deleted since open
        self.horizon: int | None = None
        self.newest = 0  # seq of the newest record in the journal
        self._taken_canceller = 0  # newest canceller of the last batch taken (for restore)

    def add(self, unit: list[int], canceller: int | None = None) -> None:
        """Queue one unit; `canceller` is the seq of the record that cancelled it.

        The writer also sets `newest` after each commit, as records that cancel nothing are
        not added here.
        """
        if canceller:
            self.newest = max(self.newest, canceller)
        if unit:
            c = max(unit[-1], canceller or 0)
            self._units.append((c, unit))
            self.pending += len(unit)

    def clear(self) -> None:
        self._units.clear()
        self.pending = 0
        self.newest = 0

    def _limit(self) -> int:
        """The newest canceller whose unit may go now."""
        limit = self.newest - 1
        return limit if self.horizon is None else min(limit, self.horizon)

    def ready(self) -> bool:
        return bool(self._units) and self._units[0][0] <= self._limit()

    def take(self, limit: int) -> list[int]:
        """Up to `limit` seqs, whole units first, a large unit split front to back."""
        batch: list[int] = []
        self._taken_canceller = 0
        newest_allowed = self._limit()
        while self._units and len(batch) < limit:
            canceller, unit = self._units[0]
            if canceller > newest_allowed:
                break
            self._taken_canceller = canceller
            room = limit - len(batch)
            if len(unit) <= room:
                batch.extend(self._units.popleft()[1])
            else:
                batch.extend(unit[:room])
                self._units[0] = (canceller, unit[room:])
        self.pending -= len(batch)
        return batch

    def restore(self, batch: list[int]) -> None:
        """Put back a batch whose transaction failed (as one unit, so its order holds)."""
        if batch:
            self._units.appendleft((self._taken_canceller, batch))
            self.pending += len(batch)

    def done(self, n: int) -> None:
        self.removed += n
