"""The messages of one queue, indexed three ways, all O(1) amortised per message.

- `by_id`: every message on the queue (available or acquired), for settlement and removal by id.
- per priority level, a deque of available messages in queue order: dispatch pops the head of the
  highest non-empty level; a released message goes back to its original position (fast path: the
  front, since it was taken from there; otherwise a bisect on its sequence number).
- `order`: every message in arrival order, for browsers (a cursor that survives removals) and
  sweeps.

Removal is lazy: a removed message is marked dead and stays in the deque/list until popped or until
dead entries outnumber live ones, when the index is rebuilt. Each rebuild costs at most twice the
removals since the last one, so the amortised cost per message stays O(1) and memory stays bounded
even when an old message stays acquired forever at the front.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from operator import attrgetter

from .message import QueuedMessage, State

AVAILABLE = State.AVAILABLE
ACQUIRED = State.ACQUIRED
DEAD = State.DEAD
COMPACT_MIN = 1024  # never rebuild for fewer dead entries than this
_seq = attrgetter("seq")


class Cursor:
    """A browser's place in the queue: the last sequence number it examined."""

    __slots__ = ("gen", "pos", "seq")

    def __init__(self) -> None:
        self.pos = 0
        self.gen = 0
        self.seq = -1


class MessageStore:
    __slots__ = (
        "_dead",
        "_desc",
        "_next_seq",
        "_stale",
        "available",
        "by_id",
        "bytes",
        "generation",
        "levels",
        "order",
    )

    def __init__(self, levels: int = 1) -> None:
        self.levels: list[deque[QueuedMessage]] = [deque() for _ in range(max(1, levels))]
        self._desc = list(reversed(self.levels))  # highest level first
        self.by_id: dict[int, QueuedMessage] = {}
        self.order: list[QueuedMessage] = []
        self.generation = 0  # bumped when `order` is rebuilt (cursors re-find their place)
        self.available = 0
        self.bytes = 0
        self._next_seq = 0
        self._stale = 0  # dead entries still in the level deques
        self._dead = 0  # dead entries still in `order`

    @property
    def depth(self) -> int:
        return len(self.by_id)

    def add(self, e: QueuedMessage) -> None:
        """Put a new message at the back of the queue, available."""
        e.seq = self._next_seq
        self._next_seq += 1
        e.state = AVAILABLE
        self.by_id[e.id] = e
        self.order.append(e)
        self.levels[e.level].append(e)
        self.available += 1
        self.bytes += e.size

    def pop_next(self) -> QueuedMessage | None:
        """Take the next message to deliver (highest level, oldest); it comes back ACQUIRED."""
        if not self.available:
            return None
        for dq in self._desc:
            while dq:
                e = dq.popleft()
                if e.state is AVAILABLE:
                    e.state = ACQUIRED
                    self.available -= 1
                    return e
                self._stale -= 1
        raise AssertionError("available count out of step with the level deques")

    def peek_heads(self) -> list[QueuedMessage]:
        """The next available message of each level (after discarding dead ones)."""
        heads = []
        for dq in self._desc:
            while dq and dq[0].state is not AVAILABLE:
                dq.popleft()
                self._stale -= 1
            if dq:
                heads.append(dq[0])
        return heads

    def pop_oldest(self) -> QueuedMessage | None:
        """Take the ring policy's victim: the oldest available message of the lowest level."""
        if not self.available:
            return None
        for dq in self.levels:
            while dq:
                e = dq.popleft()
                if e.state is AVAILABLE:
                    e.state = ACQUIRED
                    self.available -= 1
                    return e
                self._stale -= 1
        raise AssertionError("available count out of step with the level deques")

    def put_back(self, entries: list[QueuedMessage]) -> None:
        """Make acquired messages available again, each at its original position."""
        for e in sorted(entries, key=_seq, reverse=True):
            e.state = AVAILABLE
            dq = self.levels[e.level]
            if not dq or e.seq < dq[0].seq:
                dq.appendleft(e)  # the usual case: it was taken from the front
            elif e.seq > dq[-1].seq:
                dq.append(e)
            else:
                bisect.insort(dq, e, key=_seq)  # type: ignore[call-overload]
            self.available += 1

    def remove(self, e: QueuedMessage) -> bool:
        """Take a message off the queue for good; False if it already was."""
        if e.state is DEAD or self.by_id.get(e.id) is not e:
            return False
        if e.state is AVAILABLE:
            self.available -= 1
            self._stale += 1
        e.state = DEAD
        del self.by_id[e.id]
        self.bytes -= e.size
        self._dead += 1
        if self._dead > COMPACT_MIN and self._dead > len(self.by_id):
            self._compact_order()
        if self._stale > COMPACT_MIN and self._stale > self.available:
            self._compact_levels()
        return True

    def browse(self, cursor: Cursor) -> QueuedMessage | None:
        """The next available message after `cursor`, moving it; acquired ones are passed over."""
        order = self.order
        if cursor.gen != self.generation:
            cursor.pos = bisect.bisect_right(order, cursor.seq, key=_seq)
            cursor.gen = self.generation
        i, n = cursor.pos, len(order)
        while i < n:
            e = order[i]
            i += 1
            if e.state is AVAILABLE:
                cursor.pos, cursor.seq = i, e.seq
                return e
        if i > cursor.pos:
            cursor.pos, cursor.seq = i, order[i - 1].seq
        return None

    def entries(self) -> Iterator[QueuedMessage]:
        """Live messages (available and acquired) in arrival order; do not mutate meanwhile."""
        return (e for e in self.order if e.state is not DEAD)

    def clear(self) -> list[QueuedMessage]:
        """Forget everything (queue deleted); return what was live."""
        live = list(self.entries())
        for e in live:
            e.state = DEAD
        for dq in self.levels:
            dq.clear()
        self.by_id.clear()
        self.order.clear()
        self.available = self.bytes = self._stale = self._dead = 0
        self.generation += 1
        return live

    def _compact_order(self) -> None:
        self.order = [e for e in self.order if e.state is not DEAD]
        self._dead = 0
        self.generation += 1

    def _compact_levels(self) -> None:
        for dq in self.levels:
            live = [e for e in dq if e.state is AVAILABLE]
            dq.clear()
            dq.extend(live)
        self._stale = 0
