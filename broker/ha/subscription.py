"""What one backup is sent next, decided without I/O (the seed's ReplicatingSubscription).

The primary's `BackupStream` (broker/ha/primary.py) owns the link: delivery tags, the batches in
flight, waking the connection. This module owns the choice it makes each time it has room: which
items form the next batch, which enqueue/dequeue pairs never need sending, which seq a batch's
settlement acknowledges, and when the backup has been sent everything. Kept apart, that choice is
plain data in and out, and is tested in-process (tests/test_ha_subscription.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from broker.replication import stream
from broker.replication.stream import Item

BATCH_ITEMS = 1000
BATCH_BYTES = 256 << 10
# Batches a backup may have unsettled. What is published meanwhile waits and goes as one larger
# batch when one settles: the backup's journal commits one batch at a time anyway, so this costs
# no latency under load and saves the per-batch work of all three brokers (ha_bench: cluster CPU
# 240-280 -> 190-230 ms per 1000 messages, 10-12.7k -> 13.2-14k msg/s; 1 was slower, 3 alike).
MAX_IN_FLIGHT = 2
# What a backup is sent to catch up (the snapshot or the tail queued when it attached) goes in
# larger batches, more of them in flight: with 2 of 256 KiB each waiting for the backup's apply,
# fsync and settlement, a snapshot crawled at 40 MB/s (1 GiB in 26 s); with more in flight the
# backup always has the next batch, and its journal commits several in one transaction.
CATCH_UP_IN_FLIGHT = 8
CATCH_UP_BATCH_ITEMS = 4096
CATCH_UP_BATCH_BYTES = 1 << 20
Key = tuple[str, int]
_ENQUEUE, _DEQUEUE = stream.RT_ENQUEUE, stream.RT_DEQUEUE


def item_size(it: Item) -> int:
    """What an item counts against BATCH_BYTES (the same whether it still has its payload)."""
    return len(it.record.body) + 64 if it.kind == _ENQUEUE else 64  # type: ignore[union-attr]


class ReplicatingSubscription:
    """One backup's unsent items and the choice of its next batch.

    The catch-up queued at attach goes first, in catch-up batches (its items are made as they are
    taken), then what is published. An enqueue still pending when its message is consumed is
    never sent, nor is its dequeue: a message consumed before it reached a backup never reaches it.
    """

    def __init__(self) -> None:
        # the catch-up: `backlog` is its next item, None once all taken
        self.backlog: Item | None = None
        self._backlog: Iterator[Item] = iter(())
        self.pending: list[Item | None] = []
        # unsent enqueue -> its index counted from the stream's start (`_base` is the index of
        # pending[0]): entries below `_base` were sent and are only dropped lazily
        self._enqueues: dict[Key, int] = {}
        self._base = 0
        self._bytes = 0  # what `item_size` counts of the pending items (dropped pairs excluded)
        self._holes = 0  # dropped pairs' places (None) in pending
        self.added = 0  # highest seq given to this subscription, dropped pairs included
        self.sent = 0  # highest seq acknowledged by a batch already taken

    def add(self, item: Item, key: Key | None = None, size: int | None = None) -> None:
        """Queue an item; `key` (queue, message id) for enqueues and dequeues; `size` is
        `item_size(item)` if the caller has it."""
        seq = item.seq
        if seq > self.added:
            self.added = seq
        if key is not None:
            kind = item.kind
            if kind == _ENQUEUE:
                self._enqueues[key] = self._base + len(self.pending)
            elif kind == _DEQUEUE:
                at = self._enqueues.pop(key, None)
                if at is not None and at >= self._base:
                    # never sent: drop the pair, the backup needs neither
                    at -= self._base
                    self._bytes -= item_size(self.pending[at])  # type: ignore[arg-type]
                    self.pending[at] = None
                    self._holes += 1
                    return
        self.pending.append(item)
        self._bytes += item_size(item) if size is None else size

    def catch_up(self, items: Iterator[Item], last: int) -> None:
        """What the backup needs before anything published from now on (sent first); `last`:
        the highest seq among them."""
        self._backlog = items
        self.backlog = next(items, None)
        self.added = max(self.added, last)

    def has_unsent(self) -> bool:
        """Whether a batch may still come (room in flight is all it waits for)."""
        return bool(self.pending) or self.backlog is not None

    def oldest_unsent(self) -> int | None:
        """The seq of the oldest item not yet taken into a batch, None if there is none."""
        if self.backlog is not None:  # older than anything pending (published later)
            return self.backlog.seq
        for it in self.pending:
            if it is not None:
                return it.seq
        return None

    def next_batch(self, in_flight: int, credit: int) -> tuple[list[Item], int] | None:
        """The next batch to send and the seq its settlement acknowledges, or None: nothing to
        send, or no room (`in_flight` batches unsettled, `credit` of the link). A batch returned
        counts as sent."""
        if credit <= 0:
            return None
        if self.backlog is not None:
            if in_flight >= CATCH_UP_IN_FLIGHT:
                return None
            batch = self._backlog_batch()
            last = batch[-1].seq
            if self.backlog is None and not self.pending:
                last = max(last, self.added)  # as below: the batch stands for all given
            if last > self.sent:
                self.sent = last
            return batch, last
        pending = self.pending
        if not pending or in_flight >= MAX_IN_FLIGHT:
            return None
        if len(pending) <= BATCH_ITEMS and self._bytes < BATCH_BYTES:
            # all of it fits one batch (the common case: what one loop turn published)
            taken = len(pending)
            batch = [it for it in pending if it is not None] if self._holes else pending
            self.pending = []
            self._bytes = self._holes = 0
        else:
            batch = []
            size = taken = 0
            for it in pending:
                taken += 1
                if it is None:
                    self._holes -= 1
                    continue
                batch.append(it)
                size += item_size(it)
                if len(batch) >= BATCH_ITEMS or size >= BATCH_BYTES:
                    break
            del pending[:taken]
            self._bytes = self._bytes - size if pending else 0
        self._base += taken
        if not self.pending:
            self._enqueues.clear()  # every entry is below `_base` now
        elif len(self._enqueues) > 2 * len(self.pending) + 1024:  # a backlog: shed sent ones
            base = self._base
            self._enqueues = {k: at for k, at in self._enqueues.items() if at >= base}
        last = batch[-1].seq if batch else 0  # type: ignore[union-attr]
        if not self.pending:
            # Everything given is sent or was a dropped pair: the batch stands for all of it,
            # else a backup whose last items were such a pair would never reach its target.
            last = max(last, self.added)
        if not batch and last <= self.sent:
            return None  # only dropped pairs, already acknowledged by a batch sent: nothing to send
        if last > self.sent:
            self.sent = last
        return batch, last  # type: ignore[return-value]

    def _backlog_batch(self) -> list[Item]:
        """The next catch-up batch, read from the backlog as it goes."""
        batch: list[Item] = []
        it, rest, size = self.backlog, self._backlog, 0
        while it is not None and len(batch) < CATCH_UP_BATCH_ITEMS and size < CATCH_UP_BATCH_BYTES:
            batch.append(it)
            size += item_size(it)
            it = next(rest, None)
        self.backlog = it
        return batch
