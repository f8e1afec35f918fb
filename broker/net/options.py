"""Per-connection settings, the SASL layer's contract, and naming a peer in logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from anyio.abc import SocketAttribute, SocketStream
from proton import Transport

if TYPE_CHECKING:
    from .pump import EnginePump

Clock = Callable[[], float]


class SaslLayer(Protocol):
    """One connection's SASL exchange, sans I/O, run by the pump before proton sees a byte
    (`qstore.sasl.SaslServer` / `SaslClient`). proton's own server SASL cannot check a password
    without Cyrus, so the exchange is ours; what follows it is handed to a transport on which
    `sasl()` is never called, which then speaks plain AMQP."""

    state: str  # "pending" | "ok" | "failed"
    rest: bytes  # once ok: what came after the exchange, for proton
    user: str | None  # once ok: the authenticated identity, "name@QPID"
    failure: str | None  # once failed: one log line, never a password
    pending_check: Callable[[], bool] | None  # a slow check to run off the event loop

    def feed(self, data: bytes) -> None: ...
    def take_output(self) -> bytes: ...
    def check_done(self, ok: bool) -> None: ...
    def peer_closed(self) -> None: ...


SaslFactory = Callable[["EnginePump"], SaslLayer]


def anonymous_sasl(transport: Transport) -> None:
    """Without a SASL layer of ours: proton's own, offering only ANONYMOUS."""
    transport.sasl().allowed_mechs("ANONYMOUS")


@dataclass(frozen=True)
class ConnectionOptions:
    """Per-connection engine and socket settings (times in seconds of `clock`)."""

    idle_timeout: float = 0.0  # 0: none; proton advertises half of it to the peer
    max_frame_size: int = 0  # 0: proton's default
    channel_max: int = 0  # the highest channel (session) number offered; 0: proton's default
    close_timeout: float = 5.0  # once closing starts, the socket is gone within this long
    linger: float = 1.0  # after our last byte, how long to wait for the peer's EOF
    open_timeout: float = 30.0  # the peer's AMQP open must arrive within this long (0: no limit)
    output_high_water: int = 1 << 20  # `output_backed_up` above this many bytes
    read_size: int = 64 * 1024
    sasl: SaslFactory | None = None  # None: proton's own SASL, ANONYMOUS only
    clock: Clock = time.monotonic
    client: bool = False  # drive the client end (an HA backup's link to its primary)


def peer_of(stream: SocketStream) -> str:
    """`host:port` of the remote end, for logs."""
    try:
        addr = stream.extra(SocketAttribute.remote_address)
    except Exception:  # a stream without an address is only ever a test double
        return "?"
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)
