"""The `$management` node: AMQP Management style requests over ordinary messages.

A request is a message to `$management` with application properties `operation`, `type` and
(for one entity) `name`, and a `reply-to` address (usually a dynamic receiver's). The response goes
to that address with `correlation-id` set to the request's `message-id` (or its correlation id),
application properties `statusCode` and `statusDescription`, and a body. See `operations.py` for
what each operation does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from proton import Delivery, Link
from proton import Message as AmqpMessage

from broker.amqp import backup_writes, codec
from broker.amqp.links import DECODE_ERROR, SizeLimited, reject
from broker.model import Message, Queue
from broker.replication import levels

from . import access
from .operations import Operations, Response

if TYPE_CHECKING:
    from broker.amqp.connection import AmqpConnection, Core

log = logging.getLogger("qstore.mgmt")

MANAGEMENT_WINDOW = 100
NOT_ALLOWED = "amqp:not-allowed"
_background: set[asyncio.Task[None]] = set()  # answers in progress (a task needs a reference)


class Management:
    def __init__(self, core: Core, info: Callable[[], dict[str, Any]]) -> None:
        self.core = core
        self.ops = Operations(core, info)

    def incoming(self, conn: AmqpConnection, link: Link) -> _RequestLink:
        return _RequestLink(self, conn, link)

    def handle(self, conn: AmqpConnection, request: AmqpMessage) -> Response | Awaitable[Response]:
        props = {str(k): codec.owned(v) for k, v in (request.properties or {}).items()}
        body = codec.owned(request.body)
        wrong = _malformed(props, body)
        if wrong is not None:
            log.info("broker=%s conn=%s management request refused: %s", self.core.name, conn.id,
                     wrong)  # fmt: skip
            return Response(400, f"bad request: {wrong}")
        op = str(props.get("operation", "")).upper()
        kind = str(props.get("type", "")).lower()
        name = props.get("name")
        log.info("broker=%s conn=%s management %.40s %.40s %.200s", self.core.name, conn.id, op,
                 kind, name or "")  # fmt: skip
        denied = self._denial(conn, op, kind, name, body)
        if denied is not None:
            return Response(403, denied)
        if kind == "ha":
            return self._ha(op, conn)
        if kind == "acl":
            return self._acl(op)
        refused = self._backup_refusal(op, kind, name, body)
        if refused is not None:
            return Response(403, refused)
        return self.ops.run(op, kind, name, props, body, conn)

    def _backup_refusal(self, op: str, kind: str, name: Any, body: Any) -> str | None:
        """On a backup, an admin may not create, delete or purge what the primary replicates:
        the backup would then differ from the primary (seed 1.12.6). What does not replicate
        (`qpid.replicate: none`) is the backup's own business."""
        ha, ev = self.core.ha, self.core.events
        if ha is None or ev is None or not ha.state.is_backup:
            return None
        if op not in ("CREATE", "DELETE", "PURGE") or kind not in ("queue", "exchange", "binding"):
            return None
        args = {str(k): v for k, v in body.items()} if isinstance(body, dict) else {}
        arguments = args.get("arguments")
        arguments = {str(k): v for k, v in arguments.items()} if isinstance(arguments, dict) else {}
        creating = op == "CREATE"
        if kind == "queue":
            auto_delete = args.get("auto-delete") in (True, "true", "True", "yes", "1")
            level = (
                levels.queue_level(arguments, ev.default_level, auto_delete=auto_delete)
                if creating
                else ev.queue_level(str(name))
            )
        elif kind == "exchange":
            level = (
                levels.exchange_level(str(name), arguments, ev.default_level)
                if creating
                else ev.exchange_level(str(name))
            )
        else:
            x, q = str(args.get("exchange", "")), str(args.get("queue", ""))
            replicated = levels.binding_replicates(
                ev.exchange_level(x), ev.queue_level(q), arguments
            )
            level = levels.ALL if replicated else levels.NONE
        if level == levels.NONE:
            return None
        what = f"{kind} {name!r}" if name else kind
        return f"{what} is replicated from the primary: on a backup it can only be read"

    def _denial(self, conn: AmqpConnection, op: str, kind: str, name: Any, body: Any) -> str | None:
        """Why the ACL refuses this request, or None."""
        security = self.core.security
        if security is None:
            return None
        args = {str(k): v for k, v in body.items()} if isinstance(body, dict) else {}
        action, obj, props = access.lookup(op, kind, name, args)
        return security.check(conn.user, action, obj, props)

    def _acl(self, op: str) -> Response:
        """`RELOAD` re-reads the ACL file (as SIGHUP does); a bad file keeps the old rules."""
        if op != "RELOAD":
            return Response(501, f"unsupported operation {op!r} on type 'acl'")
        security = self.core.security
        if security is None:
            return Response(400, "no ACL file (--acl-file) to reload")
        ok, text = security.reload()
        return Response(200 if ok else 400, text)

    def _ha(self, op: str, conn: AmqpConnection) -> Response | Awaitable[Response]:
        """HA status and promote (what `qstore-ha` asks)."""
        ha = self.core.ha
        if op in ("READ", "QUERY"):
            if ha is None:
                st = {
                    "name": self.core.name,
                    "state": "standalone",
                    "epoch": 0,
                    "position": [0, 0],
                    "brokers_url": "",
                    "members": [],
                }
                return Response(200, "OK", st)
            return Response(200, "OK", ha.status())
        if op == "PROMOTE":
            if ha is None:
                return Response(400, "not a cluster broker (--ha-cluster no)")
            if conn.kind != "admin":  # the broker says so, not only the tool
                return Response(
                    403,
                    f"promote refused for {conn.user}: only a cluster manager's HA admin "
                    "connection (qpid.ha-admin, as the HA identity) may promote",
                )
            return self._promote(ha)
        return Response(501, f"unsupported operation {op!r} on type 'ha'")

    async def _promote(self, ha: Any) -> Response:
        refused = await ha.promote()
        if refused is not None:
            return Response(409, f"promote refused: {refused}")
        return Response(200, "OK", ha.status())

    def reply_refusal(self, request: AmqpMessage) -> str | None:
        """On a backup, why the reply to `request` may not go where its reply-to says (a
        replicated queue or exchange, or an exchange that routes into a replicated queue: a
        reply there would be a message the primary never had), else None."""
        ha, ev = self.core.ha, self.core.events
        if ha is None or ev is None or not ha.state.is_backup or not request.reply_to:
            return None
        target = self.core.model.resolve(request.reply_to)
        if target is None:
            return None
        reply = Message(body=b"")  # what routing sees of a reply (as `reply` builds it)
        refusal = backup_writes.write_refusal(ev, self.core.model, target, reply)
        return None if refusal is None else f"reply-to {request.reply_to!r}: {refusal}"

    def reply(self, request: AmqpMessage, response: Response) -> None:
        if not request.reply_to:
            return
        refusal = self.reply_refusal(request)  # the state may have changed since the request
        if refusal is not None:
            log.warning("broker=%s management reply not delivered: %s", self.core.name, refusal)
            return
        m = AmqpMessage(
            body=response.body,
            correlation_id=request.id if request.id is not None else request.correlation_id,
            properties={
                "statusCode": response.code,
                "statusDescription": response.description,
            },
        )
        m.address = request.reply_to
        model = self.core.model
        target = model.resolve(request.reply_to)
        if target is None:
            log.info("management reply to unknown address %r dropped", request.reply_to)
            return
        msg = Message(body=codec.encode(m))
        now = self.core.clock()
        if isinstance(target, Queue):
            result = model.enqueue(target.name, msg, now)
        else:
            result = model.publish(target.name, msg, now)
        events = self.core.events
        if events is not None:  # recorded as any enqueue; nobody waits for it
            for ev in result.enqueued:
                events.record_enqueued(ev)
        self.core.outbox.schedule()


def _malformed(props: dict[str, Any], body: Any) -> str | None:
    """What makes a request unreadable (a 400), before anything looks at it: `operation`,
    `type` and `name` that are not strings (a list's text is no queue name), a body that is
    neither empty nor a map."""
    for key in ("operation", "type", "name"):
        value = props.get(key)
        if value is not None and not isinstance(value, str):
            return f"the {key!r} property must be a string, not {type(value).__name__}"
    if body is not None and not isinstance(body, dict):
        return f"the body must be a map, not {type(body).__name__}"
    return None


class _RequestLink(SizeLimited):
    """Requests to `$management`: bounded more tightly than messages (`management_size`), so
    that a huge request body is refused as it arrives instead of being decoded whole."""

    def __init__(self, mgmt: Management, conn: AmqpConnection, link: Link) -> None:
        self.mgmt = mgmt
        self.conn = conn
        self.link = link
        self._limit_size(conn.limits.management_size(), "of a management request")
        link.flow(MANAGEMENT_WINDOW)

    def on_delivery(self, dlv: Delivery) -> None:
        if dlv.partial or not dlv.readable:
            self._arriving(dlv._impl)
            return
        if dlv.aborted:
            self._aborted(dlv._impl)
            return
        size = dlv.pending
        if size > self._max_size:
            self._too_big(dlv._impl, size)
            return
        self._arrived()
        data = self.link.recv(size)
        self.link.advance()
        credit = self.link.credit
        if credit < MANAGEMENT_WINDOW // 2 and not self._top_up(
            dlv._impl, credit, MANAGEMENT_WINDOW
        ):
            return
        try:
            request = codec.decode(data)
        except codec.BadMessage as exc:
            reject(dlv, DECODE_ERROR, str(exc))
            return
        refusal = self.mgmt.reply_refusal(request)
        if refusal is not None:  # refused before it runs: no change whose answer is lost
            log.info(
                "broker=%s conn=%s management request refused: %s",
                self.mgmt.core.name,
                self.conn.id,
                refusal,
            )
            reject(dlv, NOT_ALLOWED, refusal)
            return
        response = self.mgmt.handle(self.conn, request)
        if isinstance(response, Response):
            self._answer(dlv, request, response)
            return

        async def later() -> None:  # an answer that needs I/O (promote asks the other brokers)
            try:
                self._answer(dlv, request, await response)
            except Exception as exc:
                log.exception("management request failed")
                self._answer(dlv, request, Response(500, f"internal error: {exc}"))

        task = asyncio.get_running_loop().create_task(later())
        _background.add(task)
        task.add_done_callback(_background.discard)

    def _answer(self, dlv: Delivery, request: AmqpMessage, response: Response) -> None:
        self.mgmt.reply(request, response)
        if not self.conn.gone:
            dlv.update(Delivery.ACCEPTED)
            dlv.settle()
            self.conn.pump.wake()

    def close(self) -> None:
        self._arrived()
