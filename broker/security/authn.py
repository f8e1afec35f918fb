"""Authentication: the SASL server each accepted connection runs, and the HA identity's client.

As qpidd: with `--auth yes` the broker offers SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN (checked
against `--sasl-db`), and EXTERNAL to a TLS client whose certificate was verified; never
ANONYMOUS. With `--auth no` it offers ANONYMOUS and PLAIN, the name taken as given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.config import BrokerConfig
from qstore.sasl import SaslClient, SaslServer
from qstore.sasl.userdb import CachedUserDb

from .tls import certificate_identity

if TYPE_CHECKING:
    from broker.net import EnginePump

AUTH_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
OPEN_MECHANISMS = ("ANONYMOUS", "PLAIN")
HA_DEFAULT_MECHANISM = "SCRAM-SHA-256"


class Authenticator:
    """Makes each connection's `SaslServer` (the `sasl` factory of the listeners)."""

    def __init__(self, cfg: BrokerConfig) -> None:
        self.auth = cfg.auth
        # Read now, so that a bad file stops start-up; re-read when it changes, so that
        # `qstore-passwd` takes effect without a restart.
        self.users = CachedUserDb(cfg.sasl_db) if cfg.sasl_db is not None else None

    def __call__(self, pump: EnginePump) -> SaslServer:
        external = certificate_identity(pump.peer_certificate) if pump.encrypted else None
        if self.auth:
            mechanisms = [*AUTH_MECHANISMS, *(["EXTERNAL"] if external else [])]
        else:
            mechanisms = list(OPEN_MECHANISMS)
        users = self.users.current() if self.users is not None else None
        return SaslServer(mechanisms=mechanisms, users=users, auth=self.auth, external_id=external)


def ha_sasl_client(cfg: BrokerConfig, hostname: str) -> SaslClient:
    """The SASL client of this broker's own links to the others (replication, status checks),
    logging in as the HA identity; without one, anonymously (an open cluster)."""
    mechanism = cfg.ha_mechanism
    if cfg.ha_username is not None and mechanism is None and cfg.auth:
        mechanism = HA_DEFAULT_MECHANISM
    client = SaslClient(
        user=cfg.ha_username, password=cfg.ha_password, mechanism=mechanism, hostname=hostname
    )
    client.start()
    return client
