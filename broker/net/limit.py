"""--max-connections, sans I/O: who gets a socket slot at accept, who is dropped for it, and who
may stay at the AMQP open.

Every socket costs buffers and a task from accept on, so the limit counts sockets, not opened
connections: a flood of idle sockets must not be able to take the broker's memory. But a socket
that has not yet said who it is is also the cheapest one to lose, so when the limit is full a new
socket takes the slot of the oldest one that has not been admitted at its AMQP open (TLS, SASL or
the open still pending, or refused at the open), if that one has waited more than `grace`. The
grace keeps a burst of honest clients from dropping each other: each socket gets that long to log
in before it can be the one dropped. Otherwise the new socket is refused, closed at once (a stock
client tries its next URL).

In an HA cluster the last `reserve` slots are kept for the cluster itself: at its open, an
ordinary client is refused (`amqp:resource-limit-exceeded`) when the connections already open,
of any kind, fill all but the reserve; a backup's replication link and an HA admin (`qpid.ha-admin`)
are admitted up to the full limit. So a client flood cannot keep a restarted backup (or the tool
that would promote or inspect) out of the primary: clients hold at most `most - reserve`, idle
sockets lose their slots to newcomers, and what is left is for HA.

A spell of refusals or evictions is logged at its start and end, with counts, never per socket.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger("qstore.net")

GRACE = 1.0  # seconds a socket may wait for its open before it can be dropped for a newcomer
RESERVE_PER_BROKER = 2  # a backup's replication link and its status check may come at once
RESERVE_FOR_TOOLS = 4  # qstore-ha, qpid-ha, management consoles (qpid.ha-admin)


def ha_reserve(most: int, brokers: int) -> int:
    """The slots an HA member keeps for the cluster: two per broker in --ha-brokers-url (a
    restarting backup asks each peer for its status, then links to the primary) plus a few for
    admin tools, but never more than half the limit, so that a small --max-connections still
    leaves clients half of it. 0 without a limit."""
    if not most:
        return 0
    return min(RESERVE_PER_BROKER * brokers + RESERVE_FOR_TOOLS, most // 2)


def _no_drop(reason: str) -> None:
    """A slot's `drop` until the server gives it the real one."""


class Slot:
    """One accepted socket's place in a `ConnectionLimit`. The server sets `drop` (how to cut
    the socket now); the connection's handler calls `admit_open` at the peer's AMQP open."""

    __slots__ = ("_limit", "drop", "evicted", "kind", "peer", "since")

    def __init__(self, limit: ConnectionLimit, peer: str, since: float) -> None:
        self._limit = limit
        self.peer = peer
        self.since = since  # when it was accepted (the limit's clock)
        self.kind = "pending"  # pending | refused | client | ha | released
        self.evicted = False  # dropped for a newcomer: its slot is the newcomer's already
        self.drop: Callable[[str], None] = _no_drop

    def admit_open(self, ha: bool) -> bool:
        """At the peer's AMQP open: may this connection stay? `ha`: a backup's link or an HA
        admin. False: refuse it (`refusal()` says why); it stays a candidate for eviction."""
        return self._limit.admit_open(self, ha)

    def refusal(self) -> str:
        """What a client refused at its open reads."""
        return self._limit.refusal()

    def __repr__(self) -> str:
        return f"Slot({self.peer}, {self.kind}, since={self.since:g})"


class ConnectionLimit:
    """At most `most` sockets at once across the listeners that share it (0: no limit), the last
    `reserve` of them for HA connections; see the module's docstring. A connection counts as
    open once its handler admits it (`Slot.admit_open`); until then it can be evicted."""

    def __init__(
        self,
        most: int,
        *,
        reserve: int = 0,
        grace: float = GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.most = most
        self.reserve = reserve
        self.grace = grace
        self._clock = clock
        self.sockets = 0  # sockets holding a slot (an evicted one has given its slot away)
        self.clients = 0  # ordinary connections admitted at their open, still there
        self.ha = 0  # HA connections (backups, admins) admitted at their open, still there
        # sockets not admitted at an open, oldest first (O(1) to take the oldest or any one)
        self._pending: OrderedDict[Slot, None] = OrderedDict()
        self._refused = 0  # sockets refused at accept in the current spell
        self._evicted = 0  # sockets evicted in the current spell
        self._refused_open = 0  # clients refused at their open in the current spell

    @property
    def open(self) -> int:
        """Connections admitted at their open."""
        return self.clients + self.ha

    # -- at accept ------------------------------------------------------------------------------

    def admit(self, peer: str) -> tuple[Slot | None, Slot | None]:
        """A new socket from `peer`: (its slot, or None to refuse it; a slot whose socket to
        drop for it, or None). The caller calls the victim's `drop`."""
        victim = None
        if self.most and self.sockets >= self.most:
            victim = self._oldest_pending()
            if victim is None:
                self._start_spell(peer)
                self._refused += 1
                return None, None
            self._start_spell(peer)
            self._evicted += 1
            del self._pending[victim]
            victim.evicted = True
            self.sockets -= 1
        elif self._refused or self._evicted:
            log.info(
                "accepting connections again (%d refused, %d unopened sockets dropped for "
                "newer ones meanwhile)",
                self._refused,
                self._evicted,
            )
            self._refused = self._evicted = 0
        slot = Slot(self, peer, self._clock())
        self._pending[slot] = None
        self.sockets += 1
        return slot, victim

    def _oldest_pending(self) -> Slot | None:
        if not self._pending:
            return None
        oldest = next(iter(self._pending))
        return oldest if self._clock() - oldest.since > self.grace else None

    def _start_spell(self, peer: str) -> None:
        if self._refused or self._evicted:
            return
        log.warning(
            "at --max-connections: %d sockets, %d connections open (%d HA); newer sockets "
            "take the place of ones not open after %gs, else are refused; first peer=%s",
            self.sockets,
            self.open,
            self.ha,
            self.grace,
            peer,
        )

    # -- at the AMQP open -----------------------------------------------------------------------

    def admit_open(self, slot: Slot, ha: bool) -> bool:
        """See `Slot.admit_open`. Called once per connection, at its open."""
        if slot.kind != "pending":
            return slot.kind in ("client", "ha")
        if not ha and self.most and self.open >= self.most - self.reserve:
            if not self._refused_open:
                log.warning(
                    "refusing clients at their open: %d connections open (%d HA), the last %d of "
                    "--max-connections %d are kept for HA connections; first refused peer=%s",
                    self.open,
                    self.ha,
                    self.reserve,
                    self.most,
                    slot.peer,
                )
            self._refused_open += 1
            slot.kind = "refused"
            return False
        if not ha and self._refused_open:
            log.info("admitting clients again (%d refused at their open meanwhile)",
                     self._refused_open)  # fmt: skip
            self._refused_open = 0
        self._pending.pop(slot, None)
        slot.kind = "ha" if ha else "client"
        if ha:
            self.ha += 1
        else:
            self.clients += 1
        return True

    def refusal(self) -> str:
        """The description a refused client reads."""
        return (
            f"too many connections: {self.open} open, the last {self.reserve} of "
            f"--max-connections {self.most} are kept for the HA cluster's own connections"
        )

    # -- when the socket is gone ----------------------------------------------------------------

    def release(self, slot: Slot) -> None:
        """The socket's task has ended (whatever happened to it)."""
        kind = slot.kind
        if kind == "released":
            return
        slot.kind = "released"
        if kind == "client":
            self.clients -= 1
        elif kind == "ha":
            self.ha -= 1
        else:
            self._pending.pop(slot, None)
        if not slot.evicted:
            self.sockets -= 1
