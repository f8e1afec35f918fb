"""What a management request asks of the ACL: (action, object, properties), as qpidd checks it.

Changes are checked on their object (`create queue name=q durable=true`, `bind exchange name=x
queuename=q routingkey=k`, ...); reads of any kind are `access broker`; HA status is a read;
promote and reloading the ACL are `update broker` (promote also needs an HA admin connection).
"""

from __future__ import annotations

from typing import Any

Lookup = tuple[str, str, dict[str, str]]

_CHANGES = {"CREATE": "create", "DELETE": "delete", "PURGE": "purge"}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _flag(value: Any) -> str:
    return "true" if value is True or _text(value).lower() in ("true", "yes", "1") else "false"


def lookup(op: str, kind: str, name: Any, body: dict[str, Any]) -> Lookup:
    """The ACL lookup for one request (op upper case, kind lower case)."""
    if kind == "binding" and op in ("CREATE", "DELETE"):
        props = {
            "name": _text(body.get("exchange")),
            "queuename": _text(body.get("queue")),
            "routingkey": _text(body.get("key")),
        }
        return ("bind" if op == "CREATE" else "unbind"), "exchange", props
    if kind in ("queue", "exchange") and op in _CHANGES:
        props = {"name": _text(name)}
        if op == "CREATE":
            props["durable"] = _flag(body.get("durable"))
            if kind == "queue":
                props["autodelete"] = _flag(body.get("auto-delete"))
            else:
                props["type"] = _text(body.get("type") or "direct")
        return _CHANGES[op], kind, props
    if op in ("PROMOTE", "RELOAD"):
        return "update", "broker", {}
    return "access", "broker", {}
