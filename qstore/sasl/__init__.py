"""A sans-I/O SASL layer in front of proton's transport: the broker's server side, the client
side of our own links, and the user database (`--sasl-db`).

Proton as pip installs it cannot check passwords on the server side (no Cyrus) nor do SCRAM on
the client side; this package does both from bytes in, bytes out, with scramp for SCRAM.
"""

from qstore.sasl.client import SaslClient
from qstore.sasl.frames import AMQP_HEADER, MAX_SASL_FRAME, SASL_HEADER, Outcome, SaslProtocolError
from qstore.sasl.names import REALM, BadUserName, identity, normalize_user, printable
from qstore.sasl.server import DEFAULT_MECHANISMS, SaslServer
from qstore.sasl.userdb import CachedUserDb, UserDb, UserDbError

__all__ = [
    "AMQP_HEADER",
    "DEFAULT_MECHANISMS",
    "MAX_SASL_FRAME",
    "REALM",
    "SASL_HEADER",
    "BadUserName",
    "CachedUserDb",
    "Outcome",
    "SaslClient",
    "SaslProtocolError",
    "SaslServer",
    "UserDb",
    "UserDbError",
    "identity",
    "normalize_user",
    "printable",
]
