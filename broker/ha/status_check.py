"""StatusCheck (the seed's name): one broker asks another for its HA status, over AMQP.

A joining broker told to promote itself first asks its peers whether one of them is already
primary or a ready backup. It logs in as the HA identity through the same SASL layer and TLS as
its replication link (pip's proton cannot do SCRAM, so not through proton's client), sends
`READ ha` to `$management` with a dynamic reply queue, and takes the first answer.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from proton import Delivery, Event, Message, symbol

from broker.amqp.nodes import MANAGEMENT
from broker.net import ConnectionHandler, EnginePump
from qstore.ha import ADMIN_PROPERTY

if TYPE_CHECKING:
    from .member import HaMember

log = logging.getLogger("qstore.ha")


class StatusCheck(ConnectionHandler):
    """Opens as an HA admin, asks `READ ha` once; `status` holds the answer (or stays None)."""

    def __init__(self, ha: HaMember, pump: EnginePump, address: str) -> None:
        self.pump = pump
        self.address = address
        self.status: dict[str, Any] | None = None
        self._id = str(uuid.uuid4())
        self._sender: Any = None
        conn = pump.connection
        conn.container = f"{ha.name}-status-{self._id[:8]}"
        conn.hostname = address.rsplit(":", 1)[0]
        conn.properties = {symbol(ADMIN_PROPERTY): True}
        conn.open()
        ssn = conn.session()
        ssn.open()
        self._sender = ssn.sender(f"status-{self._id}")
        self._sender.target.address = MANAGEMENT
        self._sender.open()
        receiver = ssn.receiver(f"status-reply-{self._id}")
        receiver.source.dynamic = True
        receiver.open()
        receiver.flow(1)
        pump.wake()

    def on_event(self, event: Event) -> None:
        t = event.type
        if t == Event.LINK_REMOTE_OPEN and event.link.is_receiver:
            reply_to = event.link.remote_source.address
            if reply_to:
                request = Message(
                    id=self._id,
                    reply_to=reply_to,
                    properties={"operation": "READ", "type": "ha"},
                    body={},
                )
                self._sender.send(request)
        elif t == Event.DELIVERY and event.link.is_receiver:
            dlv: Delivery = event.delivery
            if dlv.partial or not dlv.readable:
                return
            reply = Message()
            reply.decode(event.link.recv(dlv.pending))
            event.link.advance()
            dlv.update(Delivery.ACCEPTED)
            dlv.settle()
            props = {str(k): v for k, v in (reply.properties or {}).items()}
            if props.get("statusCode") == 200 and isinstance(reply.body, dict):
                self.status = {str(k): v for k, v in reply.body.items()}
            self.pump.close()
        elif t == Event.CONNECTION_REMOTE_CLOSE:
            event.connection.close()

    def on_server_stop(self, pump: EnginePump) -> None:
        pump.abort("stopping")
