"""A queue's dedup window: the message-ids of the last N messages put on it.

A producer that resends after a fail-over (it never got the outcome) sends the same message-id
again; a queue whose window holds that id answers `accepted` and does not enqueue it again
(`Broker._deliver`). The window counts messages, not ids: a message without a message-id takes
a slot too (as `None`), so that the journal, which keeps the window by keeping records
(qstore/journal/state.py), can follow it without reading any message.

Keys are the message-id as encoded in the message (`Message.message_id`): a resend carries the
same bytes. Memory: a deque slot per message plus, per distinct id, a dict entry and the id's
bytes (tests/test_dedup_window.py: about 150 bytes per 40-byte string id, the bytes included).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class DedupWindow:
    """The last `size` message-ids, oldest first; membership in O(1)."""

    __slots__ = ("_count", "_order", "dropped", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._order: deque[bytes | None] = deque()
        self._count: dict[bytes, int] = {}  # id -> slots holding it (1 unless the window reset)
        self.dropped = 0  # duplicates not enqueued, since the broker started

    def __contains__(self, message_id: bytes) -> bool:
        return message_id in self._count

    def __len__(self) -> int:
        return len(self._order)

    @property
    def ids(self) -> int:
        """Distinct message-ids held."""
        return len(self._count)

    def add(self, message_id: bytes | None) -> None:
        """A message was put on the queue: its id enters, the oldest leaves if full."""
        order = self._order
        if len(order) >= self.size:
            old = order.popleft()
            if old is not None:
                count = self._count
                n = count[old] - 1
                if n:
                    count[old] = n
                else:
                    del count[old]
        order.append(message_id)
        if message_id is not None:
            count = self._count
            count[message_id] = count.get(message_id, 0) + 1

    def reset(self, ids: Iterable[bytes | None]) -> None:
        """Replace the window with `ids`, oldest first (restore; a snapshot)."""
        self._order.clear()
        self._count.clear()
        for i in ids:
            self.add(i)

    def entries(self) -> list[bytes | None]:
        """The window, oldest first."""
        return list(self._order)
