"""The contract between the I/O edge and the AMQP layer above it.

The pump (`broker.net.pump.EnginePump`) owns the socket and the proton engine of one
connection; a `ConnectionHandler`, made per connection by the factory given to the server, owns
the meaning of what arrives. The handler never touches the socket: it reacts to proton events,
changes engine state (open, flow, send, settle, close), and uses the pump for what only the I/O
edge can do (wake, abort, graceful close, back-pressure).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proton import Event

if TYPE_CHECKING:
    from .pump import EnginePump

FORCED = "amqp:connection:forced"


class ConnectionHandler:
    """Reacts to one connection's proton events; subclass and override what you need.

    All methods run on the event loop thread, inside the connection's own task or, for
    `on_server_stop`, inside the server's stop task. None of them may block.
    """

    def on_event(self, event: Event) -> None:
        """One proton event: `event.type` (e.g. `Event.CONNECTION_REMOTE_OPEN`) and
        `event.connection` / `.session` / `.link` / `.delivery`. Events arrive in engine order;
        after `pump.abort()` no further event is delivered."""

    def on_raw_delivery(self, link: Any, delivery: Any) -> bool:
        """Optional fast path for the most frequent event, PN_DELIVERY, without proton's
        wrapper objects (making them costs more than the rest of a message's work). `link` and
        `delivery` are cproton pointers (cffi cdata: they hash and compare by address), valid
        during the call only unless the handler takes a reference (`pn_incref`). Return True
        when handled; False (the default) hands the event to `on_event` as usual."""
        return False

    def process(self) -> None:
        """Runs after each batch of events and after each `pump.wake()`, before output is
        flushed: the place to push deliveries and settlements in one go."""

    def on_closed(self, error: str | None) -> None:
        """The socket is gone. `error` is None after a clean AMQP close, else a one-line reason
        (a protocol error, a socket error, an idle timeout, an abort)."""

    def on_server_stop(self, pump: EnginePump) -> None:
        """The server is stopping. The default closes with amqp:connection:forced; a handler
        that must not write an `open` (an HA backup) can call `pump.abort()` instead."""
        pump.close(FORCED, "the broker is shutting down")


HandlerFactory = Callable[["EnginePump"], ConnectionHandler]
"""Makes the handler of a new connection; gets the connection's pump."""
