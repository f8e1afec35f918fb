"""The HA role: a state machine whose decisions are plain functions of (state, event, now).

`HaRole.step(event, now)` returns actions for the I/O edge (`broker/ha/driver.py`) to carry out:
connect to a broker, tell a backup it is ready or must catch up again, settle held messages,
journal a new epoch, change state, stop. The role never reads a clock and never touches a socket,
so every decision is tested with plain calls (tests/test_ha_role.py).

Backup side (joining, catch-up, ready): walk `--ha-brokers-url` (skipping this broker), one
attempt every link-maintenance-interval, until a primary accepts the replication link; the first
data makes a joining backup catch-up; the primary decides when it is ready.

Primary side (recovering, active): a promoted broker expects the backups that were ready under the
old primary (from the last membership it heard). It is `recovering` until each of them has
reconnected and caught up, or `--ha-backup-timeout` has passed since promotion: those timed out are
told to catch up again and stop holding anything; then `active`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .states import BrokerState, check

S = BrokerState


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    """Time passed (the driver wakes the role at the deadline it asked for)."""


@dataclass(frozen=True)
class ConnectFailed:
    address: str
    reason: str


@dataclass(frozen=True)
class PrimaryFound:
    address: str


@dataclass(frozen=True)
class FirstData:
    """The primary's first stream batch arrived."""


@dataclass(frozen=True)
class ToldReady:
    pass


@dataclass(frozen=True)
class ToldCatchUp:
    pass


@dataclass(frozen=True)
class PrimaryLost:
    reason: str


@dataclass(frozen=True)
class Promote:
    """A cluster manager asks for promotion; `peers_primary_or_ready` is what the driver found
    asking every other broker of the URL (needed only when this broker is joining)."""

    peers_primary_or_ready: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackupConnected:
    name: str
    target: int  # the primary's position when it connected: ready once it has acked this


@dataclass(frozen=True)
class BackupAcked:
    name: str
    seq: int


@dataclass(frozen=True)
class BackupLost:
    name: str
    reason: str


# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    old: BrokerState
    new: BrokerState
    why: str


@dataclass(frozen=True)
class Connect:
    address: str


@dataclass(frozen=True)
class StartEpoch:
    pass


@dataclass(frozen=True)
class TellReady:
    name: str


@dataclass(frozen=True)
class TellCatchUp:
    name: str


@dataclass(frozen=True)
class StopExpecting:
    """These backups no longer hold anything (lost or timed out)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class Refuse:
    reason: str


@dataclass(frozen=True)
class WakeAt:
    when: float


Action = (
    Transition | Connect | StartEpoch | TellReady | TellCatchUp | StopExpecting | Refuse | WakeAt
)


@dataclass
class BackupInfo:
    name: str
    target: int
    acked: int = 0
    ready: bool = False


@dataclass
class HaRole:
    """The role of one broker in the cluster."""

    addresses: list[str]  # --ha-brokers-url without this broker
    maintenance_interval: float
    backup_timeout: float
    state: BrokerState = S.JOINING
    # backup side
    connected_to: str | None = None
    next_attempt: float = 0.0
    next_index: int = 0
    last_membership_ready: frozenset[str] = frozenset()  # who was ready under the last primary
    # primary side
    backups: dict[str, BackupInfo] = field(default_factory=dict)
    expected: set[str] = field(default_factory=set)  # awaited while recovering
    recovering_deadline: float = 0.0

    def step(self, event: object, now: float) -> list[Action]:
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is None:
            raise TypeError(f"unknown HA event {event!r}")
        return handler(event, now)

    def _go(self, new: BrokerState, why: str) -> Transition:
        check(self.state, new, why)
        t = Transition(self.state, new, why)
        self.state = new
        return t

    # -- backup side ------------------------------------------------------------------------

    def _on_Tick(self, ev: Tick, now: float) -> list[Action]:
        if self.state.is_backup:
            return self._maintain_link(now)
        if self.state == S.RECOVERING:
            return self._check_recovered(now)
        return []

    def _maintain_link(self, now: float) -> list[Action]:
        if self.connected_to is not None or not self.addresses:
            return []
        if now < self.next_attempt:
            return [WakeAt(self.next_attempt)]
        address = self.addresses[self.next_index % len(self.addresses)]
        self.next_index += 1
        self.next_attempt = now + self.maintenance_interval
        return [Connect(address), WakeAt(self.next_attempt)]

    def _on_ConnectFailed(self, ev: ConnectFailed, now: float) -> list[Action]:
        return [WakeAt(self.next_attempt)] if self.state.is_backup else []

    def _on_PrimaryFound(self, ev: PrimaryFound, now: float) -> list[Action]:
        self.connected_to = ev.address
        return []

    def _on_FirstData(self, ev: FirstData, now: float) -> list[Action]:
        if self.state == S.JOINING:
            return [self._go(S.CATCH_UP, "first data from the primary")]
        return []

    def _on_ToldReady(self, ev: ToldReady, now: float) -> list[Action]:
        # stale (arrived after promotion) or already ready: no transition, never a stop
        if self.state == S.READY or not self.state.is_backup:
            return []
        if self.state == S.JOINING:  # a primary with nothing to send says ready at once
            return [self._go(S.CATCH_UP, "first data"), self._go(S.READY, "primary says ready")]
        return [self._go(S.READY, "the primary says this backup is caught up")]

    def _on_ToldCatchUp(self, ev: ToldCatchUp, now: float) -> list[Action]:
        if self.state == S.READY:
            return [self._go(S.CATCH_UP, "the recovering primary timed this backup out")]
        return []

    def _on_PrimaryLost(self, ev: PrimaryLost, now: float) -> list[Action]:
        if not self.state.is_backup:
            return []
        self.connected_to = None
        self.next_attempt = now  # look for the new primary at once
        return self._maintain_link(now)

    def _on_Promote(self, ev: Promote, now: float) -> list[Action]:
        if self.state.is_primary:
            return [Refuse(f"already primary ({self.state})")]
        if self.state == S.CATCH_UP:
            return [Refuse("a catch-up backup cannot be promoted: it does not hold everything")]
        if self.connected_to is not None:
            why = f"following the live primary at {self.connected_to}: two primaries lose data"
            return [Refuse(why)]
        if self.state == S.JOINING and ev.peers_primary_or_ready:
            who = ", ".join(ev.peers_primary_or_ready)
            return [Refuse(f"joining, and these brokers are primary or ready: {who}")]
        if self.state not in (S.READY, S.JOINING):
            return [Refuse(f"cannot promote from {self.state}")]
        why = "promoted" if self.state == S.READY else "promoted from joining: no ready broker"
        actions: list[Action] = [self._go(S.RECOVERING, why), StartEpoch()]
        self.connected_to = None
        self.expected = set(self.last_membership_ready)
        self.recovering_deadline = now + self.backup_timeout
        return actions + self._check_recovered(now)

    # -- primary side -----------------------------------------------------------------------

    def _on_BackupConnected(self, ev: BackupConnected, now: float) -> list[Action]:
        self.backups[ev.name] = BackupInfo(ev.name, ev.target)
        actions = self._on_BackupAcked(BackupAcked(ev.name, 0), now)
        protected = self.state == S.RECOVERING and ev.name in self.expected
        if self.state.is_primary and not self.backups[ev.name].ready and not protected:
            # It may still say `ready` from an older primary (e.g. timed out while away): it must
            # not be promotable until it holds what this primary acknowledged (seed 1.12.12.4;
            # the seed's primary downgrades it to catch-up the same way).
            actions.insert(0, TellCatchUp(ev.name))
        return actions

    def _on_BackupAcked(self, ev: BackupAcked, now: float) -> list[Action]:
        b = self.backups.get(ev.name)
        if b is None:
            return []
        b.acked = max(b.acked, ev.seq)
        actions: list[Action] = []
        if not b.ready and b.acked >= b.target:
            b.ready = True
            actions.append(TellReady(b.name))
        if self.state == S.RECOVERING:
            actions += self._check_recovered(now)
        return actions

    def _on_BackupLost(self, ev: BackupLost, now: float) -> list[Action]:
        self.backups.pop(ev.name, None)
        if self.state == S.RECOVERING and ev.name in self.expected:
            return []  # still awaited until the backup timeout
        return [StopExpecting((ev.name,))]

    def _check_recovered(self, now: float) -> list[Action]:
        if self.state != S.RECOVERING:
            return []
        waiting = {n for n in self.expected if not (n in self.backups and self.backups[n].ready)}
        if not waiting:
            return [self._go(S.ACTIVE, "every expected backup is ready")]
        if now < self.recovering_deadline:
            return [WakeAt(self.recovering_deadline)]
        actions: list[Action] = [TellCatchUp(n) for n in sorted(waiting) if n in self.backups]
        actions.append(StopExpecting(tuple(sorted(waiting))))
        self.expected -= waiting
        actions.append(
            self._go(S.ACTIVE, f"backup timeout: gave up on {', '.join(sorted(waiting))}")
        )
        return actions

    @property
    def ready_backups(self) -> list[str]:
        return sorted(n for n, b in self.backups.items() if b.ready)
