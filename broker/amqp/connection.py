"""One client connection: proton events in, model calls and link actions out.

`Core` is what every connection shares (the model, the event log, the outbox, management,
options, the clock). `AmqpConnection` is the `ConnectionHandler` the I/O edge drives: it opens what
the client opens, attaches links to nodes (refusing unknown ones with amqp:not-found), and closes
what the client closes. When the connection goes, its consumers go, and their unsettled messages
return to their queues (delivery count + 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cproton_ffi import lib
from proton import Condition, Endpoint, Event, Link, Session, Terminus

from broker.model import (
    Broker,
    Exchange,
    Message,
    ModelError,
    NotAllowed,
    NotFound,
    Queue,
    ResourceLimitExceeded,
)
from broker.net import ConnectionHandler, EnginePump
from broker.replication import levels
from qstore.ha import ADMIN_PROPERTY, BACKUP_PROPERTY, REPLICATION

from . import backup_writes, fields, nodes
from .flowgate import FlowGate
from .limits import NOT_ALLOWED, RESOURCE_LIMIT, Limits, Notices
from .links import IncomingLink, OutgoingLink
from .outbox import Outbox
from .senderflow import SenderFlows

if TYPE_CHECKING:
    from broker.eventlog import EventLog
    from broker.ha.member import HaMember
    from broker.mgmt.node import Management
    from broker.security import Authorizer

log = logging.getLogger("qstore.amqp")

UNAUTHORIZED = "amqp:unauthorized-access"
ANONYMOUS = "anonymous@QPID"


@dataclass
class Core:
    """What every connection of one broker shares."""

    name: str
    model: Broker
    outbox: Outbox
    clock: Callable[[], float]
    events: EventLog | None = None
    management: Management | None = None
    ha: HaMember | None = None
    security: Authorizer | None = None
    auto_create: bool = False
    limits: Limits = field(default_factory=Limits)
    connections: dict[int, AmqpConnection] = field(default_factory=dict)
    flow: FlowGate | None = None  # publishing links held by flow control; None: none held


class AmqpConnection(ConnectionHandler):
    def __init__(self, core: Core, pump: EnginePump) -> None:
        self.core = core
        self.pump = pump
        self.id = pump.conn_id
        self.gone = False
        self.container: str | None = None
        self.user = ANONYMOUS  # the SASL identity, known by the time the peer opens
        self.denied = False  # refused at open, or failed: nothing more it sends is looked at
        self.kind = "client"  # or admin / backup (HA)
        self.paused = False  # output backed up: consumers not fed
        self.properties: dict[str, Any] = {}
        self._links: dict[Link, IncomingLink | OutgoingLink | Any] = {}
        # link pointer -> its handler's `on_raw_delivery` (handlers that have one)
        self._raw: dict[Any, Callable[[Any], None]] = {}
        self.limits = core.limits
        self.notices = Notices(log, f"broker={core.name} conn={self.id} peer={pump.peer}:")
        self.incomplete = 0  # bytes of messages whose transfers are still arriving (all links)
        self._sessions = 0  # sessions the peer has begun and not ended
        self._attached: dict[Link, Session] = {}  # links the peer has attached, not detached
        self._per_session: dict[Session, int] = {}  # how many of them on each session
        self.flows = SenderFlows(pump)  # the link flows proton does not send (senderflow.py)
        core.connections[self.id] = self

    # -- events -------------------------------------------------------------------------------

    def on_raw_delivery(self, link: Any, delivery: Any) -> bool:
        """The hot path: a delivery on a link whose handler takes bare pointers."""
        handler = self._raw.get(link)
        if handler is None:
            return False  # management, replication: through on_event
        handler(delivery)
        return True

    def on_event(self, event: Event) -> None:
        t = event.type
        if self.denied and t != Event.CONNECTION_REMOTE_CLOSE:
            return
        if t == Event.DELIVERY:
            handler = self._links.get(event.link)
            if handler is not None:
                handler.on_delivery(event.delivery)
            else:
                self._unserved(event.link, event.delivery._impl)
        elif t == Event.LINK_FLOW:
            handler = self._links.get(event.link)
            on_flow = getattr(handler, "on_flow", None)
            if on_flow is not None:
                on_flow()
        elif t == Event.LINK_REMOTE_OPEN:
            if self._named(event.link) and self._admit_link(event.link):
                self._attach(event.link)
        elif t in (Event.LINK_REMOTE_CLOSE, Event.LINK_REMOTE_DETACH):
            # A detach without `closed` (a suspended link) ends it too: this broker does not
            # resume links, and a link kept for a resume that never comes would be a leak.
            self._uncount(event.link)
            self._detach(event.link)
        elif t == Event.SESSION_REMOTE_OPEN:
            if self._admit_session() and event.session.state & Endpoint.LOCAL_UNINIT:
                event.session.open()
        elif t == Event.SESSION_REMOTE_CLOSE:
            self._sessions -= 1
            for link in list(self._links):
                if link.session == event.session:
                    self._forget(link)
            for link in [k for k, s in self._attached.items() if s == event.session]:
                self._uncount(link)
            event.session.close()
        elif t == Event.CONNECTION_REMOTE_OPEN:
            self._open(event)
        elif t == Event.CONNECTION_REMOTE_CLOSE:
            self._release_all()
            event.connection.close()

    def _open(self, event: Event) -> None:
        conn = event.connection
        self.user = self.pump.user or ANONYMOUS
        try:
            container = fields.text("the open's container-id", lambda: conn.remote_container)
            self.properties = fields.properties(
                "the open's properties", lambda: conn.remote_properties
            )
        except fields.BadField as exc:
            self._deny(exc.description, condition=exc.condition)
            return
        self.container = container
        security = self.core.security
        if security is not None:
            host = self.pump.peer.rpartition(":")[0].strip("[]")
            denied = security.check(self.user, "access", "connection", {"host": host})
            if denied is not None:
                self._deny(denied, level=logging.INFO)  # the ACL has just given a warning
                return
        ha = self.core.ha
        if ha is not None:
            user = self.user
            self.kind = ha.admit(
                self.properties, lambda: security is None or security.ha_privileged(user)
            )
            if self.kind == "denied":
                self._deny(_ha_denial(self.user, self.properties))
                return
            if self.kind == "refuse":
                # Drop the socket without an `open`: stock clients then try their next URL.
                log.info(
                    "broker=%s conn=%s refused %s peer=%s container=%s: this broker is %s",
                    self.core.name,
                    self.id,
                    "backup link" if BACKUP_PROPERTY in self.properties else "client",
                    self.pump.peer,
                    self.container,
                    ha.state,
                )
                self.pump.abort(f"refused: broker is {ha.state}")
                return
            if self.kind == "backup":
                self.pump.transport.idle_timeout = ha.heartbeat * 2
        slot = self.pump.slot
        if slot is not None and not slot.admit_open(ha=self.kind != "client"):
            # the limit logs the spell; the pump's close line names each connection
            self._deny(slot.refusal(), level=logging.DEBUG, condition=RESOURCE_LIMIT)
            return
        conn.container = self.core.name
        conn.open()
        log.info(
            "broker=%s conn=%s peer=%s container=%s mechanism=%s user=%s opened%s",
            self.core.name,
            self.id,
            self.pump.peer,
            self.container,
            self.pump.mechanism or "ANONYMOUS",  # none of ours: proton's, ANONYMOUS only
            self.user,
            "" if self.kind == "client" else f" as {self.kind}",
        )

    def _deny(self, why: str, level: int = logging.WARNING, condition: str = UNAUTHORIZED) -> None:
        """Refuse the connection with `condition` (an open, then a close with the reason: a
        stock client reports it; for amqp:unauthorized-access it does not retry, which is right
        for a refusal that retrying cannot cure)."""
        self.denied = True
        log.log(
            level,
            "broker=%s conn=%s peer=%s container=%s refused: %s",
            self.core.name,
            self.id,
            self.pump.peer,
            self.container,
            why,
        )
        conn = self.pump.connection
        conn.container = self.core.name
        conn.open()
        conn.condition = Condition(condition, why)
        conn.close()

    # -- limits ------------------------------------------------------------------------------

    def _admit_session(self) -> bool:
        """Count a begun session. Proton refuses a begin above the channel-max we advertise
        (`max_sessions - 1`), so more live sessions than that can only mean a begin on a channel
        already in use (which proton takes silently, orphaning the first session): the
        connection is closed, before the orphans add up."""
        self._sessions += 1
        most = self.limits.sessions
        if self._sessions <= most:
            return True
        self.fail(
            NOT_ALLOWED,
            f"{self._sessions} sessions on channels 0-{most - 1}: a begin on a channel "
            "already in use",
        )
        return False

    def _named(self, link: Link) -> bool:
        """A link's name is how it is known in logs, refusals and to the peer: one that is not
        UTF-8 closes the connection (amqp:decode-error)."""
        try:
            fields.text("a link name", lambda: link.name)
        except fields.BadField as exc:
            self.fail(exc.condition, f"attach: {exc.description}")
            return False
        return True

    def _admit_link(self, link: Link) -> bool:
        """Count an attached link; refuse one past --max-links-per-session (the session goes on).
        Refused links count until the peer detaches them: a peer that never does is closed at
        twice the limit, so that refusals cannot pile up either."""
        ssn = link.session
        if link not in self._attached:
            self._attached[link] = ssn
            self._per_session[ssn] = self._per_session.get(ssn, 0) + 1
        most = self.limits.max_links_per_session
        if not most or self._per_session[ssn] <= most:
            return True
        if self._per_session[ssn] > 2 * most:
            self.fail(
                RESOURCE_LIMIT,
                f"{self._per_session[ssn]} links on one session, twice the limit of {most}: "
                "refused links are not being detached",
            )
            return False
        text = f"more than {most} links on one session (--max-links-per-session)"
        self.notices.refused("links", f"refused link {link.name!r}: {text}")
        self._refuse(link, RESOURCE_LIMIT, text, quiet=True)
        return False

    def _uncount(self, link: Link) -> None:
        ssn = self._attached.pop(link, None)
        if ssn is None:
            return
        left = self._per_session[ssn] - 1
        if left:
            self._per_session[ssn] = left
        else:
            del self._per_session[ssn]

    def _check_temporary_queues(self) -> None:
        """Before a private queue (a dynamic node, an exchange subscription) is made."""
        most = self.limits.max_temporary_queues
        if most and self.core.model.owned_count(self.id) >= most:
            text = f"this connection holds {most} private queues (--max-temporary-queues)"
            self.notices.refused("temporary-queues", f"refused a temporary queue: {text}")
            raise ResourceLimitExceeded(text)

    def fail(self, condition: str, description: str) -> None:
        """The peer broke the protocol in a way that leaves proton's state for it unreliable,
        or keeps exceeding a limit: close the connection with `condition`, stop serving it at
        once (its consumers' messages go back to their queues) and look at nothing more it
        sends (the pump drops its input from now on)."""
        if self.denied:
            return
        self.denied = True
        log.warning(
            "broker=%s conn=%s peer=%s closed: %s %s",
            self.core.name,
            self.id,
            self.pump.peer,
            condition,
            description,
        )
        self._release_all()
        self.pump.close(condition, description)

    def close_link(self, link: Link, condition: str, description: str) -> None:
        """End one link with an error (e.g. a message over the size limit); the session and
        the connection go on. Whatever the peer still sends on it is dropped (`_unserved`)."""
        self._forget(link)
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.condition = Condition(condition, description)
            link.close()
        self.pump.wake()

    def _unserved(self, link: Link, dlv: Any) -> None:
        """A delivery on a link the broker does not serve (refused, or ended with an error).
        From the peer on a link it sends on: settled, which frees what proton holds of it (and
        proton then drops the rest of a message still arriving). On a link the broker sends on,
        an outcome for one of ours is of no more use; anything else is the peer's transfer."""
        if link.is_receiver:
            lib.pn_delivery_settle(dlv)
        elif lib.pn_link_current(link._impl) == dlv:
            self.wrong_direction(link)

    def wrong_direction(self, link: Link) -> None:
        """The peer sent a transfer on a link where it is the receiver. Proton takes it as a new
        delivery of our sending link (it would hold its bytes, and our next message would be
        written into it) and files it among the session's incoming deliveries: nothing about
        that link or session can be trusted any more, so the connection goes."""
        self.fail(
            NOT_ALLOWED,
            f"transfer on link {link.name!r}, where the broker is the sender",
        )

    def _attach(self, link: Link) -> None:
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        core = self.core
        try:
            fields.check_addresses(link)  # refused with amqp:decode-error if not UTF-8
            if link.is_receiver:  # the client sends to us
                target = link.remote_target
                link.target.copy(target)
                if target.address == nodes.MANAGEMENT and core.management is not None:
                    handler: Any = core.management.incoming(self, link)
                elif not target.address and not target.dynamic:
                    handler = IncomingLink(self, link, None)  # routed by each message's `to`
                else:
                    node = self._resolve(target)
                    self._check_backup_admin(node)
                    link.target.address = node.name
                    if isinstance(node, Queue):  # the default exchange, its name as the key
                        self._authorize(
                            "publish", "exchange", {"name": "", "routingkey": node.name}
                        )
                    handler = IncomingLink(self, link, node)
                link.open()
            elif link.remote_source.address == REPLICATION:
                handler = self._replication_link(link)
                if handler is None:
                    return
            else:  # the client receives from us
                source = link.remote_source
                link.source.copy(source)
                if source.dynamic:
                    self._check_temporary_queues()
                node = self._resolve(source)
                if source.dynamic:
                    pass  # its own private queue (a reply-to): nothing for the ACL to say
                elif isinstance(node, Exchange):  # a private queue bound to it
                    key = nodes.filter_key(source) or ""
                    self._authorize("bind", "exchange", {"name": node.name, "routingkey": key})
                else:
                    self._authorize("consume", "queue", {"name": node.name})
                browse = source.distribution_mode == Terminus.DIST_MODE_COPY
                if not browse:
                    self._check_backup_admin(node)
                if isinstance(node, Exchange):
                    self._check_temporary_queues()
                    queue: Queue = nodes.subscription_queue(
                        core.model, node, nodes.filter_key(source), self.id
                    )
                else:
                    queue = node
                    link.source.address = node.name
                if browse:
                    link.source.distribution_mode = Terminus.DIST_MODE_COPY
                consumer = core.model.subscribe(
                    queue.name,
                    owner=self.id,
                    browse=browse,
                    presettled=link.remote_snd_settle_mode == Link.SND_SETTLED,
                )
                if browse and queue.auto_delete and self._replicated_on_backup(queue):
                    # An admin looking at a replica is not a consumer: when it goes, the queue
                    # must not auto-delete here (the primary decides; its delete replicates).
                    queue.had_consumers = False
                handler = OutgoingLink(self, link, consumer)
                consumer.context = handler
                link.open()
        except ModelError as exc:
            self._refuse(link, exc.condition, str(exc))
            return
        self._links[link] = handler
        raw = getattr(handler, "on_raw_delivery", None)
        if raw is not None:
            self._raw[link._impl] = raw
        log.debug("broker=%s conn=%s attached %s", core.name, self.id, link.name)

    def _replication_link(self, link: Link) -> Any:
        """A backup attaches to the primary's stream (only on a primary, only from a backup)."""
        ha = self.core.ha
        primary = ha.primary if ha is not None else None
        if self.kind != "backup" or primary is None:
            self._refuse(link, "amqp:not-allowed", "this broker does not serve replication")
            return None
        info = self.properties.get(BACKUP_PROPERTY)
        info = {str(k): v for k, v in info.items()} if isinstance(info, dict) else {}
        name = str(info.get("name") or f"conn-{self.id}")
        holder = primary.holder(name)
        if holder is not None and holder is not self:
            self._refuse(
                link,
                "amqp:resource-locked",
                f"backup name {name!r} is in use by connection {holder.id} from {holder.pump.peer}",
            )
            return None
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.open()
        return primary.attach(self, link, info)

    def _on_backup(self) -> bool:
        ha = self.core.ha
        return ha is not None and ha.state.is_backup and self.core.events is not None

    def _resolve(self, terminus: Terminus) -> Queue | Exchange:
        """The node a terminus names, made on demand if allowed. Not on a backup: what it holds
        comes from the primary, and a node made here would be one the primary does not know
        (or, refused afterwards, a stray left behind)."""
        core = self.core
        address = terminus.address
        on_backup = self._on_backup() and not terminus.dynamic and address
        if on_backup and core.model.resolve(address) is None:
            raise NotFound(
                f"no queue or exchange named {address!r} (a backup creates nothing on attach)"
            )
        if terminus.dynamic and self._on_backup():
            self._check_dynamic_on_backup(terminus)
        return nodes.resolve(
            core.model,
            terminus,
            auto_create=core.auto_create,
            owner=self.id,
            may_create=self._may_create if core.security is not None else None,
        )

    def _check_dynamic_on_backup(self, terminus: Terminus) -> None:
        """A dynamic node is private and does not replicate, unless its properties ask for it:
        a replicated queue made on a backup would be one the primary does not know."""
        ev = self.core.events
        assert ev is not None
        args = nodes.creation_arguments(nodes.node_properties(terminus))
        level = levels.queue_level(args, ev.default_level, exclusive=True, auto_delete=True)
        if level != levels.NONE:
            raise NotAllowed(
                f"a dynamic queue with {levels.KEY}={level!r} would be replicated: on a backup "
                "only the primary's replication makes those"
            )

    def _may_create(self, kind: str, name: str, durable: bool) -> None:
        self._authorize("create", kind, {"name": name, "durable": "true" if durable else "false"})

    def _authorize(self, action: str, obj: str, props: dict[str, str]) -> None:
        """Raise `Unauthorized` (the link is refused with its text) if the ACL says no."""
        security = self.core.security
        if security is not None:
            denied = security.check(self.user, action, obj, props)
            if denied is not None:
                raise Unauthorized(denied)

    def publisher(self, exchange: str) -> Any:
        """The per-message check of publishing to `exchange`, or None (nothing to check)."""
        security = self.core.security
        return security.publisher(self.user, exchange) if security is not None else None

    def _replicated_on_backup(self, node: Queue | Exchange) -> bool:
        if not self._on_backup():
            return False
        ev = self.core.events
        assert ev is not None
        level = (
            ev.queue_level(node.name) if isinstance(node, Queue) else ev.exchange_level(node.name)
        )
        return level != "none"

    def _check_backup_admin(self, node: Queue | Exchange) -> None:
        """On a backup, an admin may look but not change what the primary replicates."""
        if self._on_backup():
            ev = self.core.events
            assert ev is not None
            refusal = backup_writes.node_refusal(ev, node)
            if refusal is not None:
                raise NotAllowed(refusal)

    def write_guard(self) -> Callable[[Queue | Exchange, Message], None] | None:
        """For a link the client sends on: the check each of its messages must pass, decided at
        attach. On a backup, where a message's `to` (the relay) or an exchange's bindings may
        lead into a replicated queue, `_check_backup_write`; elsewhere None, so the primary's
        message path pays one `is None` test."""
        return self._check_backup_write if self._on_backup() else None

    def _check_backup_write(self, node: Queue | Exchange, message: Message) -> None:
        """Raise NotAllowed if `message` to `node` would write what the primary replicates.
        The state is read again: after a promotion this broker's links write freely."""
        if not self._on_backup():
            return
        ev = self.core.events
        assert ev is not None
        refusal = backup_writes.write_refusal(ev, self.core.model, node, message)
        if refusal is not None:
            raise NotAllowed(refusal)

    def on_server_stop(self, pump: EnginePump) -> None:
        if self.core.ha is not None:  # clients must fail over, which they do only on a drop
            pump.abort("broker stopping")
        else:
            super().on_server_stop(pump)

    def _refuse(self, link: Link, condition: str, description: str, quiet: bool = False) -> None:
        """Refuse an attach: an attach with no node, then a detach with the error. `quiet`:
        the caller has logged it."""
        if not quiet:
            log.info(
                "broker=%s conn=%s refused link %r: %s %s",
                self.core.name,
                self.id,
                link.name,
                condition,
                description,
            )
        if link.is_receiver:
            link.target.address = None
        else:
            link.source.address = None
        link.open()
        link.condition = Condition(condition, description)
        link.close()

    def _detach(self, link: Link) -> None:
        self._forget(link)
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.close()

    def _forget(self, link: Link) -> None:
        handler = self._links.pop(link, None)
        self._raw.pop(link._impl, None)
        if handler is not None:
            handler.close()

    def _release_all(self) -> None:
        for link in list(self._links):
            self._forget(link)
        self.core.model.close_connection(self.id)
        self.core.outbox.schedule()

    # -- the pump's other calls -------------------------------------------------------------

    def process(self) -> None:
        """After each batch of events: a connection whose peer reads slowly stops being fed
        (its consumers' credit is held at zero in the model) until its output drains, when the
        pump wakes us again and the credit the receiver granted counts once more."""
        backed_up = self.pump.output_backed_up
        if backed_up == self.paused:
            return
        self.paused = backed_up
        model = self.core.model
        for handler in self._links.values():
            if isinstance(handler, OutgoingLink):
                model.set_credit(handler.consumer, 0 if backed_up else handler.link.credit)
        if not backed_up:
            self.core.outbox.schedule()
        log.debug("broker=%s conn=%s output %s", self.core.name, self.id,
                  "backed up: not feeding" if backed_up else "drained: feeding again")  # fmt: skip

    def on_closed(self, error: str | None) -> None:
        if self.gone:
            return
        self.gone = True
        self._release_all()
        self.core.connections.pop(self.id, None)
        if self.container is None:
            return  # never opened (a probe, a failed login): the pump's line says it all
        log.info(
            "broker=%s conn=%s peer=%s closed%s",
            self.core.name,
            self.id,
            self.pump.peer,
            f": {error}" if error else "",
        )


class Unauthorized(ModelError):
    condition = UNAUTHORIZED


def _ha_denial(user: str, properties: dict[str, Any]) -> str:
    """The seed's words for a connection that claims HA privileges it does not have."""
    if BACKUP_PROPERTY in properties:
        return (
            f"ACL denied {user} creating a federation link: a backup must log in as the HA "
            "identity (--ha-username) or a user the ACL allows 'update broker'"
        )
    return f"ACL denied {user} update broker ({ADMIN_PROPERTY} needs the HA identity)"
