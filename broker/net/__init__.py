"""The I/O edge: an anyio TCP listener whose connections each drive a proton engine.

The layer above implements `ConnectionHandler` and passes a factory to `Server`; see
`handler.py` for the contract and `driver.py` for what a driver offers a handler.
"""

from .driver import ConnectionDriver
from .handler import FORCED, ConnectionHandler, HandlerFactory
from .options import ConnectionOptions, anonymous_sasl
from .server import Server, next_conn_id

__all__ = [
    "FORCED",
    "ConnectionDriver",
    "ConnectionHandler",
    "ConnectionOptions",
    "HandlerFactory",
    "Server",
    "anonymous_sasl",
    "next_conn_id",
]
