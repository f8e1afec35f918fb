"""Authorisation: may this user do this? The ACL file when there is one, and the HA identity.

Without `--acl-file` an authenticated user may do everything except the HA operations (promote,
the `qpid.ha-admin` privileges, a `qpid.ha-backup` replication link), which only the HA identity
(`--ha-username`) may do; with `--auth no` and no HA identity the cluster is open to all. With
an ACL file, every check goes through it (first match wins, no match denies) and the HA
operations are open to the HA identity and to whoever the ACL allows `update broker`.

A denial is logged once, in the seed's words (`ACL denied bob@QPID consume queue name=q`), and
its text is what the client reads in the `amqp:unauthorized-access` error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from broker.acl import Acl, load_or_keep
from qstore.sasl.names import identity

log = logging.getLogger("qstore.acl")

UNAUTHORIZED = "amqp:unauthorized-access"
Publish = Callable[[str], bool]  # routing key -> allowed


class Authorizer:
    def __init__(self, acl_file: Path | None, ha_username: str | None, *, auth: bool) -> None:
        self.acl_file = acl_file
        self.acl: Acl | None = Acl.load(acl_file) if acl_file is not None else None
        self.ha_identity = identity(ha_username) if ha_username else None
        self.open_ha = not auth and ha_username is None  # an open cluster: HA for everyone

    # -- the questions ------------------------------------------------------------------------

    def check(
        self, user: str, action: str, obj: str, props: Mapping[str, str] | None = None
    ) -> str | None:
        """None if allowed, else the denial (logged here)."""
        acl = self.acl
        if acl is None:
            return None
        decision = acl.check(user, action, obj, props)
        if decision.log or not decision.allowed:  # (the ACL quotes and escapes odd names)
            line = acl.log_line(decision, user, action, obj, props)
            log.log(logging.INFO if decision.allowed else logging.WARNING, "%s", line)
        return None if decision.allowed else acl.denial(user, action, obj, props)

    def ha_privileged(self, user: str) -> bool:
        """May this user promote, act as `qpid.ha-admin`, or replicate as a backup?"""
        if self.open_ha or (self.ha_identity is not None and identity(user) == self.ha_identity):
            return True
        return self.acl is not None and self.acl.check(user, "update", "broker").allowed

    def publisher(self, user: str, exchange: str) -> Publish | None:
        """A per-message check of publishing to `exchange` by routing key, or None when
        nothing needs checking (no ACL): the message path pays nothing then."""
        if self.acl is None:
            return None

        def allowed(key: str) -> bool:
            acl = self.acl  # the one in force now: a reload applies to open links too
            if acl is None or acl.allows_publish(user, exchange, key):
                return True
            self.check(user, "publish", "exchange", {"name": exchange, "routingkey": key})
            return False

        return allowed

    # -- reload -------------------------------------------------------------------------------

    def reload(self) -> tuple[bool, str]:
        """Re-read the ACL file (SIGHUP, `qstore-config reload-acl`); a bad file keeps the
        rules in force. (ok, one line saying what happened, for the one who asked)."""
        if self.acl_file is None:
            return False, "no ACL file (--acl-file) to reload"
        self.acl, problem = load_or_keep(self.acl_file, self.acl, log)
        if problem is not None:
            return False, f"ACL reload failed, the previous rules stay in force: {problem}"
        assert self.acl is not None
        return True, f"ACL reloaded from {self.acl_file}: {len(self.acl.rules)} rules"
