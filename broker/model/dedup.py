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

    __slots__ = ("_added", "_count", "_order", "_unsettled", "dropped", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._order: deque[bytes | None] = deque()
        self._added = 0  # slots ever added: the newest slot is number _added - 1
        self._count: dict[bytes, int] = {}  # id -> slots holding it (1 unless the window reset)
        # id -> numbers of its slots whose publish has no outcome yet (or failed): they do not
        # count, because a resend answered `accepted` on their strength would be lost if their
        # write failed
        self._unsettled: dict[bytes, list[int]] = {}
        self.dropped = 0  # duplicates not enqueued, since the broker started

    def __contains__(self, message_id: bytes) -> bool:
        """The window holds `message_id` from a message that is stored (a publish that was
        answered `accepted`, a replicated or restored message)."""
        n = self._count.get(message_id)
        if n is None:
            return False
        unsettled = self._unsettled.get(message_id)
        return unsettled is None or n > len(unsettled)

    def hold(self, message_id: bytes) -> int:
        """The message just put with this id awaits its outcome (journal, backups): its slot
        does not count until `settled(message_id, slot)`; the slot's number."""
        slot = self._added - 1
        self._unsettled.setdefault(message_id, []).append(slot)
        return slot

    def settled(self, message_id: bytes, slot: int) -> None:
        """That publish was answered `accepted`: the id counts. (One that failed stays
        unsettled until it leaves the window: its message was not stored.)"""
        slots = self._unsettled.get(message_id)
        if slots is not None and slot in slots:
            slots.remove(slot)
            if not slots:
                del self._unsettled[message_id]

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
            oldest = self._added - len(order)  # the number of the slot that leaves
            old = order.popleft()
            if old is not None:
                count = self._count
                n = count[old] - 1
                if n:
                    count[old] = n
                else:
                    del count[old]
                slots = self._unsettled.get(old)
                if slots is not None:  # the slot leaving may be one that never settled
                    self.settled(old, oldest)
        order.append(message_id)
        self._added += 1
        if message_id is not None:
            count = self._count
            count[message_id] = count.get(message_id, 0) + 1

    def reset(self, ids: Iterable[bytes | None]) -> None:
        """Replace the window with `ids`, oldest first (restore; a snapshot)."""
        self._order.clear()
        self._count.clear()
        self._unsettled.clear()
        self._added = 0
        for i in ids:
            self.add(i)

    def entries(self) -> list[bytes | None]:
        """The window, oldest first."""
        return list(self._order)
