"""qstore.client: a fail-over client for qstore HA clusters, on python-qpid-proton, in the style of
the seed's Python client (qpid.messaging).

    from proton import Message
    from qstore.client import Connection, Empty

    conn = Connection.establish("node1", reconnect=True, reconnect_urls=["node1", "node2", "node3"],
                                heartbeat=10)
    ssn = conn.session()
    snd = ssn.sender("orders; {create: always, node: {durable: True}}")
    snd.send(Message(body="hello", durable=True))       # returns once the cluster has it safe
    rcv = ssn.receiver("orders")
    msg = rcv.fetch(timeout=5)                           # Empty if nothing came
    ssn.acknowledge(msg)
    conn.close()

Guarantees (the seed's 1.12.1.1 and 1.12.8): a message is acknowledged by the primary only when it
is safe; until then the sender keeps it and, after a fail-over, sends it again, so nothing
acknowledged is lost and nothing unacknowledged is lost either, at the price of possible
duplicates. A silent broker is detected within 2 x `heartbeat`. Errors that will not heal (bad
credentials, unknown address without `create`, a malformed address, a rejected message, a
reconnect that gave up) are raised, never retried.
Log: logging.getLogger("qstore.client").
"""

from .address import Address, parse
from .connection import Connection
from .errors import (
    AddressError,
    AuthenticationError,
    ConnectionError,
    Empty,
    InsufficientCapacity,
    LinkError,
    MessagingError,
    NotFound,
    ReceiverError,
    SendError,
    Timeout,
    TlsError,
    Unauthorized,
)
from .receiver import Receiver
from .sender import Sender
from .session import Session

__all__ = [
    "Address",
    "AddressError",
    "AuthenticationError",
    "Connection",
    "ConnectionError",
    "Empty",
    "InsufficientCapacity",
    "LinkError",
    "MessagingError",
    "NotFound",
    "Receiver",
    "ReceiverError",
    "SendError",
    "Sender",
    "Session",
    "Timeout",
    "TlsError",
    "Unauthorized",
    "parse",
]
