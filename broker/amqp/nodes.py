"""Addresses to nodes: what a link's source or target names, and creating it when asked.

A queue is addressed by its name, an exchange by its name. An attach to an unknown address is
refused with amqp:not-found, unless the broker runs with `--auto-create yes` or the terminus asks
for creation: the capability `create-on-demand`, or `dynamic` (the broker names a private queue,
used for reply-to addresses). Node properties on the terminus shape what is created: `durable`,
`auto-delete`, `exclusive`, `type` (`queue` | `topic`), `exchange-type`, an `arguments` map, and any
`qpid.*` / `x-*` key, which goes into the arguments (so `qpid.replicate` works as in the seed).
Created on demand, a node is durable unless its properties say `durable: false`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from proton import Data, Terminus

from broker.model import Broker, Exchange, ModelError, NotFound, Queue

from . import codec

CREATE_ON_DEMAND = "create-on-demand"
MayCreate = Callable[[str, str, bool], None]
MANAGEMENT = "$management"


def data_object(d: Data | None) -> Any:
    """A terminus field (capabilities, properties, filter) as plain Python, or None."""
    if d is None:
        return None
    try:
        d.rewind()
        if not d.next():
            return None
        return codec.owned(d.get_object())  # the value under the cursor: next() comes first
    except Exception:
        return None


def capabilities(t: Terminus) -> set[str]:
    caps = data_object(t.capabilities)
    if caps is None:
        return set()
    if isinstance(caps, str):
        return {str(caps)}
    try:
        return {str(c) for c in caps}
    except TypeError:
        return set()


def node_properties(t: Terminus) -> dict[str, Any]:
    props = data_object(t.properties)
    return {str(k): v for k, v in props.items()} if isinstance(props, dict) else {}


def filter_key(t: Terminus) -> str | None:
    """The binding key of a source filter: any filter whose value is a string (the legacy
    direct/topic binding filters, or a plain subject filter), else None."""
    f = data_object(t.filter)
    if not isinstance(f, dict):
        return None
    for value in f.values():
        inner = getattr(value, "value", value)  # a Described filter carries its value inside
        if isinstance(inner, str):
            return inner
    return None


def _truthy(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() in ("true", "yes", "1"))


def creation_arguments(props: dict[str, Any]) -> dict[str, Any]:
    args = dict(props.get("arguments") or {})
    x_declare = props.get("x-declare")
    if isinstance(x_declare, dict):
        args.update(x_declare.get("arguments") or {})
    for k, v in props.items():
        if k.startswith(("qpid.", "x-")) and k != "x-declare":
            args[k] = v
    return {str(k): v for k, v in args.items()}


def resolve(
    model: Broker,
    terminus: Terminus,
    *,
    auto_create: bool,
    owner: Any,
    may_create: MayCreate | None = None,
) -> Queue | Exchange:
    """The node a terminus names, created if allowed; raise ModelError (not-found etc.).
    `may_create(kind, name, durable)` is asked before a node is made on demand and raises to
    refuse (the ACL's `create`); a dynamic node, private to its link, is not asked."""
    address = terminus.address
    if terminus.dynamic:
        props = node_properties(terminus)
        name = f"qstore.tmp.{uuid.uuid4()}"
        q, _ = model.declare_queue(
            name,
            durable=False,
            auto_delete=True,
            exclusive_owner=owner,
            arguments=creation_arguments(props),
        )
        return q
    if not address:
        raise NotFound("the link names no address")
    node = model.resolve(address)
    if node is not None:
        return node
    caps = capabilities(terminus)
    if not (auto_create or CREATE_ON_DEMAND in caps):
        raise NotFound(f"no queue or exchange named {address!r}")
    props = node_properties(terminus)
    # Created on demand, a node is durable unless the client says otherwise: a sender of
    # durable messages to a name the broker invented for it should not lose them on restart.
    durable = _truthy(props.get("durable", True)) or terminus.durability != Terminus.NONDURABLE
    args = creation_arguments(props)
    is_exchange = str(props.get("type", "queue")) in ("topic", "exchange")
    if may_create is not None:
        may_create("exchange" if is_exchange else "queue", address, durable)
    if is_exchange:
        kind = str(props.get("exchange-type", "topic"))
        x, _ = model.declare_exchange(address, kind, durable=durable, arguments=args)
        return x
    exclusive = _truthy(props.get("exclusive"))
    q, _ = model.declare_queue(
        address,
        durable=durable,
        auto_delete=_truthy(props.get("auto-delete")),
        exclusive_owner=owner if exclusive else None,
        arguments=args,
    )
    return q


def subscription_queue(model: Broker, x: Exchange, key: str | None, owner: Any) -> Queue:
    """A receiver on an exchange gets a private auto-delete queue bound with its filter's key,
    or everything the exchange type can express without one (`#` on a topic exchange)."""
    q, _ = model.declare_queue(
        f"qstore.sub.{uuid.uuid4()}", durable=False, auto_delete=True, exclusive_owner=owner
    )
    if key is None:
        key = "#" if x.type == "topic" else ""
    args = {"x-match": "any"} if x.type == "headers" else None
    try:
        model.bind(x.name, q.name, key, args)
    except ModelError:
        model.delete_queue(q.name)
        raise
    return q
