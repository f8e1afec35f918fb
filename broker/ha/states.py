"""The HA broker states and the only transitions between them (one table, one place).

As in the seed (1.12.1 "HA Broker States"): a broker not in a cluster is `standalone`; one started
with `--ha-cluster yes` is `joining` until it receives data from a primary (`catch-up`), and is
`ready` once the primary says it holds everything the primary had when it connected. A cluster
manager promotes a ready backup (or, in a new cluster or after a total failure, a joining one) to
`recovering`, where it waits for the backups that were ready under the old primary; then `active`.
A recovering primary that gives up on a backup tells it to go back to `catch-up`.

Anything else is a bug or a misuse; `check` refuses it with `IllegalTransition`, and the broker
logs it as critical and stops (the seed's own HA module does the same).
"""

from __future__ import annotations

import enum


class BrokerState(enum.StrEnum):
    STANDALONE = "standalone"
    JOINING = "joining"
    CATCH_UP = "catch-up"
    READY = "ready"
    RECOVERING = "recovering"
    ACTIVE = "active"

    @classmethod
    def parse(cls, text: str) -> BrokerState:
        """Accept the printed names and the seed's spelling `catchup`; also `primary` / `backup`
        are not states (see `matches`)."""
        t = text.strip().lower().replace("_", "-")
        if t == "catchup":
            t = "catch-up"
        try:
            return cls(t)
        except ValueError:
            names = " ".join(s.value for s in cls)
            raise ValueError(f"unknown broker state {text!r} (one of: {names})") from None

    @property
    def is_primary(self) -> bool:
        return self in (BrokerState.RECOVERING, BrokerState.ACTIVE)

    @property
    def is_backup(self) -> bool:
        return self in (BrokerState.JOINING, BrokerState.CATCH_UP, BrokerState.READY)


S = BrokerState

# (from, to) -> why it is legal
TRANSITIONS: dict[tuple[BrokerState, BrokerState], str] = {
    (S.STANDALONE, S.JOINING): "started with --ha-cluster yes",
    (S.JOINING, S.CATCH_UP): "first data from a primary",
    (S.CATCH_UP, S.READY): "the primary says this backup holds what it had at connection",
    (S.READY, S.RECOVERING): "promoted",
    (S.JOINING, S.RECOVERING): "promoted with no primary or ready backup anywhere",
    (S.RECOVERING, S.ACTIVE): "every expected backup is ready again, or timed out",
    (S.READY, S.CATCH_UP): "a recovering primary timed this backup out",
}


class IllegalTransition(Exception):
    """A transition outside TRANSITIONS: the broker must stop."""

    def __init__(self, old: BrokerState, new: BrokerState, why: str) -> None:
        super().__init__(f"illegal HA state transition {old} -> {new} ({why})")
        self.old = old
        self.new = new


def check(old: BrokerState, new: BrokerState, why: str = "") -> str:
    """Return the reason the transition is legal, or raise IllegalTransition."""
    reason = TRANSITIONS.get((old, new))
    if reason is None:
        raise IllegalTransition(old, new, why or "no such transition")
    return reason


def matches(state: BrokerState, expected: str) -> bool:
    """`qstore-ha status --expect=X`: a state name, or `primary` / `backup`."""
    e = expected.strip().lower()
    if e == "primary":
        return state.is_primary
    if e == "backup":
        return state.is_backup
    return state == BrokerState.parse(expected)
