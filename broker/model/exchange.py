"""Exchanges and bindings: which queues a message goes to.

Types: `direct` (binding key == routing key), `topic` (patterns, see `topic.py`), `fanout` (every
bound queue), `headers` (binding arguments against the message's application properties: `x-match`
is `all` (the default) or `any`; other `x-` arguments are ignored; a binding value of None only
asks the property to be present; a value equals a property when they are equal, or when one is a
string equal to the other's `str()`, since command-line tools bind with text). The default exchange
"" routes to the queue named by the routing key and takes no bindings.

`match(routing_key, message)` returns each matching queue once, in binding order, however many of
its bindings match. Exchanges hold their bound `Queue` objects; the broker keeps both sides of a
binding in step (queue deleted -> its bindings go).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import topic
from .errors import InvalidField, NotAllowed
from .message import Message
from .queue import Queue
from .stats import ExchangeStats

TOPIC_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Binding:
    exchange: str
    queue: str
    key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)


class Exchange:
    type: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        uuid: uuidlib.UUID,
        *,
        durable: bool = False,
        arguments: dict[str, Any] | None = None,
        builtin: bool = False,
    ) -> None:
        self.name = name
        self.uuid = uuid
        self.durable = durable
        self.arguments = arguments or {}
        self.builtin = builtin
        self.bindings: dict[tuple[str, str], Binding] = {}  # (queue, key) -> binding
        self.routed = 0
        self.dropped = 0

    def check_binding(self, key: str, arguments: dict[str, Any]) -> None:
        """Raise `ModelError` if this binding cannot be made here."""

    def bind(self, binding: Binding, queue: Queue) -> None:
        """Add a binding, or replace the arguments of the one with the same queue and key."""
        k = (binding.queue, binding.key)
        old = self.bindings.get(k)
        if old is not None:
            self._remove(old)
        self.bindings[k] = binding
        self._add(binding, queue)

    def unbind(self, queue: str, key: str) -> Binding | None:
        b = self.bindings.pop((queue, key), None)
        if b is not None:
            self._remove(b)
        return b

    def _add(self, b: Binding, queue: Queue) -> None:
        raise NotImplementedError

    def _remove(self, b: Binding) -> None:
        raise NotImplementedError

    def match(self, routing_key: str, message: Message) -> list[Queue]:
        raise NotImplementedError

    def stats(self) -> ExchangeStats:
        return ExchangeStats(
            self.name, self.type, self.durable, len(self.bindings), self.routed, self.dropped
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, bindings={len(self.bindings)})"


class DirectExchange(Exchange):
    type = "direct"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._index: dict[str, dict[str, Queue]] = {}  # key -> queue name -> queue

    def _add(self, b: Binding, queue: Queue) -> None:
        self._index.setdefault(b.key, {})[b.queue] = queue

    def _remove(self, b: Binding) -> None:
        _discard(self._index, b.key, b.queue)

    def match(self, routing_key: str, message: Message) -> list[Queue]:
        found = self._index.get(routing_key)
        return list(found.values()) if found else []


class FanoutExchange(Exchange):
    type = "fanout"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._targets: dict[str, Queue] = {}
        self._refs: dict[str, int] = {}  # a queue may be bound with several keys

    def _add(self, b: Binding, queue: Queue) -> None:
        self._targets[b.queue] = queue
        self._refs[b.queue] = self._refs.get(b.queue, 0) + 1

    def _remove(self, b: Binding) -> None:
        self._refs[b.queue] -= 1
        if not self._refs[b.queue]:
            del self._refs[b.queue], self._targets[b.queue]

    def match(self, routing_key: str, message: Message) -> list[Queue]:
        return list(self._targets.values())


class TopicExchange(Exchange):
    type = "topic"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._exact: dict[str, dict[str, Queue]] = {}  # literal key -> queue name -> queue
        self._wild: dict[tuple[str, str], tuple[tuple[str, ...], Queue]] = {}
        self._cache: dict[str, list[Queue]] = {}  # routing key -> result; reset on any change

    def _add(self, b: Binding, queue: Queue) -> None:
        if topic.is_wildcard(b.key):
            self._wild[(b.queue, b.key)] = (topic.words(b.key), queue)
        else:
            self._exact.setdefault(b.key, {})[b.queue] = queue
        self._cache = {}

    def _remove(self, b: Binding) -> None:
        if self._wild.pop((b.queue, b.key), None) is None:
            _discard(self._exact, b.key, b.queue)
        self._cache = {}

    def match(self, routing_key: str, message: Message) -> list[Queue]:
        hit = self._cache.get(routing_key)
        if hit is None:
            found = dict(self._exact.get(routing_key, {}))
            if self._wild:
                key = topic.words(routing_key)
                for (qname, _), (pattern, q) in self._wild.items():
                    if qname not in found and topic.match(pattern, key):
                        found[qname] = q
            hit = list(found.values())
            if len(self._cache) >= TOPIC_CACHE_MAX:
                self._cache = {}
            self._cache[routing_key] = hit
        return list(hit)


class HeadersExchange(Exchange):
    type = "headers"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (queue, key) -> (x-match is any, [(property, wanted value)], queue)
        self._rules: dict[tuple[str, str], tuple[bool, list[tuple[str, Any]], Queue]] = {}

    def check_binding(self, key: str, arguments: dict[str, Any]) -> None:
        mode = arguments.get("x-match", "all")
        if mode not in ("all", "any"):
            raise InvalidField(
                f"headers binding argument x-match must be 'all' or 'any', got {mode!r}"
            )

    def _add(self, b: Binding, queue: Queue) -> None:
        wanted = [(k, v) for k, v in b.arguments.items() if not k.startswith("x-")]
        self._rules[(b.queue, b.key)] = (b.arguments.get("x-match", "all") == "any", wanted, queue)

    def _remove(self, b: Binding) -> None:
        del self._rules[(b.queue, b.key)]

    def match(self, routing_key: str, message: Message) -> list[Queue]:
        props = message.properties
        found: dict[str, Queue] = {}
        for (qname, _), (any_, wanted, q) in self._rules.items():
            if qname in found:
                continue
            hits = (k in props and (v is None or _equal(props[k], v)) for k, v in wanted)
            if any(hits) if any_ else all(hits):
                found[qname] = q
        return list(found.values())


def _discard(index: dict[str, dict[str, Queue]], key: str, qname: str) -> None:
    queues = index.get(key)
    if queues is not None:
        queues.pop(qname, None)
        if not queues:
            del index[key]


def _equal(have: Any, want: Any) -> bool:
    if have == want:
        return True
    if isinstance(want, str) and not isinstance(have, str):
        return _text(have) == want
    if isinstance(have, str) and not isinstance(want, str):
        return have == _text(want)
    return False


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class DefaultExchange(Exchange):
    """The nameless exchange: routing key = queue name. Takes no bindings."""

    type = "direct"

    def __init__(self, queues: Mapping[str, Queue]) -> None:
        super().__init__("", uuidlib.UUID(int=0), durable=True, builtin=True)
        self._all = queues

    def check_binding(self, key: str, arguments: dict[str, Any]) -> None:
        raise NotAllowed(
            "the default exchange routes to the queue named by the routing key and takes no "
            "bindings; bind to amq.direct or an exchange of your own"
        )

    def match(self, routing_key: str, message: Message) -> list[Queue]:
        q = self._all.get(routing_key)
        return [q] if q is not None else []


TYPES: dict[str, type[Exchange]] = {
    cls.type: cls for cls in (DirectExchange, TopicExchange, FanoutExchange, HeadersExchange)
}
BUILTINS: dict[str, str] = {
    "amq.direct": "direct",
    "amq.topic": "topic",
    "amq.fanout": "fanout",
    "amq.match": "headers",
}
