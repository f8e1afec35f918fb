"""Which records compaction may delete, and in what order.

Units come from `JournalState.apply`, in the order of their cancelling record. A unit is deleted
front to back (cancelled records first, the canceller last), so a crash between two bounded
transactions leaves a journal that still replays to the same state. A horizon (a local seq) holds
back units whose canceller is newer than it: an HA backup that may have to truncate its journal at
a point shared with a primary keeps the records that the prefix up to that point needs.
"""

from __future__ import annotations

from collections import deque


class CompactionQueue:
    """Pending garbage units, handed out in bounded batches."""

    def __init__(self) -> None:
        self._units: deque[list[int]] = deque()
        self.pending = 0  # seqs waiting
        self.removed = 0  # seqs deleted since open
        self.horizon: int | None = None

    def add(self, unit: list[int]) -> None:
        if unit:
            self._units.append(unit)
            self.pending += len(unit)

    def clear(self) -> None:
        self._units.clear()
        self.pending = 0

    def ready(self) -> bool:
        if not self._units:
            return False
        return self.horizon is None or self._units[0][-1] <= self.horizon

    def take(self, limit: int) -> list[int]:
        """Up to `limit` seqs, whole units first, a large unit split front to back."""
        batch: list[int] = []
        while self._units and len(batch) < limit:
            unit = self._units[0]
            if self.horizon is not None and unit[-1] > self.horizon:
                break
            room = limit - len(batch)
            if len(unit) <= room:
                batch.extend(self._units.popleft())
            else:
                batch.extend(unit[:room])
                self._units[0] = unit[room:]
        self.pending -= len(batch)
        return batch

    def restore(self, batch: list[int]) -> None:
        """Put back a batch whose transaction failed (as one unit, so its order holds)."""
        if batch:
            self._units.appendleft(batch)
            self.pending += len(batch)

    def done(self, n: int) -> None:
        self.removed += n
