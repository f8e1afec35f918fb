"""QueueGuard (the seed's name): the ack guard's bookkeeping, with no I/O and no clock.

A sender's message to a replicated queue is held, by the origin seq of its enqueue event, until
every backup that was expected when it was enqueued has acknowledged a position at or past that
seq, or a consumer on the primary has acknowledged the message (then no backup needs it). A backup
that leaves the expected set (dropped, timed out) stops holding anything. Holds are released in seq
order; positions only grow, so one pass from the oldest hold suffices.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

Release = Callable[[Any], None]
MessageKey = tuple[str, int]  # (queue, message id)


class _Hold:
    __slots__ = ("key", "release", "required", "seq")

    def __init__(self, seq: int, key: MessageKey, required: frozenset[str], release: Release):
        self.seq = seq
        self.key = key
        self.required = required
        self.release = release


class QueueGuard:
    def __init__(self) -> None:
        self._holds: OrderedDict[int, _Hold] = OrderedDict()  # by seq, oldest first
        self._by_key: dict[MessageKey, int] = {}
        self.acked: dict[str, int] = {}  # backup name -> highest seq it acknowledged
        self.expected: set[str] = set()  # backups whose acks are required for new holds

    def __len__(self) -> int:
        return len(self._holds)

    def expect(self, name: str, acked: int = 0) -> None:
        self.expected.add(name)
        self.acked[name] = max(self.acked.get(name, 0), acked)

    def hold(self, seq: int, key: MessageKey, release: Release) -> bool:
        """Hold a message until the expected backups have it; False (not held) if none expected."""
        if not self.expected:
            return False
        self._holds[seq] = _Hold(seq, key, frozenset(self.expected), release)
        self._by_key[key] = seq
        return True

    def acknowledged(self, name: str, seq: int) -> list[Release]:
        """A backup's position: return the releases now due (the caller runs them)."""
        if seq > self.acked.get(name, 0):
            self.acked[name] = seq
        return self._due()

    def consumed(self, key: MessageKey) -> list[Release]:
        """A consumer acknowledged the message on the primary: its hold goes at once."""
        seq = self._by_key.pop(key, None)
        if seq is None:
            return []
        hold = self._holds.pop(seq)
        return [hold.release]

    def drop(self, names: Iterable[str]) -> list[Release]:
        """Backups no longer expected (lost, timed out): nothing waits for them any more."""
        gone = set(names)  # once: `names` may be a one-shot iterable
        for name in gone:
            self.expected.discard(name)
            self.acked.pop(name, None)
        if gone:
            for hold in self._holds.values():
                if hold.required & gone:
                    hold.required = hold.required - gone
        return self._due()

    def release_all(self) -> list[Release]:
        out = [h.release for h in self._holds.values()]
        self._holds.clear()
        self._by_key.clear()
        return out

    def _due(self) -> list[Release]:
        out: list[Release] = []
        acked = self.acked
        while self._holds:
            seq, hold = next(iter(self._holds.items()))
            if any(acked.get(b, -1) < seq for b in hold.required if b in self.expected):
                break
            self._holds.popitem(last=False)
            self._by_key.pop(hold.key, None)
            out.append(hold.release)
        return out
