"""The HA names a client of a cluster writes on the wire, in the seed's spelling.

`qpid.ha-admin: true` in a connection's open properties claims an HA admin's privileges: a backup
lets such a connection in (a management tool's, or one broker asking another for its status), if
its user may have them. Here, in the library, because the brokers read it and the tools send it.
"""

from __future__ import annotations

ADMIN_PROPERTY = "qpid.ha-admin"
