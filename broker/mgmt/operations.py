"""What each management operation does, as plain calls on the model.

- queue: CREATE (body: durable, auto-delete, arguments), READ, DELETE (body or property `force`
  to delete a non-empty queue), PURGE, QUERY.
- exchange: CREATE (body: type, durable, arguments), READ, DELETE, QUERY.
- binding: CREATE and DELETE (body: exchange, queue, key, arguments), QUERY (body: exchange?,
  queue? to filter).
- broker: READ (information and statistics). connection: QUERY (the open connections).

Status codes: 200 OK, 201 created, 204 deleted, 400 bad request (invalid arguments, such as a
`qpid.replicate` value other than none|configuration|all), 404 not found, 409 conflict (a
precondition such as deleting a non-empty queue without `force`), 501 unknown operation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from proton import Condition

from broker.model import ModelError, NotFound, Queue
from qstore.ha import ADMIN_PROPERTY

if TYPE_CHECKING:
    from broker.amqp.connection import AmqpConnection, Core

STATUS = {
    "amqp:not-found": 404,
    "amqp:precondition-failed": 409,
    "amqp:resource-locked": 409,
    "amqp:invalid-field": 400,
    "amqp:not-allowed": 400,
    "amqp:resource-limit-exceeded": 403,
}


RESOURCE_DELETED = "amqp:resource-deleted"


@dataclass(frozen=True)
class Response:
    code: int
    description: str
    body: Any = None


OK = "OK"


def _bool(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() in ("true", "yes", "1"))


def _map(value: Any) -> dict[str, Any]:
    """A map argument (absent: empty); anything else is the client's mistake (a 400)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"a map was expected, not {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


class Operations:
    def __init__(self, core: Core, info: Callable[[], dict[str, Any]]) -> None:
        self.core = core
        self.info = info

    def run(
        self,
        op: str,
        kind: str,
        name: Any,
        props: dict[str, Any],
        body: Any,
        conn: AmqpConnection,
    ) -> Response:
        fn = getattr(self, f"{kind}_{op.lower()}".replace("-", "_"), None)
        if fn is None or not op or not kind:
            return Response(501, f"unsupported operation {op!r} on type {kind!r}")
        try:
            return fn(None if name is None else str(name), {**_map(body), **_extra(props)}, conn)
        except ModelError as exc:
            return Response(STATUS.get(exc.condition, 400), str(exc.description or exc))
        except (TypeError, ValueError) as exc:
            return Response(400, f"bad request: {exc}")

    # -- queues ---------------------------------------------------------------------------------

    def queue_create(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        if not name:
            return Response(400, "queue CREATE needs a name")
        q, created = self.core.model.declare_queue(
            name,
            durable=_bool(body.get("durable")),
            auto_delete=_bool(body.get("auto-delete")),
            arguments=_map(body.get("arguments")),
        )
        return Response(201 if created else 200, "created" if created else OK, self._queue(q))

    def queue_read(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        return Response(200, OK, self._queue(self.core.model.queue(name or "")))

    def queue_delete(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        closed = self.core.model.delete_queue(name or "", if_empty=not _bool(body.get("force")))
        for c in closed:
            out = c.context
            if out is not None:  # tell the receiver why its link goes
                out.link.condition = Condition(RESOURCE_DELETED, f"queue {name!r} was deleted")
                out.link.close()
                out.conn.pump.wake()
        return Response(204, "deleted")

    def queue_purge(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        n = self.core.model.purge(name or "")
        return Response(200, OK, {"purged": n})

    def queue_query(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        return Response(200, OK, [self._queue(q) for q in self.core.model.queues.values()])

    def _queue(self, q: Queue) -> dict[str, Any]:
        d = asdict(q.stats())
        # producer flow control under qpidd's QMF names
        d["flowStopped"] = d.pop("flow_stopped")
        d["flowStoppedCount"] = d.pop("flow_stopped_count")
        # the dedup window (issue 15): messages not enqueued as their id was in it
        d["duplicatesDropped"] = d.pop("duplicates_dropped")
        d["dedupWindow"] = d.pop("dedup_window")
        d.update(
            {
                "uuid": str(q.uuid),
                "auto-delete": q.auto_delete,
                "exclusive": q.exclusive_owner is not None,
                "arguments": dict(q.arguments),
            }
        )
        return d

    # -- exchanges ------------------------------------------------------------------------------

    def exchange_create(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        if not name:
            return Response(400, "exchange CREATE needs a name")
        x, created = self.core.model.declare_exchange(
            name,
            str(body.get("type", "direct")),
            durable=_bool(body.get("durable")),
            arguments=_map(body.get("arguments")),
        )
        return Response(201 if created else 200, "created" if created else OK, self._exchange(x))

    def exchange_read(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        return Response(200, OK, self._exchange(self.core.model.exchange(name or "")))

    def exchange_delete(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        self.core.model.delete_exchange(name or "")
        return Response(204, "deleted")

    def exchange_query(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        return Response(200, OK, [self._exchange(x) for x in self.core.model.exchanges.values()])

    def _exchange(self, x: Any) -> dict[str, Any]:
        d = asdict(x.stats())
        d.update({"uuid": str(x.uuid), "arguments": dict(x.arguments), "builtin": x.builtin})
        return d

    # -- bindings -------------------------------------------------------------------------------

    def binding_create(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        x, q = str(body.get("exchange", "")), str(body.get("queue", ""))
        key = str(body.get("key", ""))
        made = self.core.model.bind(x, q, key, _map(body.get("arguments")) or None)
        return Response(201 if made else 200, "created" if made else OK)

    def binding_delete(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        x, q = str(body.get("exchange", "")), str(body.get("queue", ""))
        if not self.core.model.unbind(x, q, str(body.get("key", ""))):
            raise NotFound(f"no binding of queue {q!r} to exchange {x!r} with that key")
        return Response(204, "deleted")

    def binding_query(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        want_x, want_q = body.get("exchange"), body.get("queue")
        out = []
        for q in self.core.model.queues.values():
            if want_q is not None and q.name != want_q:
                continue
            for (x, key), binding in q.bindings.items():
                if want_x is not None and x != want_x:
                    continue
                args = getattr(binding, "arguments", None) or {}
                out.append({"exchange": x, "queue": q.name, "key": key, "arguments": dict(args)})
        return Response(200, OK, out)

    # -- broker and connections -----------------------------------------------------------------

    def broker_read(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        stats = asdict(self.core.model.stats())
        stats["connections"] = len(self.core.connections)
        # The name is the core's: the service's config names the port before the listener binds
        live: dict[str, Any] = {"name": self.core.name}
        if self.core.events is not None:  # writable, full or failed, and its room
            live["journal"] = self.core.events.journal.status()
        return Response(200, OK, {**self.info(), **live, "statistics": stats})

    def connection_query(self, name: str | None, body: dict[str, Any], conn: Any) -> Response:
        out = [
            {
                "id": c.id,
                "peer": c.pump.peer,
                "container": c.container or "",
                "links": len(c._links),
                "admin": bool(c.properties.get(ADMIN_PROPERTY)),
            }
            for c in self.core.connections.values()
        ]
        return Response(200, OK, out)


def _extra(props: dict[str, Any]) -> dict[str, Any]:
    """Application properties other than the request's own addressing, e.g. `force`."""
    return {k: v for k, v in props.items() if k not in ("operation", "type", "name")}
