"""Who may connect and what they may do: TLS contexts, the SASL server of each connection, and
the authorisation rules (the ACL file and the HA identity), after the seed's section 1.12.9."""

from .authn import Authenticator, ha_sasl_client
from .policy import Authorizer
from .tls import TlsError, certificate_identity, client_context, server_context

__all__ = [
    "Authenticator",
    "Authorizer",
    "TlsError",
    "certificate_identity",
    "client_context",
    "ha_sasl_client",
    "server_context",
]
