"""Who a connection is to an HA broker: a plain function of its open's properties and the state.

A primary serves clients and backups; a backup serves neither (it drops them without an `open`,
so that a client moves on to the next broker of its URL). An HA administrator (`qstore-ha`, a
peer's status check) is served in every state. Claiming the backup or administrator role needs
the HA identity's privileges; the connection's `privileged()` is asked only of one that claims them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from qstore.ha import ADMIN_PROPERTY, BACKUP_PROPERTY

from .states import BrokerState

Admission = Literal["admin", "backup", "client", "refuse", "denied"]


def admission(
    properties: Mapping[str, Any], privileged: Callable[[], bool], state: BrokerState
) -> Admission:
    """`admin`, `backup` or `client` if the connection may stay; `refuse` (dropped without a
    word) or `denied` (claims HA privileges its user does not have)."""
    claims_admin = bool(properties.get(ADMIN_PROPERTY))
    claims_backup = BACKUP_PROPERTY in properties
    if (claims_admin or claims_backup) and not privileged():
        return "denied"
    if claims_admin:
        return "admin"
    if claims_backup:
        return "backup" if state.is_primary else "refuse"
    return "client" if state.is_primary else "refuse"
