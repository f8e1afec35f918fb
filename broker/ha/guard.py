"""QueueGuard (the seed's name): the ack guard's bookkeeping, with no I/O and no clock.

A sender's message to a replicated queue is held, by the origin seq of its enqueue event, until
every backup that was expected when it was enqueued has acknowledged a position at or past that
seq, or a consumer on the primary has acknowledged the message (then no backup needs it). A backup
that leaves the expected set (dropped, timed out) stops holding anything. Holds are released in seq
order; positions only grow, so one pass from the oldest hold suffices.

Who a hold waits for is kept as a membership generation, not as a set per hold: the generation
moves on each time a backup becomes expected, and a backup holds exactly the holds taken at or
after the generation it joined in, for as long as it stays expected. So the holds of one
generation are all due once the lowest position of the backups they wait for reaches them.

The guard is the one owner of the backups' acknowledged positions. Whom it waits for is the HA
role's decision (broker/ha/role.py: Expect / StopExpecting, carried out through `expect` / `drop`);
`expected` and `_since` are that decision as the hot path needs it, not a second record of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

Release = Callable[[Any], None]
MessageKey = tuple[str, int]  # (queue, message id)


class _Hold:
    __slots__ = ("gen", "key", "release", "seq")

    def __init__(self, seq: int, key: MessageKey, gen: int, release: Release | None) -> None:
        self.seq = seq
        self.key = key
        self.gen = gen  # the membership generation when it was taken
        self.release = release  # None once released (consumed: it stays queued until reached)


class QueueGuard:
    def __init__(self) -> None:
        self._holds: deque[_Hold] = deque()  # by seq, oldest first; released ones linger
        self._by_key: dict[MessageKey, _Hold] = {}
        self._count = 0  # holds not yet released
        self.acked: dict[str, int] = {}  # backup name -> highest seq it acknowledged
        self.expected: set[str] = set()  # backups whose acks are required for new holds
        self._since: dict[str, int] = {}  # expected backup -> generation it joined in
        self._gen = 0

    def __len__(self) -> int:
        return self._count

    def expect(self, name: str, acked: int = 0) -> None:
        if name not in self.expected:
            self._gen += 1  # holds taken from now on wait for it; earlier ones do not
            self.expected.add(name)
            self._since[name] = self._gen
        self.acked[name] = max(self.acked.get(name, 0), acked)

    def hold(self, seq: int, key: MessageKey, release: Release) -> bool:
        """Hold a message until the expected backups have it; False (not held) if none expected."""
        if not self.expected:
            return False
        h = _Hold(seq, key, self._gen, release)
        self._holds.append(h)
        self._by_key[key] = h
        self._count += 1
        return True

    def acknowledged(self, name: str, seq: int) -> list[Release]:
        """A backup's position: return the releases now due (the caller runs them)."""
        if seq > self.acked.get(name, 0):
            self.acked[name] = seq
        return self._due()

    def consumed(self, key: MessageKey) -> list[Release]:
        """A consumer acknowledged the message on the primary: its hold goes at once."""
        h = self._by_key.pop(key, None)
        if h is None or h.release is None:
            return []
        release, h.release = h.release, None
        self._count -= 1
        return [release]

    def drop(self, names: Iterable[str]) -> list[Release]:
        """Backups no longer expected (lost, timed out): nothing waits for them any more."""
        for name in set(names):  # once: `names` may be a one-shot iterable
            self.expected.discard(name)
            self.acked.pop(name, None)
            self._since.pop(name, None)
        return self._due()

    def release_all(self) -> list[Release]:
        out = [h.release for h in self._holds if h.release is not None]
        self._holds.clear()
        self._by_key.clear()
        self._count = 0
        return out

    def _low(self, gen: int) -> float:
        """The lowest position among the backups that holds of generation `gen` wait for."""
        acked, low = self.acked, float("inf")
        for name, since in self._since.items():
            if since <= gen:
                a = acked.get(name, -1)
                if a < low:
                    low = a
        return low

    def _due(self) -> list[Release]:
        out: list[Release] = []
        holds, by_key = self._holds, self._by_key
        gen, low = -1, 0.0
        while holds:
            h = holds[0]
            if h.release is not None:
                if h.gen != gen:
                    gen, low = h.gen, self._low(h.gen)
                if h.seq > low:
                    break
                out.append(h.release)
                h.release = None
                if by_key.get(h.key) is h:
                    del by_key[h.key]
            holds.popleft()
        self._count -= len(out)
        return out
