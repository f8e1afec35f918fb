"""The broker's namespace: queues, exchanges and bindings, and who is told when they change.

`Registry` is the configuration half of `Broker` (which extends it with the message flow):
declaring and deleting queues and exchanges, binding, lookup by name, and the event listeners.
Queue and exchange names live in separate namespaces; an AMQP address is resolved queue first
(`resolve`), as the seed does. Deleting a queue removes its bindings and closes its consumers;
deleting an exchange removes its bindings; neither announces those implied removals.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from qstore.exchanges import is_builtin_exchange

from .arguments import (
    DEDUP_WINDOW,
    check_arguments,
    parse_exchange_arguments,
    parse_queue_arguments,
)
from .consumer import Consumer
from .errors import InvalidField, NotAllowed, NotFound, PreconditionFailed, ResourceLocked
from .events import (
    Bound,
    Emitter,
    ExchangeDeclared,
    ExchangeDeleted,
    Listener,
    QueueDeclared,
    QueueDeleted,
    Unbound,
)
from .exchange import BUILTINS, TYPES, Binding, DefaultExchange, Exchange
from .flow import Usage
from .queue import Queue

log = logging.getLogger(__name__)

MAX_NAME_BYTES = 65535  # the journal's limit for names


class Registry:
    """Queues, exchanges and bindings by name; consumers by owning connection; listeners."""

    def __init__(self) -> None:
        self._em = Emitter()
        self._dirty: dict[Queue, None] = {}  # queues that may have deliveries to make
        self.queues: dict[str, Queue] = {}  # read-only for callers
        self.exchanges: dict[str, Exchange] = {"": DefaultExchange(self.queues)}
        for name, kind in BUILTINS.items():
            self.exchanges[name] = TYPES[kind](
                name,
                uuidlib.uuid5(uuidlib.NAMESPACE_URL, "qstore:" + name),
                durable=True,
                builtin=True,
            )
        self._by_owner: dict[Any, dict[Consumer, None]] = {}
        self._owned: dict[Any, set[str]] = {}  # exclusive owner -> queue names
        self._retired = [0, 0, 0, 0]  # enqueues, dequeues, routed, dropped of deleted entities
        # Bytes held by all queues, the memory watermark, the flow-control listener (flow.py).
        self.usage = Usage()
        # --default-queue-limit: the size limit of queues that set none (see arguments.py).
        self.default_queue_limit = 0
        # --dedup-window: written into the arguments of each new queue that sets none (not a
        # connection's private queue), so that the journal and the backups have it as an argument
        self.default_dedup_window = 0
        # Arguments a deployment adds to every new queue/exchange that lacks them, e.g. an HA
        # primary writes the replication level a default gave: fill(kind, name, args, exclusive,
        # auto_delete) -> args. Applied before validation; None: arguments kept as given.
        self.fill_arguments: (
            Callable[[str, str, dict[str, Any], bool, bool], dict[str, Any]] | None
        ) = None

    # -- events --------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._em.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._em.remove(listener)

    @contextmanager
    def restoring(self) -> Iterator[None]:
        """Rebuild state from a journal: no events are emitted inside."""
        self._em.mute()
        try:
            yield
        finally:
            self._em.unmute()

    # -- lookup --------------------------------------------------------------------------------

    def queue(self, name: str) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise NotFound(f"no queue named {name!r}")
        return q

    def exchange(self, name: str) -> Exchange:
        x = self.exchanges.get(name)
        if x is None:
            raise NotFound(f"no exchange named {name!r}")
        return x

    def resolve(self, name: str) -> Queue | Exchange | None:
        """What an AMQP address names: a queue if one has the name, else an exchange, else None."""
        return self.queues.get(name) or self.exchanges.get(name)

    # -- queues --------------------------------------------------------------------------------

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        exclusive_owner: Any = None,
        arguments: dict[str, Any] | None = None,
        uuid: uuidlib.UUID | None = None,
    ) -> tuple[Queue, bool]:
        """Create a queue, or return the existing one: (queue, created).

        `exclusive_owner` (a connection id) makes it consumable by that connection only.
        Asking for exclusivity on an existing queue another connection owns is resource-locked.
        """
        _check_name(name, "queue")
        q = self.queues.get(name)
        if q is not None:
            if exclusive_owner is not None and q.exclusive_owner not in (None, exclusive_owner):
                raise ResourceLocked(f"queue {name!r} is exclusive to another connection")
            return q, False
        args = check_arguments(arguments, "queue")
        if (
            self.default_dedup_window
            and uuid is None  # not a restored or replicated queue: it has the arguments it had
            and exclusive_owner is None
            and DEDUP_WINDOW not in args
        ):
            args = {**args, DEDUP_WINDOW: self.default_dedup_window}
        if self.fill_arguments is not None:
            args = self.fill_arguments(
                "queue", name, args, exclusive_owner is not None, auto_delete
            )
        settings = parse_queue_arguments(args, self.default_queue_limit)
        q = Queue(
            name,
            uuid or uuidlib.uuid4(),
            durable=durable,
            auto_delete=auto_delete,
            exclusive_owner=exclusive_owner,
            arguments=args,
            settings=settings,
            emitter=self._em,
            dirty=self._dirty,
            usage=self.usage,
        )
        self.queues[name] = q
        if exclusive_owner is not None:
            self._owned.setdefault(exclusive_owner, set()).add(name)
        log.debug("queue %r declared (durable=%s, arguments=%s)", name, durable, args)
        self._em.emit(QueueDeclared(name, q.uuid, durable, auto_delete, exclusive_owner, args))
        return q, True

    def owned_count(self, owner: Any) -> int:
        """How many exclusive queues `owner` (a connection id) holds now."""
        return len(self._owned.get(owner, ()))

    def delete_queue(
        self, name: str, *, if_empty: bool = False, if_unused: bool = False
    ) -> list[Consumer]:
        """Delete a queue with its messages and bindings. Returns the consumers it closed (the
        AMQP layer detaches their links); their unsettled messages are gone with the queue."""
        q = self.queue(name)
        if if_unused and q.consumers:
            raise PreconditionFailed(f"queue {name!r} has {len(q.consumers)} consumers")
        if if_empty and q.depth:
            raise PreconditionFailed(
                f"queue {name!r} holds {q.depth} messages; purge it first or force the delete"
            )
        return self._delete_queue(q)

    def _delete_queue(self, q: Queue) -> list[Consumer]:
        for exchange, key in q.bindings:
            self.exchanges[exchange].unbind(q.name, key)
        q.bindings.clear()
        closed = q.clear()
        for c in closed:
            self._forget_owner(c)
        del self.queues[q.name]
        owned = self._owned.get(q.exclusive_owner)
        if owned is not None:
            owned.discard(q.name)
        self._retired[0] += q.enqueues
        self._retired[1] += q.dequeues
        log.debug("queue %r deleted", q.name)
        self._em.emit(QueueDeleted(q.name, q.uuid))
        return closed

    # -- exchanges and bindings ----------------------------------------------------------------

    def declare_exchange(
        self,
        name: str,
        type: str,
        *,
        durable: bool = False,
        arguments: dict[str, Any] | None = None,
        uuid: uuidlib.UUID | None = None,
    ) -> tuple[Exchange, bool]:
        """Create an exchange of `type` (direct|topic|fanout|headers) or return the existing one
        of that type: (exchange, created). Names starting `amq.` are reserved."""
        if type not in TYPES:
            raise InvalidField(
                f"unknown exchange type {type!r}; use one of {', '.join(sorted(TYPES))}"
            )
        x = self.exchanges.get(name)
        if x is not None:
            if x.type != type:
                raise PreconditionFailed(
                    f"exchange {name!r} already exists with type {x.type}, not {type}"
                )
            return x, False
        _check_name(name, "exchange")
        if is_builtin_exchange(name):
            raise NotAllowed(f"exchange name {name!r}: names starting 'amq.' are reserved")
        args = check_arguments(arguments, "exchange")
        if self.fill_arguments is not None:
            args = self.fill_arguments("exchange", name, args, False, False)
        parse_exchange_arguments(args)
        x = TYPES[type](name, uuid or uuidlib.uuid4(), durable=durable, arguments=args)
        self.exchanges[name] = x
        log.debug("exchange %r (%s) declared", name, type)
        self._em.emit(ExchangeDeclared(name, x.uuid, type, durable, args))
        return x, True

    def delete_exchange(self, name: str) -> None:
        x = self.exchange(name)
        if x.builtin:
            raise NotAllowed(f"exchange {name!r} is built in and cannot be deleted")
        for qname, key in list(x.bindings):
            self.queues[qname].bindings.pop((name, key), None)
        del self.exchanges[name]
        self._retired[2] += x.routed
        self._retired[3] += x.dropped
        log.debug("exchange %r deleted", name)
        self._em.emit(ExchangeDeleted(name, x.uuid))

    def bind(
        self, exchange: str, queue: str, key: str = "", arguments: dict[str, Any] | None = None
    ) -> bool:
        """Bind; True if a binding was made or its arguments changed, False if it already was."""
        x, q = self.exchange(exchange), self.queue(queue)
        if not isinstance(key, str):
            raise InvalidField(f"binding key must be a string, got {key!r}")
        args = check_arguments(arguments, "binding")
        x.check_binding(key, args)
        old = x.bindings.get((queue, key))
        if old is not None and old.arguments == args:
            return False
        b = Binding(exchange, queue, key, args)
        x.bind(b, q)
        q.bindings[(exchange, key)] = b
        self._em.emit(Bound(exchange, queue, key, args))
        return True

    def unbind(self, exchange: str, queue: str, key: str = "") -> bool:
        """Remove a binding; False if there was none."""
        x, q = self.exchange(exchange), self.queue(queue)
        if x.unbind(queue, key) is None:
            return False
        del q.bindings[(exchange, key)]
        self._em.emit(Unbound(exchange, queue, key))
        return True

    def _forget_owner(self, c: Consumer) -> None:
        mine = self._by_owner.get(c.owner)
        if mine is not None:
            mine.pop(c, None)
            if not mine:
                del self._by_owner[c.owner]


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidField(f"{what} name must be a non-empty string, got {name!r}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidField(f"{what} name is longer than {MAX_NAME_BYTES} bytes: {name[:40]!r}...")
