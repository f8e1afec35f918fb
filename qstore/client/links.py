"""What senders and receivers share: a link object that outlives the AMQP links carrying it.

On every new engine (a new connection, after a fail-over too) the session re-attaches each link
with the same name, address and options (`_start`); when the engine is lost, `_lost` forgets the
proton link. An attach the broker refuses (amqp:not-found, ...) or a link it closes is an error
that will not heal: the link is not re-attached and every later call on it raises the error.
Every `_`-method and `on_`-method runs under the I/O thread's lock (`on_` ones on its I/O thread).
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from proton import UNDESCRIBED, Array, Link, Terminus, symbol
from proton import Data as PnData

from .address import Address
from .errors import LinkError, MessagingError, fresh, link_error

if TYPE_CHECKING:
    from proton import Session as PnSession

    from .session import Session

log = logging.getLogger("qstore.client")

CREATE_ON_DEMAND = symbol("create-on-demand")


def put(data: PnData, value: Any) -> None:
    data.clear()
    data.put_object(value)


def terminus(t: Terminus, address: Address, role: str) -> None:
    """Name the node and, if the address asks for it, how the broker should create it."""
    if address.dynamic and role == "receiver":
        t.dynamic = True
    else:
        t.address = address.name
    if address.link.get("durable"):
        t.durability = Terminus.DELIVERIES
    if address.creates_for(role):
        put(t.capabilities, Array(UNDESCRIBED, PnData.SYMBOL, CREATE_ON_DEMAND))
        props = address.node_properties()
        if props:
            put(t.properties, {symbol(k): v for k, v in props.items()})


class LinkBase:
    role = ""

    def __init__(self, session: Session, address: Address, capacity: int) -> None:
        if not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be a whole number >= 0, not {capacity!r}")
        self.session = session
        self.address = address
        self.capacity = capacity
        self.name = address.link_name or f"{address.name}_{uuid.uuid4()}"
        self._io = session._io
        self._pn: Link | None = None
        self._attached = False
        self._error: MessagingError | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.address)!r})"

    # -- the engine's side --------------------------------------------------------------------

    def _start(self, pn_session: PnSession) -> None:
        """Attach on a new engine (again, after a fail-over)."""
        if self._error is not None or self._closed:
            return
        link = self._make(pn_session)
        link.rcv_settle_mode = Link.RCV_FIRST
        self._pn = link
        self._attached = False
        self._io.links[link] = self
        link.open()
        self._opened(link)

    def _lost(self) -> None:
        self._pn = None
        self._attached = False

    def on_remote_open(self, link: Link) -> None:
        remote = link.remote_target if self.role == "sender" else link.remote_source
        if remote.address is None:
            return  # refused: the broker's detach with the reason follows
        self._attached = True
        self._on_attached(link)
        self._io.cond.notify_all()

    def on_remote_close(self, link: Link, condition: Any) -> None:
        self._io.links.pop(link, None)
        if link.state & Link.LOCAL_ACTIVE:
            link.close()
        self._pn = None
        self._attached = False
        if not self._closed and self._error is None:
            self._error = link_error(
                getattr(condition, "name", None),
                getattr(condition, "description", None),
                f"{self.role} {str(self.address)!r}",
            )
            log.warning("%s", self._error)
            self._on_error()
        self._io.cond.notify_all()
        self._io.wake()

    def on_flow(self, link: Link) -> None:
        pass

    def on_delivery(self, delivery: Any) -> None:
        pass

    def _make(self, pn_session: PnSession) -> Link:
        raise NotImplementedError

    def _opened(self, link: Link) -> None:
        pass

    def _on_attached(self, link: Link) -> None:
        pass

    def _on_error(self) -> None:
        pass

    # -- the application's side ---------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return self._attached

    def _check(self) -> None:
        """Raise what makes this link unusable: the connection's error, then the link's."""
        self._io.raise_error()
        if self._error is not None:
            raise fresh(self._error)
        if self._closed:
            raise LinkError(f"{self.role} {str(self.address)!r} is closed")

    def _wait_attached(self, timeout: float | None) -> bool:
        def ready() -> bool:
            self._check()
            return self._attached

        return self._io.wait(ready, timeout)

    def _detach(self) -> None:
        self._closed = True
        link = self._pn
        if link is not None:
            self._io.links.pop(link, None)
            link.close()
            self._io.wake()
        self._pn = None
        self.session._forget(self)
        self._io.cond.notify_all()
