"""The HA role: a state machine whose decisions are plain functions of (state, event, now).

`HaRole.step(event, now)` returns actions for the I/O edge (`broker/ha/member.py`) to carry out:
connect to a broker, tell a backup it is ready or must catch up again, tell the guard whom held
messages wait for, journal a new epoch, change state, stop. The role never reads a clock and
never touches a socket, so every decision is tested with plain calls (tests/test_ha_role.py).

Backup side (joining, catch-up, ready): walk `--ha-brokers-url` (skipping this broker), one
attempt every link-maintenance-interval, until a primary accepts the replication link; the first
data makes a joining backup catch-up; the primary decides when it is ready.

Primary side (recovering, active): a promoted broker expects the backups that were ready under the
old primary (from the last membership it heard). It is `recovering` until each of them has
reconnected and caught up, or `--ha-backup-timeout` has passed since promotion: then `active`.
Of those timed out, an absent one stops holding anything; a connected one is told to catch up
again and stays held for, as every connected backup is (else it could become ready, and be
promoted, without what was acknowledged to senders meanwhile). A primary announces its membership
to the backups whenever it changes (`Announce`).

What the role owns, and no one else keeps: the membership it last heard (backup side), who its
backups are (name, address, the position that makes each ready, whether it is), and whom the
primary's QueueGuard must wait for (`held_for`), which it tells the guard through `Expect` /
`StopExpecting`. The acknowledged positions are the guard's (it releases holds by them);
`BackupAcked` tells the role only whether a backup reached its target. The links themselves are
`Primary.streams`'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .states import BrokerState, check

S = BrokerState


# -- membership --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One broker as a primary announces it to its backups (and `qstore-ha status` shows it)."""

    name: str
    address: str
    state: BrokerState

    def wire(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address, "state": str(self.state)}


def members_from_wire(data: Iterable[Any]) -> tuple[Member, ...]:
    """A membership message's `members`; ValueError (one line) if one is not a member."""
    out: list[Member] = []
    for m in data:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"]:
            raise ValueError(f"not a member: {m!r}")
        out.append(Member(m["name"], str(m.get("address") or ""), S.parse(str(m.get("state")))))
    return tuple(out)


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The broker listens (its name and address are final): join the cluster. `addresses` is
    `--ha-brokers-url` without this broker."""

    name: str
    address: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Tick:
    """Time passed (the HA member wakes the role at the deadline it asked for)."""


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
class MembershipHeard:
    """The primary announced the cluster's brokers (a backup keeps the last it heard: who was
    ready then is whom it expects if promoted)."""

    members: tuple[Member, ...]


@dataclass(frozen=True)
class Promote:
    """A cluster manager asks for promotion; `peers` is the state of each other broker of the URL
    that answered the HA member (asked only when this broker is joining: one that is primary or
    ready holds more than a joining broker, so it must be the one promoted).
    `known_epochs`: every epoch number this broker knows of (its history, its current epoch,
    the peers' epochs it asked for): the new epoch is numbered past all of them."""

    peers: tuple[tuple[str, BrokerState], ...] = ()  # (address, state)
    known_epochs: tuple[int, ...] = ()


@dataclass(frozen=True)
class BackupConnected:
    name: str
    address: str
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
    """Journal (and replicate) the epoch record of a new epoch `number`."""

    number: int


@dataclass(frozen=True)
class TellReady:
    name: str


@dataclass(frozen=True)
class TellCatchUp:
    name: str


@dataclass(frozen=True)
class Expect:
    """Messages held from now on wait for this backup's acknowledgement too (the guard)."""

    name: str


@dataclass(frozen=True)
class StopExpecting:
    """These backups no longer hold anything (lost or timed out)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class Announce:
    """Tell every backup the membership (it changed): whom a promoted backup must expect."""

    members: tuple[Member, ...]


@dataclass(frozen=True)
class Refuse:
    reason: str


@dataclass(frozen=True)
class WakeAt:
    when: float


Action = (
    Transition
    | Connect
    | StartEpoch
    | TellReady
    | TellCatchUp
    | Expect
    | StopExpecting
    | Announce
    | Refuse
    | WakeAt
)


@dataclass
class BackupInfo:
    """A connected backup. Its acknowledged position is the guard's: the role keeps only
    whether one acknowledgement reached `target`."""

    name: str
    address: str
    target: int
    ready: bool = False


@dataclass
class HaRole:
    """The role of one broker in the cluster."""

    addresses: list[str]  # --ha-brokers-url without this broker
    maintenance_interval: float
    backup_timeout: float
    state: BrokerState = S.JOINING
    name: str = ""  # this broker's (Started)
    address: str = ""
    # backup side
    connected_to: str | None = None
    next_attempt: float = 0.0
    next_index: int = 0
    heard: tuple[Member, ...] = ()  # the last membership the primary announced
    # primary side
    backups: dict[str, BackupInfo] = field(default_factory=dict)
    # ready under the old primary: awaited while recovering (and held for by the guard until
    # ready or given up, connected or not)
    expected: set[str] = field(default_factory=set)
    recovering_deadline: float = 0.0
    announced: tuple[Member, ...] = ()  # the membership last announced to the backups
    # set by what may change the membership (state, a backup in or out, ready): an acknowledgement
    # that changes nothing, the common event, then costs no look at it
    changed: bool = True

    def step(self, event: object, now: float) -> list[Action]:
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is None:
            raise TypeError(f"unknown HA event {event!r}")
        actions: list[Action] = handler(event, now)
        if self.changed and self.state.is_primary:  # a primary announces each change, once
            self.changed = False
            members = self.membership()
            if members != self.announced:
                self.announced = members
                actions.append(Announce(members))
        return actions

    def _go(self, new: BrokerState, why: str) -> Transition:
        check(self.state, new, why)
        t = Transition(self.state, new, why)
        self.state = new
        self.changed = True
        return t

    @property
    def last_membership_ready(self) -> frozenset[str]:
        """The other brokers that were ready under the last primary this broker heard."""
        return frozenset(m.name for m in self.heard if m.state == S.READY and m.name != self.name)

    def membership(self) -> tuple[Member, ...]:
        """The cluster as this broker knows it: on a primary, itself and its backups now (what
        it announces); on a backup, what its primary last announced."""
        if not self.state.is_primary:
            return self.heard
        me = Member(self.name, self.address, self.state)
        return (
            me,
            *(
                Member(n, b.address, S.READY if b.ready else S.CATCH_UP)
                for n, b in sorted(self.backups.items())
            ),
        )

    def held_for(self) -> set[str]:
        """Whom the guard waits for (what Expect / StopExpecting have told it): each connected
        backup, and while recovering each expected one, connected or not."""
        names = set(self.backups)
        return names | self.expected if self.state == S.RECOVERING else names

    @property
    def ready_backups(self) -> list[str]:
        return sorted(n for n, b in self.backups.items() if b.ready)

    # -- backup side ------------------------------------------------------------------------

    def _on_Started(self, ev: Started, now: float) -> list[Action]:
        self.name, self.address, self.addresses = ev.name, ev.address, list(ev.addresses)
        return [self._go(S.JOINING, "started with --ha-cluster yes"), *self._maintain_link(now)]

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

    def _on_MembershipHeard(self, ev: MembershipHeard, now: float) -> list[Action]:
        if not self.state.is_primary:  # else stale: sent by the primary this broker replaced
            self.heard = ev.members
        return []

    def _on_Promote(self, ev: Promote, now: float) -> list[Action]:
        if self.state.is_primary:
            return [Refuse(f"already primary ({self.state})")]
        if self.state == S.CATCH_UP:
            return [Refuse("a catch-up backup cannot be promoted: it does not hold everything")]
        if self.connected_to is not None:
            why = f"following the live primary at {self.connected_to}: two primaries lose data"
            return [Refuse(why)]
        ahead = [a for a, st in ev.peers if st.is_primary or st == S.READY]
        if self.state == S.JOINING and ahead:
            who = ", ".join(ahead)
            return [Refuse(f"joining, and these brokers are primary or ready: {who}")]
        if self.state not in (S.READY, S.JOINING):
            return [Refuse(f"cannot promote from {self.state}")]
        why = "promoted" if self.state == S.READY else "promoted from joining: no ready broker"
        number = max(ev.known_epochs, default=0) + 1
        actions: list[Action] = [self._go(S.RECOVERING, why), StartEpoch(number)]
        self.connected_to = None
        self.expected = set(self.last_membership_ready)
        self.recovering_deadline = now + self.backup_timeout
        actions += [Expect(n) for n in sorted(self.expected)]  # held for before they reconnect
        return actions + self._check_recovered(now)

    # -- primary side -----------------------------------------------------------------------

    def _on_BackupConnected(self, ev: BackupConnected, now: float) -> list[Action]:
        self.backups[ev.name] = BackupInfo(ev.name, ev.address, ev.target)
        self.changed = True
        actions = self._on_BackupAcked(BackupAcked(ev.name, 0), now)
        protected = self.state == S.RECOVERING and ev.name in self.expected
        if self.state.is_primary and not self.backups[ev.name].ready and not protected:
            # It may still say `ready` from an older primary (e.g. timed out while away): it must
            # not be promotable until it holds what this primary acknowledged (seed 1.12.12.4;
            # the seed's primary downgrades it to catch-up the same way).
            actions.insert(0, TellCatchUp(ev.name))
        actions.insert(0, Expect(ev.name))  # what is published from now on waits for it
        return actions

    def _on_BackupAcked(self, ev: BackupAcked, now: float) -> list[Action]:
        b = self.backups.get(ev.name)
        if b is None:
            return []
        actions: list[Action] = []
        if not b.ready and ev.seq >= b.target:  # ready stays: no need to keep the highest ack
            b.ready = True
            self.changed = True
            actions.append(TellReady(b.name))
        if self.state == S.RECOVERING:
            actions += self._check_recovered(now)
        return actions

    def _on_BackupLost(self, ev: BackupLost, now: float) -> list[Action]:
        self.changed = self.backups.pop(ev.name, None) is not None or self.changed
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
        # A connected one short of its target goes back to catch-up and stays held for, as any
        # connected backup is: were it not, it could become ready (and promotable) without
        # messages acknowledged to senders meanwhile. Only the absent ones stop holding.
        connected = waiting & self.backups.keys()
        actions: list[Action] = [TellCatchUp(n) for n in sorted(connected)]
        if waiting - connected:
            actions.append(StopExpecting(tuple(sorted(waiting - connected))))
        self.expected -= waiting
        actions.append(
            self._go(S.ACTIVE, f"backup timeout: gave up on {', '.join(sorted(waiting))}")
        )
        return actions
