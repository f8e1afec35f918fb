"""The HA names a client of a cluster writes on the wire, in the seed's spelling.

`qpid.ha-admin: true` in a connection's open properties claims an HA admin's privileges: a backup
lets such a connection in (a management tool's, or one broker asking another for its status), if
its user may have them. `qpid.ha-backup` claims to be a backup (its value: its name, address and
position), which then reads the primary's stream from the `$ha.replication` node. Here, in the
library, because brokers and tools both write or read them: one spelling each.
"""

from __future__ import annotations

ADMIN_PROPERTY = "qpid.ha-admin"
BACKUP_PROPERTY = "qpid.ha-backup"
REPLICATION = "$ha.replication"
