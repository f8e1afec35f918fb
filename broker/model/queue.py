"""A queue: admission policy (limits, ring, last-value), dispatch to consumers, settlement.

Policies, in the order they apply to a new message:
1. last-value (`qpid.last_value_queue_key` K): if the message has property K and an earlier
   *available* message has the same value, the earlier one is dropped (`lvq`) and the new one goes
   to the back. An earlier one that is acquired stays with its consumer; if it is given back later
   it is dropped then, as a newer value exists.
2. limits (`qpid.max_count` messages, `qpid.max_size` bytes of encoded message; acquired messages
   count until settled). At a limit, expired messages at the front are dropped first. Then with
   `qpid.policy_type=reject` (the default) the message is refused; with `ring` the oldest available
   messages of the lowest priority level are dropped (`ring`) until it fits. A ring queue refuses
   only what could never fit (bigger than max_size, or limits filled by acquired messages).
3. priority (`qpid.priorities` N): dispatch takes the highest level first, FIFO within a level;
   the priority to level map is the seed's (see `arguments.priority_table`).

Producer flow control (`flow.py`): past its flow-stop mark a queue is `flow_stopped` (checked on
every enqueue: two comparisons), until it is below its resume marks (checked on a dequeue only
while stopped); each change is told to the usage's listener. It refuses nothing by itself.
Every queue also keeps the broker-wide byte count (`Usage`) as messages come and go.

Expired messages (`Message.expiry <= now`) are never delivered: dispatch and browsing drop them as
they meet them (`expired`); `expire(now)` sweeps the whole queue for a housekeeping timer.

Dispatch is round-robin: the consumers with credit take one message each in turn. Only queues
marked dirty (new message, message given back, credit granted, new consumer) are visited.
"""

from __future__ import annotations

import math
import uuid as uuidlib
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .arguments import QueueSettings, priority_table
from .dedup import DedupWindow
from .events import DeliveryCountChanged, Dequeued, DequeueReason, Emitter
from .flow import SIZE_GUESS, Usage, credit_window
from .message import Message, QueuedMessage, State
from .stats import QueueStats
from .store import MessageStore

if TYPE_CHECKING:
    from .consumer import Consumer
    from .exchange import Binding

AVAILABLE = State.AVAILABLE
EXPIRED = DequeueReason.EXPIRED
CONSUMED = DequeueReason.CONSUMED
Delivery = tuple["Consumer", QueuedMessage]


class Queue:
    def __init__(
        self,
        name: str,
        uuid: uuidlib.UUID,
        *,
        durable: bool,
        auto_delete: bool,
        exclusive_owner: Any,
        arguments: dict[str, Any],
        settings: QueueSettings,
        emitter: Emitter,
        dirty: dict[Queue, None],
        usage: Usage | None = None,
    ) -> None:
        self.name = name
        self.uuid = uuid
        self.durable = durable
        self.auto_delete = auto_delete
        self.exclusive_owner = exclusive_owner
        self.arguments = arguments
        self.settings = settings
        self.deleted = False
        self.bindings: dict[tuple[str, str], Binding] = {}  # (exchange, key) -> binding
        self.consumers: list[Consumer] = []  # every subscription, browsers included
        self.had_consumers = False  # auto-delete only fires once a consumer has come and gone
        self.enqueues = 0
        self.dequeues = 0
        self.acquired = 0
        self.acquired_bytes = 0
        self._store = MessageStore(settings.levels)
        self._next_expiry = math.inf  # no message expires before this (see expire)
        self._prio = priority_table(settings.levels) if settings.levels > 1 else None
        self._lvq: dict[Any, QueuedMessage] | None = {} if settings.lvq_key else None
        self._ready: deque[Consumer] = deque()  # acquiring consumers with credit, in turn
        self._browsers: list[Consumer] = []
        self._em = emitter
        self._dirty = dirty
        self._usage = usage if usage is not None else Usage()
        self.flow_stopped = False
        self.flow_stops = 0  # times flow-stopped since start (qpidd: flowStoppedCount)
        # the stop marks put checks; infinite while stopped or without flow control
        self._stop_count: float = math.inf
        self._stop_size: float = math.inf
        self._arm_flow()
        # the ids of the last N messages put (qstore.dedup-window); None: off
        self.dedup = DedupWindow(settings.dedup_window) if settings.dedup_window else None

    # -- reading -------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return self._store.depth

    @property
    def bytes(self) -> int:
        return self._store.bytes

    @property
    def available(self) -> int:
        return self._store.available

    def messages(self) -> Iterator[QueuedMessage]:
        """Live messages (available and acquired) in arrival order."""
        return self._store.entries()

    def get(self, id: int) -> QueuedMessage | None:
        return self._store.by_id.get(id)

    def stats(self) -> QueueStats:
        return QueueStats(
            name=self.name,
            durable=self.durable,
            depth=self.depth,
            bytes=self.bytes,
            enqueues=self.enqueues,
            dequeues=self.dequeues,
            consumers=len(self.consumers),
            acquired=self.acquired,
            flow_stopped=self.flow_stopped,
            flow_stopped_count=self.flow_stops,
            duplicates_dropped=self.dedup.dropped if self.dedup is not None else 0,
            dedup_window=self.settings.dedup_window,
        )

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, depth={self.depth}, consumers={len(self.consumers)})"

    # -- admission -----------------------------------------------------------------------------

    def admit(self, message: Message, now: float) -> str | None:
        """None if `put` will take `message`, else why not (for resource-limit-exceeded)."""
        s = self.settings
        if not s.limited:
            return None
        size = len(message.body)
        store = self._store
        if (not s.max_size or store.bytes + size <= s.max_size) and (
            not s.max_count or len(store.by_id) < s.max_count
        ):
            return None  # the usual case (every queue has a limit by default): fits as it is
        if self._fits(message, size):
            return None
        self._drop_expired_heads(now)
        if self._fits(message, size):
            return None
        if s.policy == "ring":
            # Ring drops every available message if it must; acquired ones it cannot touch.
            if self._within(self.acquired + 1, self.acquired_bytes + size):
                return None
            return (
                f"ring queue {self.name!r} cannot make room for a {size}-byte message: "
                f"{self._limits()}, and {self.acquired} messages ({self.acquired_bytes} bytes) are "
                f"held by consumers"
            )
        return (
            f"queue {self.name!r} is full: {self.depth} messages, {self.bytes} bytes "
            f"({self._limits()}, policy reject); consume from it or raise its limits"
        )

    def _limits(self) -> str:
        s = self.settings
        parts = [f"qpid.max_count={s.max_count}"] if s.max_count else []
        if s.max_size:
            parts.append(f"qpid.max_size={s.max_size}")
        return ", ".join(parts)

    def _within(self, count: int, nbytes: int) -> bool:
        s = self.settings
        return not ((s.max_count and count > s.max_count) or (s.max_size and nbytes > s.max_size))

    def _fits(self, message: Message, size: int) -> bool:
        """Would the queue be within its limits with `message` added (after any LVQ replacement)?"""
        count, nbytes = self._store.depth + 1, self._store.bytes + size
        old = self._lvq_match(message)
        if old is not None and old.state is AVAILABLE:
            count, nbytes = count - 1, nbytes - old.size
        return self._within(count, nbytes)

    def _lvq_match(self, message: Message) -> QueuedMessage | None:
        if self._lvq is None:
            return None
        key = _lvq_value(message, self.settings.lvq_key)  # type: ignore[arg-type]
        return None if key is None else self._lvq.get(key)

    def put(
        self, id: int, message: Message, *, policy: bool = True, window: bool = True
    ) -> QueuedMessage:
        """Store `message` as `id` at the back. With `policy`, apply last-value replacement and
        ring eviction first (call `admit` before: `put` does not refuse). Without, store it as is
        (restore and replica apply: the source already applied its policies). Without `window`,
        the dedup window is left alone (a start-up restore rebuilds it on its own). Its
        `Enqueued` is the broker's to make (handed back to its caller, not emitted: events.py);
        what it displaces is emitted here, before."""
        if message.expiry is not None and message.expiry < self._next_expiry:
            self._next_expiry = message.expiry
        level = self._prio[min(max(message.priority, 0), 9)] if self._prio else 0
        e = QueuedMessage(self.name, id, message, level)
        if self._lvq is not None:
            key = _lvq_value(message, self.settings.lvq_key)  # type: ignore[arg-type]
            if key is not None:
                old = self._lvq.get(key)
                if policy and old is not None and old.state is AVAILABLE:
                    self.remove(old, DequeueReason.LVQ)
                e.lvq_key = key
                self._lvq[key] = e
        s = self.settings
        if policy and s.policy == "ring" and s.limited:
            store = self._store
            while (s.max_count and store.depth + 1 > s.max_count) or (
                s.max_size and store.bytes + e.size > s.max_size
            ):
                victim = store.pop_oldest()
                if victim is None:
                    break
                self.remove(victim, DequeueReason.RING)
        store = self._store
        store.add(e)
        if window and self.dedup is not None:
            self.dedup.add(message.message_id)
        self.enqueues += 1
        u = self._usage
        u.bytes += e.size + u.overhead
        if u.bytes > u.high:
            u.check_high()
        if store.bytes > self._stop_size or len(store.by_id) > self._stop_count:
            self._flow_stop()
        if self._ready or self._browsers:
            self._dirty[self] = None
        return e

    # -- removal -------------------------------------------------------------------------------

    def remove(self, e: QueuedMessage, reason: DequeueReason) -> bool:
        """Dequeue one message (not acquired, or its acquirer already forgot it)."""
        if not self._store.remove(e):
            return False
        self.dequeues += 1
        u = self._usage
        u.bytes -= e.size + u.overhead
        if u.bytes < u.low:
            u.check_low()
        if self.flow_stopped:
            self._flow_resume()
        if e.lvq_key is not None and self._lvq is not None and self._lvq.get(e.lvq_key) is e:
            del self._lvq[e.lvq_key]
        if self._em.active:
            self._em.emit(Dequeued(self.name, e.id, reason, e.message.durable))
        return True

    def discard(self, id: int, reason: DequeueReason) -> bool:
        """Dequeue message `id` whatever its state (replica apply, management)."""
        e = self._store.by_id.get(id)
        if e is None:
            return False
        c = e.acquirer
        if c is not None:
            del c.acquired[id]
            e.acquirer = None
            self.acquired -= 1
            self.acquired_bytes -= e.size
        return self.remove(e, reason)

    def set_delivery_count(self, id: int, count: int) -> bool:
        e = self._store.by_id.get(id)
        if e is None:
            return False
        e.delivery_count = count
        e.redelivered = e.redelivered or count > 0
        if self._em.active:
            self._em.emit(DeliveryCountChanged(self.name, id, count, e.message.durable))
        return True

    # -- flow control --------------------------------------------------------------------------

    def _arm_flow(self) -> None:
        """Let put watch the stop marks (running, with flow control) or nothing (stopped)."""
        flow = self.settings.flow
        if flow is None or self.flow_stopped:
            self._stop_count = self._stop_size = math.inf
        else:
            self._stop_count = flow.stop_count or math.inf
            self._stop_size = flow.stop_size or math.inf

    def _flow_stop(self) -> None:
        self.flow_stopped = True
        self.flow_stops += 1
        self._arm_flow()
        u = self._usage
        u.stopped += 1
        if u.listener is not None:
            u.listener(self, True)

    def _flow_resume(self, force: bool = False) -> None:
        flow = self.settings.flow
        if not force and flow is not None and not flow.resumes(self.depth, self.bytes):
            return
        self.flow_stopped = False
        self._arm_flow()
        u = self._usage
        u.stopped -= 1
        if u.listener is not None:
            u.listener(self, False)

    def credit_window(self, most: int, message_size: int = 0) -> int:
        """The credit a link publishing into this queue should keep open (`flow.credit_window`),
        sized for messages like the larger of the queue's average and `message_size`."""
        s = self.settings
        if s.flow is None:
            return most
        depth = len(self._store.by_id)
        size = max(self._store.bytes // depth if depth else 0, message_size) or SIZE_GUESS
        return credit_window(s.flow, s.max_count, s.max_size, size, most)

    def flow_limits_text(self) -> str:
        """The marks, for log lines."""
        f = self.settings.flow
        if f is None:
            return "no flow control"
        parts = []
        if f.stop_count:
            parts.append(f"stops above {f.stop_count} messages, resumes below {f.resume_count}")
        if f.stop_size:
            parts.append(f"stops above {f.stop_size} bytes, resumes below {f.resume_size}")
        return "; ".join(parts)

    def _drop_expired_heads(self, now: float) -> None:
        store = self._store
        while True:
            expired = [h for h in store.peek_heads() if _expired(h, now)]
            if not expired:
                return
            for h in expired:
                self.remove(h, EXPIRED)

    def expire(self, now: float) -> int:
        """Drop every available expired message; return how many. A queue none of whose
        messages can have expired yet (`_next_expiry`, a lower bound) is not walked at all."""
        if now < self._next_expiry:
            return 0
        doomed = [e for e in self._store.entries() if e.state is AVAILABLE and _expired(e, now)]
        for e in doomed:
            self.remove(e, EXPIRED)
        left = [e.message.expiry for e in self._store.entries() if e.message.expiry is not None]
        self._next_expiry = min(left, default=math.inf)
        return len(doomed)

    def purge(self) -> int:
        """Drop every available message (acquired ones stay with their consumers)."""
        doomed = [e for e in self._store.entries() if e.state is AVAILABLE]
        for e in doomed:
            self.remove(e, DequeueReason.PURGE)
        return len(doomed)

    def clear(self) -> list[Consumer]:
        """The queue is being deleted: forget messages and close consumers (no events)."""
        self.deleted = True
        u = self._usage
        u.bytes -= self._store.bytes + u.overhead * self._store.depth
        self._store.clear()
        if self.flow_stopped:  # links held by it must not wait for a queue that is gone
            self._flow_resume(force=True)
        u.check_low()
        if self._lvq is not None:
            self._lvq.clear()
        closed = list(self.consumers)
        for c in closed:
            c.closed = True
            c.ready = False
            c.acquired.clear()
        self.consumers.clear()
        self._ready.clear()
        self._browsers.clear()
        self._dirty.pop(self, None)
        return closed

    # -- consumers -----------------------------------------------------------------------------

    def add_consumer(self, c: Consumer) -> None:
        self.consumers.append(c)
        self.had_consumers = True
        if c.browse:
            self._browsers.append(c)
        self.credit_changed(c)

    def remove_consumer(self, c: Consumer) -> None:
        """Detach `c`; everything it had acquired comes back with delivery count + 1."""
        self.consumers.remove(c)
        if c.browse:
            self._browsers.remove(c)
        if c.ready:
            self._ready.remove(c)
            c.ready = False
        c.closed = True
        held = list(c.acquired.values())
        c.acquired.clear()
        if held:
            self.give_back(held, delivery_failed=True)

    def credit_changed(self, c: Consumer) -> None:
        """Keep the invariant: an acquiring consumer is in the round-robin iff it has credit."""
        if c.credit > 0:
            if not c.browse and not c.ready:
                self._ready.append(c)
                c.ready = True
            self._dirty[self] = None
        elif c.ready:
            self._ready.remove(c)
            c.ready = False

    def dispatch(self, now: float, out: list[Delivery]) -> None:
        """Append the deliveries to make now to `out`: round-robin over consumers with credit."""
        store, ready = self._store, self._ready
        while ready and store.available:
            e = store.pop_next()
            assert e is not None
            expiry = e.message.expiry
            if expiry is not None and expiry <= now:
                self.remove(e, EXPIRED)
                continue
            c = ready.popleft()
            c.credit -= 1
            if c.credit > 0:
                ready.append(c)
            else:
                c.ready = False
            if c.presettled:
                self.remove(e, CONSUMED)
            else:
                e.acquirer = c
                c.acquired[e.id] = e
                self.acquired += 1
                self.acquired_bytes += e.size
            out.append((c, e))
        for b in self._browsers:
            cursor = b.cursor
            assert cursor is not None
            while b.credit > 0:
                e = store.browse(cursor)
                if e is None:
                    break
                if _expired(e, now):
                    self.remove(e, EXPIRED)
                    continue
                b.credit -= 1
                out.append((b, e))

    # -- settlement ----------------------------------------------------------------------------

    def settle(self, c: Consumer, id: int, reason: DequeueReason) -> bool:
        """The consumer's outcome dequeues the message (accepted: consumed; rejected)."""
        e = c.acquired.pop(id, None)
        if e is None:
            return False
        e.acquirer = None
        self.acquired -= 1
        self.acquired_bytes -= e.size
        return self.remove(e, reason)

    def release(self, c: Consumer, id: int, delivery_failed: bool) -> bool:
        e = c.acquired.pop(id, None)
        if e is None:
            return False
        self.give_back([e], delivery_failed)
        return True

    def give_back(self, held: list[QueuedMessage], delivery_failed: bool) -> None:
        """Return acquired messages to their original positions (their acquirer forgot them)."""
        keep = []
        for e in held:
            e.acquirer = None
            self.acquired -= 1
            self.acquired_bytes -= e.size
            e.redelivered = True
            if delivery_failed:
                e.delivery_count += 1
                if self._em.active:
                    self._em.emit(
                        DeliveryCountChanged(self.name, e.id, e.delivery_count, e.message.durable)
                    )
            lvq = self._lvq
            if lvq is not None and e.lvq_key is not None and lvq.get(e.lvq_key) is not e:
                self.remove(e, DequeueReason.LVQ)  # a newer value arrived while it was out
            else:
                keep.append(e)
        if keep:
            self._store.put_back(keep)
            if self._ready or self._browsers:
                self._dirty[self] = None


def _expired(e: QueuedMessage, now: float) -> bool:
    expiry = e.message.expiry
    return expiry is not None and expiry <= now


def _lvq_value(message: Message, key: str) -> Any:
    value = message.properties.get(key)
    if value is None:
        return None
    try:
        hash(value)
    except TypeError:
        return None  # a list or map value cannot be a last-value key: treat as keyless
    return value
