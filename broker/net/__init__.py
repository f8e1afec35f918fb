"""The I/O edge: an anyio TCP listener whose connections each drive a proton engine.

The layer above implements `ConnectionHandler` and passes a factory to `Server`; see
`handler.py` for the contract and `pump.py` for what a pump offers a handler.
"""

from .handler import FORCED, ConnectionHandler, HandlerFactory
from .options import ConnectionOptions, anonymous_sasl
from .pump import EnginePump
from .server import Server, next_conn_id

__all__ = [
    "FORCED",
    "ConnectionHandler",
    "ConnectionOptions",
    "EnginePump",
    "HandlerFactory",
    "Server",
    "anonymous_sasl",
    "next_conn_id",
]
