"""The two kinds of link a client attaches, as the broker sees them.

`IncomingLink` (the client sends): messages are routed into the model; each delivery is settled
`accepted` once what it put on durable queues is in the journal, `rejected` (with the model's
condition) when a queue refuses it. `OutgoingLink` (the client receives): a model consumer whose
deliveries the outbox sends; the client's outcomes (accepted, released, modified, rejected) are
passed back to the model.

The per-message paths (`on_raw_delivery`, `send`) call the engine through cproton's bare
functions on pointers: proton's wrapper objects (a Delivery, its Link, Session, ...) cost more
CPU than everything else a message does. Rare paths (rejects, credit, drain) keep the wrappers.
A raw delivery pointer is never touched after it was settled (proton may free it then); one whose
outcome waits for the journal is kept alive by a reference of our own (`pn_incref`).

Producer flow control acts where an incoming link's credit is refilled (below half its window),
so the per-message path pays nothing for it. A link into a flow-stopped queue, a link to an
exchange or the anonymous relay whose message just routed landed in a flow-stopped queue, and
every link while the memory alarm is up, get no refill: they wait in the `FlowGate` until what
held them is gone, then are credited at once. Messages that do arrive are routed as ever (never
refused for flow control; only a queue's limit refuses, by its policy).

The overshoot: the sender keeps the credit it already has, so up to a window of messages can
still come after a queue stops (proton offers no way to take credit back; withholding the refill
is all a receiver can do, and all it needs to). A link into a queue with limits therefore keeps a
window sized so that one producer's credit cannot carry the queue from its stop mark to its limit
(`Queue.credit_window`: at most WINDOW, at least 1, re-sized at each refill from the queue's
average message size); a link to an exchange starts with the smallest window of the queues bound
to it, the relay with WINDOW, and either takes, at each refill, the smallest window of the queues
its message just reached. Several producers together can still reach the limit, where the reject
policy refuses as before. The memory alarm sizes no window: each link may overshoot by its
window. HA replication and management links are not `IncomingLink`s: never flow-controlled.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from cproton_ffi import ffi, lib
from proton import Condition, Delivery, Link

from broker.model import (
    Consumer,
    DequeueReason,
    Exchange,
    ModelError,
    PublishResult,
    Queue,
    QueuedMessage,
)
from qstore.journal import JournalFull

from . import codec
from .limits import MESSAGE_SIZE_EXCEEDED, NO_LIMIT, RESOURCE_LIMIT, TRANSFER_LIMIT_EXCEEDED

if TYPE_CHECKING:
    from broker.model.dedup import DedupWindow
    from broker.net import EnginePump

    from .connection import AmqpConnection

log = logging.getLogger("qstore.amqp")

INTERNAL_ERROR = "amqp:internal-error"
DECODE_ERROR = "amqp:decode-error"
NOT_FOUND = "amqp:not-found"
WINDOW = 1000  # credit kept open on each incoming link, at most (see the module doc)
MEMORY = "memory alarm"  # what holds a link while the broker's memory alarm is up

_from_buffer = ffi.from_buffer
_incref, _decref = lib.pn_incref, lib.pn_decref
_partial, _readable = lib.pn_delivery_partial, lib.pn_delivery_readable
_pending = lib.pn_delivery_pending
_settled, _remote_state = lib.pn_delivery_settled, lib.pn_delivery_remote_state  # the peer's
_update, _settle, _new_delivery = lib.pn_delivery_update, lib.pn_delivery_settle, lib.pn_delivery
_current = lib.pn_link_current
_recv, _send, _advance = lib.pn_link_recv, lib.pn_link_send, lib.pn_link_advance
_credit, _flow = lib.pn_link_credit, lib.pn_link_flow
_EOS = lib.PN_EOS
_ABORTED = -11  # PN_ABORTED (proton/error.h), which cproton does not export
_outgoing = codec.outgoing
_ACCEPTED, _REJECTED = lib.PN_ACCEPTED, lib.PN_REJECTED
_RELEASED, _MODIFIED = lib.PN_RELEASED, lib.PN_MODIFIED


def reject(dlv: Delivery, condition: str, description: str) -> None:
    dlv.local.condition = Condition(condition, description)
    dlv.update(Delivery.REJECTED)
    dlv.settle()


class SizeLimited:
    """What every link the client sends on shares: its messages' size limit, advertised in our
    attach (`max-message-size`), and the count of a message's bytes as its transfers arrive
    (proton makes a delivery event per transfer frame). A message over the limit, complete or
    not, ends the link with amqp:link:message-size-exceeded; the bytes of messages still
    arriving on all links of the connection are bounded too (`Limits.incomplete_budget`), else
    each of its links could hold one message just under the limit. Either way the delivery is
    settled, which frees what proton holds of it, and the rest of it is dropped as it comes."""

    conn: AmqpConnection
    link: Link

    def _limit_size(self, limit: int, source: str = "--max-message-size") -> None:
        """Call before the link is opened (the limit goes out in our attach). `source`: where
        the limit comes from, for the refusal's description."""
        self._max_size = limit
        self._limit_source = source
        self._partial = 0  # bytes of the message arriving now, counted in conn.incomplete
        if limit < NO_LIMIT:
            self.link.max_message_size = limit

    def _arriving(self, dlv: Any) -> None:
        """A transfer of a message not yet complete came in (or, not partial, news of one
        already taken: the peer settled it)."""
        if not _partial(dlv):
            return
        pending = _pending(dlv)
        if pending > self._max_size:
            self._too_big(dlv, pending, " or more")
            return
        conn = self.conn
        conn.incomplete += pending - self._partial
        self._partial = pending
        budget = conn.limits.incomplete_budget
        if conn.incomplete > budget:
            self._refuse_message(
                dlv,
                RESOURCE_LIMIT,
                f"{conn.incomplete} bytes of messages still arriving on this connection exceed "
                f"{budget} (twice --max-message-size)",
            )

    def _arrived(self) -> None:
        """The message whose transfers were being counted is complete (or gone)."""
        self.conn.incomplete -= self._partial
        self._partial = 0

    def _too_big(self, dlv: Any, size: int, more: str = "") -> None:
        self._refuse_message(
            dlv,
            MESSAGE_SIZE_EXCEEDED,
            f"a message of {size}{more} bytes exceeds the limit of {self._max_size} bytes "
            f"({self._limit_source})",
        )

    def _refuse_message(self, dlv: Any, condition: str, description: str) -> None:
        self._arrived()
        reject(Delivery.wrap(dlv), condition, description)  # settled: proton frees its bytes
        conn = self.conn
        text = f"closed link {self.link.name!r}: {condition} {description}"
        conn.notices.refused(condition, text)
        conn.close_link(self.link, condition, description)

    def _top_up(self, dlv: Any, credit: int, window: int) -> bool:
        """Credit back to `window` (called once a delivery took it below half); False if the
        sender overran it (`_overrun`: `dlv` refused, the link ended)."""
        if credit < 0:
            self._overrun(credit, dlv)
            return False
        _flow(self.link._impl, window - credit)
        return True

    def _overrun(self, credit: int, dlv: Any = None) -> None:
        """Credit below zero: the sender went past what it was given, by transfers beyond it or
        by a flow that moved its delivery-count past it (proton checks neither, and the credit
        to grant back would not fit its int). The link ends with
        amqp:link:transfer-limit-exceeded; `dlv`, if given, is refused."""
        text = f"the sender went past the credit it was given (link-credit now {credit})"
        if dlv is not None:
            self._refuse_message(dlv, TRANSFER_LIMIT_EXCEEDED, text)
            return
        conn = self.conn
        link = self.link
        conn.notices.refused(
            TRANSFER_LIMIT_EXCEEDED,
            f"closed link {link.name!r}: {TRANSFER_LIMIT_EXCEEDED} {text}",
        )
        conn.close_link(link, TRANSFER_LIMIT_EXCEEDED, text)

    def _aborted(self, dlv: Any) -> None:
        """The sender gave up on a message part-sent (AMQP 2.6.12): forget it."""
        self._arrived()
        _settle(dlv)


class IncomingLink(SizeLimited):
    """Messages from the client to a queue, an exchange, or (no address) each message's `to`."""

    def __init__(self, conn: AmqpConnection, link: Link, node: Queue | Exchange | None) -> None:
        self.conn = conn
        self.link = link
        self.node = node
        self._link = link._impl
        self._limit_size(conn.limits.message_size)
        self._held: set[Any] = set()  # deliveries we hold a reference to until their outcome
        # The ACL's say per message, where the routing key varies (an exchange, the relay);
        # None when there is nothing to check (no ACL, or a queue: checked at attach).
        self._may_publish = conn.publisher(node.name) if isinstance(node, Exchange) else None
        self._relay_checked = node is None and conn.publisher("") is not None
        # On a backup: refuses what would write into a replicated queue; None on a primary.
        self._guard = conn.write_guard()
        self._gate = conn.core.flow
        self._window = WINDOW if node is None else self._first_window(node)
        self._low = WINDOW // 2  # refill when credit falls below this
        self.held_by: Queue | str | None = None  # what withholds our credit (flow control)
        self._held_result: PublishResult | None = None
        self._closed = False
        self._refill(0, None, 0)  # the first grant, unless already held

    def on_delivery(self, dlv: Delivery) -> None:
        self.on_raw_delivery(dlv._impl)

    def on_raw_delivery(self, dlv: Any) -> None:
        """A delivery (a cproton pointer) has data: once complete, route it."""
        if _partial(dlv) or not _readable(dlv):
            self._arriving(dlv)  # the rest of a large message is still coming
            return
        link = self._link
        size = _pending(dlv)
        if size > self._max_size:
            self._too_big(dlv, size)
            return
        if self._partial:
            self._arrived()
        data = bytearray(size)
        got = _recv(link, _from_buffer(data), size)
        if got != size:
            if got == _ABORTED:
                self._aborted(dlv)
                return
            if got < 0 and got != _EOS:
                self.link._check(got)  # raises, as Link.recv does
            data = data[: max(got, 0)]
        _advance(link)
        credit = _credit(link)
        if _settled(dlv):  # the client sent it pre-settled: at most once, no outcome wanted
            result = self._route(data, None)
            _settle(dlv)
        else:
            _incref(dlv)  # its outcome may wait for the journal: keep it alive until then
            self._held.add(dlv)
            result = self._route(data, dlv)
        if credit < self._low:  # after routing: flow control looks at where it went
            self._refill(credit, result, size)

    def _refill(self, credit: int, result: PublishResult | None, size: int) -> bool:
        """Top the credit up to the window, unless flow control holds the link (then it waits
        in the gate); True if held. `result`: the message just routed, `size` its size."""
        holder = self._holder(result)
        gate = self._gate
        if holder is not None and gate is not None:
            self.held_by, self._held_result = holder, result
            gate.hold(self)
            return True
        if self.held_by is not None:
            self.held_by = self._held_result = None
            if gate is not None:
                gate.forget(self)
        window = self._window = self._window_for(result, size)
        self._low = max(1, window // 2)
        if credit < 0:  # the message that came is routed; the link ends
            self._overrun(credit)
        elif credit < self._low:
            _flow(self._link, window - credit)
        return False

    def _holder(self, result: PublishResult | None) -> Queue | str | None:
        """What keeps this link from more credit now: the memory alarm, its flow-stopped queue,
        or a flow-stopped queue its last message (`result`) landed in; None if nothing."""
        model = self.conn.core.model
        if model.usage.alarm:
            return MEMORY
        node = self.node
        if isinstance(node, Queue):
            return node if node.flow_stopped else None
        if result is not None:
            queues = model.queues
            for name in result.queues:
                q = queues.get(name)
                if q is not None and q.flow_stopped:
                    return q
        return None

    def _first_window(self, node: Queue | Exchange) -> int:
        """Before any message: a queue's window, or the smallest of the queues bound to an
        exchange now (the ones its messages may reach; attach is rare, so all are looked at)."""
        if isinstance(node, Queue):
            return node.credit_window(WINDOW)
        queues = self.conn.core.model.queues
        return min(
            (q.credit_window(WINDOW) for name, _ in node.bindings if (q := queues.get(name))),
            default=WINDOW,
        )

    def _window_for(self, result: PublishResult | None, size: int) -> int:
        node = self.node
        if isinstance(node, Queue):
            return node.credit_window(WINDOW, size)
        if result is None or not result.queues:
            return self._window  # nothing new learnt about where its messages go
        queues = self.conn.core.model.queues
        return min(
            (q.credit_window(WINDOW, size) for n in result.queues if (q := queues.get(n))),
            default=WINDOW,
        )

    def retry_credit(self) -> bool:
        """The gate's pass after a queue resumed or the alarm cleared: credit the link if nothing
        holds it now, and wake its connection to say so. True once it needs the gate no more."""
        if self._closed or self.conn.gone:
            return True
        if self._refill(_credit(self._link), self._held_result, 0):
            return False
        self.conn.pump.wake()
        return True

    def _route(self, data: bytes, dlv: Any) -> PublishResult | None:
        core = self.conn.core
        now = core.clock()
        try:
            message, decoded = codec.extract(data, now)
        except codec.BadMessage as exc:
            if dlv is not None:
                self._reject(dlv, DECODE_ERROR, str(exc))
            return None
        node = self.node
        model = core.model
        try:
            if node is None:
                to = decoded.address
                target = model.resolve(to) if to else None
                if target is None:
                    raise _NoRoute(f"no queue or exchange named {to!r} (the message's 'to')")
                node = target
                if self._relay_checked:
                    self._check_relay(node, message.subject)
            elif self._may_publish is not None and not self._may_publish(message.subject or ""):
                raise _Denied(f"ACL denied {self.conn.user} publish exchange {node.name!r}")
            if self._guard is not None:
                self._guard(node, message)
            if isinstance(node, Queue):
                result = model.enqueue(node.name, message, now)
            else:
                result = model.publish(node.name, message, now)
        except (ModelError, _NoRoute, _Denied) as exc:
            if dlv is not None:
                self._reject(dlv, getattr(exc, "condition", NOT_FOUND), str(exc))
            return None
        events = core.events
        # what its outcome waits for (journal, backups); None: nothing, settled at once
        pending = events.record_publish(result) if events is not None else None
        core.outbox.schedule()
        if dlv is None:
            return result
        if not result.accepted:
            self._reject(dlv, result.condition or RESOURCE_LIMIT, result.description or "refused")
            return result
        if pending is None:
            self._settle(dlv, None)
            return result
        windows = _hold_ids(model, result, message.message_id)
        if windows is None:
            pending.when_done(lambda err: self._settle(dlv, err, result))
        else:
            mid = message.message_id

            def done(err: BaseException | None) -> None:
                if err is None:
                    for w, slot in windows:
                        w.settled(mid, slot)
                self._settle(dlv, err, result)

            pending.when_done(done)
        return result

    def _check_relay(self, node: Queue | Exchange, subject: str | None) -> None:
        """The anonymous relay: the ACL decides per message, by where its `to` leads."""
        exchange, key = ("", node.name) if isinstance(node, Queue) else (node.name, subject or "")
        may_publish = self.conn.publisher(exchange)
        if may_publish is not None and not may_publish(key):
            raise _Denied(f"ACL denied {self.conn.user} publish exchange {exchange!r} key {key!r}")

    def _reject(self, dlv: Any, condition: str, description: str) -> None:
        """Rare: through a wrapper, which knows how to carry the condition."""
        if self._release(dlv):
            reject(Delivery.wrap(dlv), condition, description)
            _decref(dlv)

    def _settle(self, dlv: Any, error: BaseException | None, result: Any = None) -> None:
        if error is not None and result is not None and result.id is not None:
            # Not stored (journal full): the sender is told `rejected`, so the message must not
            # stay queued either (unless a consumer already holds it: then at least once).
            model, events = self.conn.core.model, self.conn.core.events
            for q in result.queues:
                if q in model.queues:
                    with events.not_stored(q) if events else contextlib.nullcontext():
                        model.remove_message(q, result.id, DequeueReason.REJECTED)
        if self.conn.gone:
            if self._release(dlv):
                _decref(dlv)
            return
        if error is not None:  # a full journal may take it later; a write error says no more
            condition = RESOURCE_LIMIT if isinstance(error, JournalFull) else INTERNAL_ERROR
            self._reject(dlv, condition, f"not stored: {error}")
        elif self._release(dlv):
            _update(dlv, _ACCEPTED)
            _settle(dlv)
            _decref(dlv)
        self.conn.pump.wake()

    def _release(self, dlv: Any) -> bool:
        """True if we still hold `dlv` (the caller then drops our reference)."""
        try:
            self._held.remove(dlv)
        except KeyError:
            return False  # the connection went and close() let it go
        return True

    def close(self) -> None:
        if self._partial:  # the link went while a message was arriving
            self._arrived()
        self._closed = True
        if self._gate is not None:
            self._gate.forget(self)
        if self.conn.gone:  # outcomes that never came must not keep the engine's memory alive
            held, self._held = self._held, set()
            for dlv in held:
                _decref(dlv)


class _NoRoute(Exception):
    condition = NOT_FOUND


class _Denied(Exception):
    condition = "amqp:unauthorized-access"


class OutgoingLink:
    """A consumer (or browser) of a queue, fed by the outbox."""

    def __init__(self, conn: AmqpConnection, link: Link, consumer: Consumer) -> None:
        self.conn = conn
        self.link = link
        self.consumer = consumer
        self.pump: EnginePump = conn.pump
        self._link = link._impl
        self._tags = 0
        self._drained = 0  # credit given back to drains, which counts as deliveries
        # The most credit the receiver has had at once: at 1 it may be proton's prefetch 1,
        # which refills only on a flow from us (senderflow.py).
        self._window = 0
        # unsettled delivery pointer -> the message id it carries; popped when we settle it
        self._ids: dict[Any, Any] = {}
        self._flows = conn.flows
        self._flows.attaching(self)

    def __repr__(self) -> str:
        return f"OutgoingLink({self.link.name!r}, queue={self.consumer.queue.name!r})"

    @property
    def deliveries(self) -> int:
        """What the link's delivery-count has advanced by since the attach."""
        return self._tags + self._drained

    def on_flow(self) -> None:
        core = self.conn.core
        credit = self.link.credit
        if credit > self._window:
            self._window = credit
        if not self.conn.paused:
            core.model.set_credit(self.consumer, credit)
        if self.link.drain_mode:
            core.outbox.drain_requested(self)
        core.outbox.schedule()

    def send(self, qm: QueuedMessage) -> None:
        self._tags += 1
        tag = str(self._tags).encode()
        link = self._link
        dlv = _new_delivery(link, (len(tag), _from_buffer(tag)))
        head, body, start = _outgoing(qm)
        if head:
            _send(link, head, len(head))
        sent = _send(link, _from_buffer(body) + start, len(body) - start)
        if sent < 0:
            self.link._check(sent)  # raises, as Link.stream does
        _advance(link)
        consumer = self.consumer
        if consumer.presettled or consumer.browse:
            _settle(dlv)  # no outcome will come: forget it
        else:
            self._ids[dlv] = qm.id
        if self._window == 1 and consumer.credit == 0:
            self._flows.want(self)  # its last credit: it may wait for a flow to refill

    def drain(self) -> bool:
        """The receiver asked to drain: whatever credit is left after dispatch is used up."""
        if self.consumer.closed or not self.link.drain_mode:
            return False
        self._drained += self.link.drained()
        self.conn.core.model.set_credit(self.consumer, self.link.credit)
        return True

    def on_delivery(self, dlv: Delivery) -> None:
        self.on_raw_delivery(dlv._impl)

    def on_raw_delivery(self, dlv: Any) -> None:
        """The client's outcome for a message we sent (`dlv`: a cproton pointer)."""
        ids = self._ids
        id_ = ids.get(dlv)
        if id_ is None:
            # Not ours (ours are never the link's current delivery once sent): the peer sent a
            # transfer on a link where it receives.
            if _current(self._link) == dlv:
                self.conn.wrong_direction(self.link)
            return
        state = _remote_state(dlv)
        if not state:  # proton reports no state as 0
            if not _settled(dlv):
                return  # nothing to act on yet
            # Settled without an outcome: the client is done with the message and no outcome
            # can follow. AMQP leaves it to the source's default-outcome, which ours do not set;
            # accepted is what a client that settles means. Kept acquired, the message would be
            # stuck with the consumer until its link went.
            state = _ACCEPTED
        model = self.conn.core.model
        if state == _ACCEPTED:
            model.accept(self.consumer, id_)
        elif state == _REJECTED:
            model.reject(self.consumer, id_)
        elif state == _RELEASED:
            model.release(self.consumer, id_)
        elif state == _MODIFIED:
            remote = lib.pn_delivery_remote(dlv)
            if lib.pn_disposition_is_undeliverable(remote):
                model.reject(self.consumer, id_)
            else:
                failed = bool(lib.pn_disposition_is_failed(remote))
                model.release(self.consumer, id_, delivery_failed=failed)
        else:
            return  # a non-terminal state (received): wait for the outcome
        del ids[dlv]
        _settle(dlv)
        self.conn.core.outbox.schedule()

    def close(self) -> None:
        self._ids.clear()
        self._flows.forget(self)
        self.conn.core.model.unsubscribe(self.consumer)
        self.conn.core.outbox.schedule()


def _hold_ids(
    model: Any, result: Any, message_id: bytes | None
) -> list[tuple[DedupWindow, int]] | None:
    """The dedup windows that took this message's id, with its slot, held there until the
    publish is answered (None: none did): a resend is recognised only once the original is
    stored."""
    if message_id is None or result.id is None:
        return None
    windows = None
    for name in result.queues:
        q = model.queues.get(name)
        w = q.dedup if q is not None else None
        if w is not None:
            windows = [*(windows or ()), (w, w.hold(message_id))]
    return windows
