"""Per-connection settings, the default SASL policy, and naming a peer in logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from anyio.abc import SocketAttribute, SocketStream
from proton import Transport

Clock = Callable[[], float]
TransportSetup = Callable[[Transport], None]


def anonymous_sasl(transport: Transport) -> None:
    """Offer only SASL ANONYMOUS. A deployment that requires login passes its own setup
    (allowed mechanisms, `require_auth(True)`, config path) as `setup_transport`."""
    transport.sasl().allowed_mechs("ANONYMOUS")


@dataclass(frozen=True)
class ConnectionOptions:
    """Per-connection engine and socket settings (times in seconds of `clock`)."""

    idle_timeout: float = 0.0  # 0: none; proton advertises half of it to the peer
    max_frame_size: int = 0  # 0: proton's default
    close_timeout: float = 5.0  # once closing starts, the socket is gone within this long
    linger: float = 1.0  # after our last byte, how long to wait for the peer's EOF
    open_timeout: float = 30.0  # the peer's AMQP open must arrive within this long (0: no limit)
    output_high_water: int = 1 << 20  # `output_backed_up` above this many bytes
    read_size: int = 64 * 1024
    setup_transport: TransportSetup = anonymous_sasl
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
