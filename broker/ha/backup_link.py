"""The backup's replication connection to a primary (the client end of the stream).

It opens with the connection property `qpid.ha-backup` (name, address, position) and attaches a
receiving link from `$ha.replication`. A broker that is not primary drops the socket without an
`open`, so `opened` stays False and the attempt counts as failed. Batches are applied in order by
the replicator and settled (accepted) once what is durable in them is journaled: that settlement
is the backup's acknowledgement.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cproton_ffi import lib
from proton import Delivery, Endpoint, Event, symbol

from broker.net import ConnectionHandler, EnginePump
from broker.replication import stream
from qstore.ha import BACKUP_PROPERTY, REPLICATION

if TYPE_CHECKING:
    from .member import HaMember

log = logging.getLogger("qstore.ha")

CREDIT = 50
_partial = lib.pn_delivery_partial


class BackupLink(ConnectionHandler):
    def __init__(self, ha: HaMember, pump: EnginePump, address: str) -> None:
        self.ha = ha
        self.pump = pump
        self.address = address
        self.opened = False
        self.attached = False
        self.link: Any = None
        conn = pump.connection
        conn.container = ha.name
        conn.hostname = address.rsplit(":", 1)[0]
        conn.properties = {symbol(BACKUP_PROPERTY): ha.backup_info()}
        conn.open()
        pump.wake()

    def on_raw_delivery(self, link: Any, delivery: Any) -> bool:
        """A batch still arriving (one of its frames, each an event): nothing to do until its
        last, and no proton wrapper objects made for it (see ConnectionHandler)."""
        return bool(_partial(delivery))

    def on_event(self, event: Event) -> None:
        t = event.type
        if t == Event.CONNECTION_REMOTE_OPEN:
            self.opened = True
            ssn = event.connection.session()
            ssn.open()
            link = ssn.receiver("qstore-replication")
            link.source.address = REPLICATION
            link.target.address = self.ha.name
            link.open()
            self.link = link
        elif t == Event.LINK_REMOTE_OPEN:
            if event.link is self.link or event.link == self.link:
                if event.link.remote_source.address != REPLICATION:
                    self.pump.close("amqp:not-found", "primary refused the replication link")
                    return
                self.attached = True
                event.link.flow(CREDIT)
                self.ha.primary_found(self.address)
        elif t == Event.DELIVERY:
            self._batch(event.delivery)
        elif t in (Event.LINK_REMOTE_CLOSE, Event.CONNECTION_REMOTE_CLOSE):
            cond = event.link.remote_condition if t == Event.LINK_REMOTE_CLOSE else None
            if cond is not None:
                log.warning("primary %s closed the replication link: %s", self.address, cond)
            if not event.connection.state & Endpoint.LOCAL_CLOSED:
                event.connection.close()

    def _batch(self, dlv: Delivery) -> None:
        link = dlv.link
        if dlv.partial or not dlv.readable:
            return
        data = link.recv(dlv.pending)
        link.advance()
        try:
            items = stream.decode(data)
        except stream.StreamError as exc:
            log.error("from primary %s: %s", self.address, exc)
            self.pump.close("amqp:decode-error", str(exc))
            return
        self.ha.first_data()

        def applied(error: BaseException | None) -> None:
            if self.pump.finished.is_set():
                return
            if error is not None:
                log.error("could not journal replicated events: %s", error)
                dlv.update(Delivery.REJECTED)
                dlv.settle()
            else:
                dlv.update(Delivery.ACCEPTED)
                dlv.settle()
            if link.credit < CREDIT // 2:
                link.flow(CREDIT - link.credit)
            self.pump.wake()

        self.ha.replicator.apply(items, applied)

    def on_closed(self, error: str | None) -> None:
        if self.attached:
            self.ha.primary_lost(self.address, error or "closed")

    def on_server_stop(self, pump: EnginePump) -> None:
        pump.abort("stopping")
