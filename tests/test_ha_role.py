"""HaRole (broker/ha/role.py): every decision of the HA state machine, fed explicit times.

The role never reads a clock, so the tests pass `now` themselves (and one drives it from a frozen
`time.time()` to show no real waiting is needed). Actions are compared as whole lists: the order in
which the HA member carries them out matters (journal the epoch after becoming recovering, tell a
backup to catch up before dropping it from the guard). The guard is a real QueueGuard told what
the role's Expect / StopExpecting say, as the HA member does; admission is a plain function too.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from freezegun import freeze_time

from broker.ha.admission import admission
from broker.ha.guard import QueueGuard
from broker.ha.role import (
    Action,
    Announce,
    BackupAcked,
    BackupConnected,
    BackupLost,
    Connect,
    ConnectFailed,
    Expect,
    FirstData,
    HaRole,
    Member,
    MembershipHeard,
    PrimaryFound,
    PrimaryLost,
    Promote,
    Refuse,
    Started,
    StartEpoch,
    StopExpecting,
    TellCatchUp,
    TellReady,
    Tick,
    ToldCatchUp,
    ToldReady,
    Transition,
    WakeAt,
    members_from_wire,
)
from broker.ha.states import BrokerState, IllegalTransition
from qstore.ha import ADMIN_PROPERTY, BACKUP_PROPERTY

S = BrokerState
ADDRESSES = ["h1:5672", "h2:5672", "h3:5672"]
INTERVAL = 2.0
TIMEOUT = 10.0


def step(role: Any, event: object, now: float) -> list[Action]:
    """The role's actions but its announcements of the membership (tested on their own)."""
    return [a for a in role.step(event, now) if not isinstance(a, Announce)]


def backup(state: BrokerState = S.JOINING, addresses: list[str] | None = None) -> HaRole:
    return HaRole(
        addresses=list(ADDRESSES if addresses is None else addresses),
        maintenance_interval=INTERVAL,
        backup_timeout=TIMEOUT,
        state=state,
    )


def membership(ready: set[str], others: dict[str, BrokerState] | None = None) -> MembershipHeard:
    """What an old primary `p0` announces: itself, `ready` as ready, `others` as given."""
    members = [Member("p0", "h0:5672", S.ACTIVE)]
    members += [Member(n, f"{n}:5672", S.READY) for n in sorted(ready)]
    members += [Member(n, f"{n}:5672", st) for n, st in (others or {}).items()]
    return MembershipHeard(tuple(members))


def heard(role: HaRole, ready: set[str]) -> HaRole:
    assert step(role, membership(ready), 0.0) == []
    return role


def promoted(expected: set[str], now: float = 0.0) -> tuple[HaRole, list[Action]]:
    """A ready backup, ready under the old primary together with `expected`, promoted at `now`."""
    role = heard(backup(S.READY), expected)
    return role, step(role, Promote(), now)


def connected(name: str, target: int) -> BackupConnected:
    return BackupConnected(name, f"{name}:5672", target)


def connects(actions: list[Action]) -> list[str]:
    return [a.address for a in actions if isinstance(a, Connect)]


# -- link maintenance (backup side) -------------------------------------------------------------


def test_first_tick_connects_at_once_and_asks_to_be_woken() -> None:
    role = backup()
    assert step(role, Tick(), 100.0) == [Connect("h1:5672"), WakeAt(102.0)]


def test_attempts_walk_the_addresses_round_robin_one_per_interval() -> None:
    role = backup()
    tried: list[str] = []
    now = 0.0
    while now < 20.0:  # 40 ticks of 0.5 s: exactly one attempt every 2 s
        tried += connects(step(role, Tick(), now))
        now += 0.5
    assert tried == (ADDRESSES * 4)[:10]


def test_tick_before_the_deadline_only_renews_the_wake() -> None:
    role = backup()
    step(role, Tick(), 0.0)
    assert step(role, Tick(), 1.999) == [WakeAt(2.0)]
    assert step(role, Tick(), 2.0) == [Connect("h2:5672"), WakeAt(4.0)]


def test_wake_deadlines_follow_the_attempts() -> None:
    """An HA member that sleeps exactly until each WakeAt gets one attempt per wake-up."""
    role = backup()
    now = 5.0
    seen: list[tuple[float, str]] = []
    for _ in range(6):
        actions = step(role, Tick(), now)
        (wake,) = [a for a in actions if isinstance(a, WakeAt)]
        seen += [(now, address) for address in connects(actions)]
        assert wake.when == now + INTERVAL
        now = wake.when
    assert seen == [
        (5.0, "h1:5672"),
        (7.0, "h2:5672"),
        (9.0, "h3:5672"),
        (11.0, "h1:5672"),
        (13.0, "h2:5672"),
        (15.0, "h3:5672"),
    ]


def test_connect_failed_waits_for_the_next_interval() -> None:
    role = backup()
    step(role, Tick(), 0.0)
    assert step(role, ConnectFailed("h1:5672", "refused"), 0.1) == [WakeAt(2.0)]
    assert step(role, Tick(), 0.2) == [WakeAt(2.0)]  # no second attempt inside the interval


def test_link_maintenance_needs_no_real_waiting() -> None:
    """time.time() under freezegun drives the role through 30 s of attempts in no real time."""
    role = backup()
    with freeze_time("2030-01-01 00:00:00", tick=False) as frozen:
        start = time.time()
        tried: list[tuple[float, str]] = []
        for _ in range(60):
            now = time.time()
            tried += [(now - start, address) for address in connects(step(role, Tick(), now))]
            frozen.tick(0.5)
        assert time.time() - start == pytest.approx(30.0)
    assert [t for t, _ in tried] == pytest.approx([2.0 * i for i in range(15)])
    assert [a for _, a in tried] == ADDRESSES * 5


def test_wake_at_under_frozen_time_jumps_straight_to_the_deadline() -> None:
    role = backup()
    with freeze_time("2030-01-01 00:00:00", tick=False) as frozen:
        actions = step(role, Tick(), time.time())
        assert connects(actions) == ["h1:5672"]
        for expected in ["h2:5672", "h3:5672", "h1:5672"]:
            (wake,) = [a for a in actions if isinstance(a, WakeAt)]
            frozen.tick(wake.when - time.time())  # the HA member's sleep, without sleeping
            actions = step(role, Tick(), time.time())
            assert connects(actions) == [expected]


def test_connected_backup_stops_attempting() -> None:
    role = backup()
    step(role, Tick(), 0.0)
    assert step(role, PrimaryFound("h1:5672"), 0.5) == []
    assert role.connected_to == "h1:5672"
    assert step(role, Tick(), 2.0) == []
    assert step(role, Tick(), 50.0) == []


def test_primary_lost_makes_the_backup_retry_at_once() -> None:
    role = backup()
    step(role, Tick(), 0.0)
    step(role, PrimaryFound("h1:5672"), 0.1)
    # lost well inside the interval of the last attempt: the next address is tried now
    assert step(role, PrimaryLost("heartbeat"), 0.5) == [Connect("h2:5672"), WakeAt(2.5)]
    assert role.connected_to is None
    assert step(role, Tick(), 1.0) == [WakeAt(2.5)]
    assert step(role, Tick(), 2.5) == [Connect("h3:5672"), WakeAt(4.5)]


@pytest.mark.parametrize("state", [S.JOINING, S.CATCH_UP, S.READY], ids=str)
def test_every_backup_state_maintains_the_link(state: BrokerState) -> None:
    role = backup(state)
    assert connects(step(role, Tick(), 0.0)) == ["h1:5672"]
    step(role, PrimaryFound("h1:5672"), 0.0)
    assert connects(step(role, PrimaryLost("closed"), 1.0)) == ["h2:5672"]
    assert role.state == state  # losing the primary changes no state


def test_no_other_broker_means_no_attempt() -> None:
    role = backup(addresses=[])
    assert step(role, Tick(), 0.0) == []
    assert step(role, PrimaryLost("closed"), 1.0) == []


@pytest.mark.parametrize("state", [S.STANDALONE, S.RECOVERING, S.ACTIVE], ids=str)
def test_non_backups_never_connect(state: BrokerState) -> None:
    role = backup(state)
    role.recovering_deadline = 1e9
    assert connects(step(role, Tick(), 0.0)) == []
    assert step(role, PrimaryLost("closed"), 0.0) == []
    assert step(role, ConnectFailed("h1:5672", "refused"), 0.0) == []


# -- backup states ------------------------------------------------------------------------------


def test_first_data_joining_to_catch_up() -> None:
    role = backup()
    assert step(role, FirstData(), 0.0) == [
        Transition(S.JOINING, S.CATCH_UP, "first data from the primary")
    ]
    assert role.state == S.CATCH_UP
    assert step(role, FirstData(), 1.0) == []  # more data: still catching up
    assert role.state == S.CATCH_UP


def test_first_data_leaves_a_ready_backup_ready() -> None:
    role = backup(S.READY)
    assert step(role, FirstData(), 0.0) == []
    assert role.state == S.READY


def test_told_ready_catch_up_to_ready() -> None:
    role = backup(S.CATCH_UP)
    (t,) = step(role, ToldReady(), 0.0)
    assert isinstance(t, Transition)
    assert (t.old, t.new) == (S.CATCH_UP, S.READY)
    assert role.state == S.READY
    assert step(role, ToldReady(), 1.0) == []  # told twice: nothing more


def test_told_ready_while_joining_passes_through_catch_up() -> None:
    """A primary with nothing to send says ready before any data."""
    role = backup()
    actions = step(role, ToldReady(), 0.0)
    assert [(a.old, a.new) for a in actions if isinstance(a, Transition)] == [
        (S.JOINING, S.CATCH_UP),
        (S.CATCH_UP, S.READY),
    ]
    assert len(actions) == 2
    assert role.state == S.READY


def test_joining_first_data_then_ready() -> None:
    role = backup()
    step(role, FirstData(), 0.0)
    step(role, ToldReady(), 1.0)
    assert role.state == S.READY


def test_told_catch_up_ready_to_catch_up() -> None:
    role = backup(S.READY)
    (t,) = step(role, ToldCatchUp(), 0.0)
    assert isinstance(t, Transition)
    assert (t.old, t.new) == (S.READY, S.CATCH_UP)
    assert role.state == S.CATCH_UP
    # and it becomes ready again when the primary says so
    step(role, ToldReady(), 1.0)
    assert role.state == S.READY


@pytest.mark.parametrize("state", [S.JOINING, S.CATCH_UP], ids=str)
def test_told_catch_up_when_not_ready_changes_nothing(state: BrokerState) -> None:
    role = backup(state)
    assert step(role, ToldCatchUp(), 0.0) == []
    assert role.state == state


@pytest.mark.parametrize("state", [S.STANDALONE, S.RECOVERING, S.ACTIVE], ids=str)
def test_stale_backup_messages_do_not_stop_a_non_backup(state: BrokerState) -> None:
    """A replication message that arrives after promotion (or to a standalone broker) is stale:
    it must not become an illegal transition that stops the broker."""
    role = backup(state)
    for event in (FirstData(), ToldReady(), ToldCatchUp()):
        assert step(role, event, 0.0) == []
    assert role.state == state


# -- promotion ----------------------------------------------------------------------------------


def test_promote_ready_with_no_expected_backups_goes_active_at_once() -> None:
    role, actions = promoted(set(), now=3.0)
    assert actions == [
        Transition(S.READY, S.RECOVERING, "promoted"),
        StartEpoch(1),
        Transition(S.RECOVERING, S.ACTIVE, "every expected backup is ready"),
    ]
    assert role.state == S.ACTIVE


def test_promote_ready_with_expected_backups_recovers_until_the_timeout() -> None:
    role, actions = promoted({"b1", "b2"}, now=3.0)
    assert actions == [
        Transition(S.READY, S.RECOVERING, "promoted"),
        StartEpoch(1),
        Expect("b1"),  # held for from now on, before they reconnect
        Expect("b2"),
        WakeAt(3.0 + TIMEOUT),
    ]
    assert role.state == S.RECOVERING
    assert role.expected == {"b1", "b2"}


def test_promote_is_refused_while_following_a_live_primary() -> None:
    role = backup(S.READY)
    step(role, Tick(), 0.0)
    step(role, PrimaryFound("h1:5672"), 0.0)
    (refuse,) = step(role, Promote(), 1.0)
    assert isinstance(refuse, Refuse) and "live primary" in refuse.reason
    assert role.state == S.READY
    step(role, PrimaryLost("socket closed"), 2.0)  # the primary is gone: now it may lead
    assert any(isinstance(a, Transition) for a in step(role, Promote(), 2.1))
    assert role.connected_to is None
    assert connects(step(role, Tick(), 50.0)) == []


def test_promote_catch_up_is_refused() -> None:
    role = backup(S.CATCH_UP)
    (refuse,) = step(role, Promote(), 0.0)
    assert isinstance(refuse, Refuse)
    assert "catch-up" in refuse.reason
    assert role.state == S.CATCH_UP


def test_promote_joining_refused_when_a_peer_is_primary_or_ready() -> None:
    role = backup(S.JOINING)
    peers = (("h2:5672", S.READY), ("h3:5672", S.ACTIVE), ("h4:5672", S.CATCH_UP))
    (refuse,) = step(role, Promote(peers), 0.0)
    assert isinstance(refuse, Refuse)
    assert "h2:5672" in refuse.reason and "h3:5672" in refuse.reason
    assert "h4:5672" not in refuse.reason  # a catch-up broker holds less than it may
    assert role.state == S.JOINING


def test_promote_joining_allowed_when_no_peer_is_primary_or_ready() -> None:
    """The first primary of a new cluster (or after a total failure) comes from joining."""
    role = backup(S.JOINING)
    actions = step(role, Promote((("h2:5672", S.JOINING), ("h3:5672", S.CATCH_UP))), 0.0)
    assert [(a.old, a.new) for a in actions if isinstance(a, Transition)] == [
        (S.JOINING, S.RECOVERING),
        (S.RECOVERING, S.ACTIVE),
    ]
    assert actions[1] == StartEpoch(1)
    assert role.state == S.ACTIVE


def test_promote_ready_ignores_what_peers_report() -> None:
    role = backup(S.READY)
    actions = step(role, Promote((("h2:5672", S.READY),)), 0.0)
    assert StartEpoch(1) in actions
    assert role.state == S.ACTIVE


@pytest.mark.parametrize("state", [S.RECOVERING, S.ACTIVE], ids=str)
def test_promote_primary_is_refused(state: BrokerState) -> None:
    role = backup(state)
    (refuse,) = step(role, Promote(), 0.0)
    assert isinstance(refuse, Refuse)
    assert "already primary" in refuse.reason
    assert role.state == state


def test_promote_standalone_is_refused() -> None:
    role = backup(S.STANDALONE)
    (refuse,) = step(role, Promote(), 0.0)
    assert isinstance(refuse, Refuse)
    assert role.state == S.STANDALONE


# -- recovering primary -------------------------------------------------------------------------


def test_recovering_goes_active_when_every_expected_backup_acks_its_target() -> None:
    role, _ = promoted({"b1", "b2"}, now=0.0)

    assert step(role, connected("b1", 5), 1.0) == [Expect("b1"), WakeAt(TIMEOUT)]
    assert step(role, BackupAcked("b1", 4), 2.0) == [WakeAt(TIMEOUT)]
    assert step(role, BackupAcked("b1", 5), 3.0) == [TellReady("b1"), WakeAt(TIMEOUT)]
    assert role.state == S.RECOVERING

    assert step(role, connected("b2", 7), 4.0) == [Expect("b2"), WakeAt(TIMEOUT)]
    assert step(role, BackupAcked("b2", 9), 5.0) == [
        TellReady("b2"),
        Transition(S.RECOVERING, S.ACTIVE, "every expected backup is ready"),
    ]
    assert role.state == S.ACTIVE
    assert role.ready_backups == ["b1", "b2"]
    assert step(role, Tick(), 2 * TIMEOUT) == []  # nothing left to time out


def test_expected_backup_with_nothing_to_catch_up_is_ready_on_connect() -> None:
    role, _ = promoted({"b1"})
    assert step(role, connected("b1", 0), 1.0) == [
        Expect("b1"),
        TellReady("b1"),
        Transition(S.RECOVERING, S.ACTIVE, "every expected backup is ready"),
    ]


def test_tick_before_the_backup_timeout_keeps_recovering() -> None:
    role, _ = promoted({"b1"}, now=0.0)
    assert step(role, Tick(), TIMEOUT - 0.001) == [WakeAt(TIMEOUT)]
    assert role.state == S.RECOVERING


def test_backup_timeout_gives_up_on_the_waiting_backups() -> None:
    role, _ = promoted({"b1", "b2", "b3"}, now=0.0)
    step(role, connected("b1", 5), 1.0)
    step(role, BackupAcked("b1", 5), 2.0)  # b1 ready
    step(role, connected("b2", 5), 3.0)
    step(role, BackupAcked("b2", 3), 4.0)  # b2 connected, not caught up; b3 never came

    assert step(role, Tick(), TIMEOUT) == [
        TellCatchUp("b2"),  # connected: back to catch-up, still held for like any connected one
        StopExpecting(("b3",)),  # b3 cannot be told, but holds nothing any more
        Transition(S.RECOVERING, S.ACTIVE, "backup timeout: gave up on b2, b3"),
    ]
    assert role.state == S.ACTIVE
    assert role.expected == {"b1"}
    # b2 may still finish catching up under the active primary
    assert step(role, BackupAcked("b2", 5), 11.0) == [TellReady("b2")]
    assert role.ready_backups == ["b1", "b2"]


def test_backup_timeout_of_zero_gives_up_at_promotion() -> None:
    role = HaRole(addresses=[], maintenance_interval=INTERVAL, backup_timeout=0.0, state=S.READY)
    heard(role, {"b1"})
    assert step(role, Promote(), 4.0) == [
        Transition(S.READY, S.RECOVERING, "promoted"),
        StartEpoch(1),
        Expect("b1"),
        StopExpecting(("b1",)),
        Transition(S.RECOVERING, S.ACTIVE, "backup timeout: gave up on b1"),
    ]


def test_backup_lost_while_recovering_stays_expected() -> None:
    role, _ = promoted({"b1", "b2"}, now=0.0)
    step(role, connected("b1", 0), 1.0)  # b1 ready at once
    assert step(role, BackupLost("b1", "heartbeat"), 2.0) == []  # still awaited
    assert role.expected == {"b1", "b2"}
    # b2 becoming ready is not enough: b1 is waited for again
    assert step(role, connected("b2", 0), 3.0) == [
        Expect("b2"),
        TellReady("b2"),
        WakeAt(TIMEOUT),
    ]
    assert role.state == S.RECOVERING
    # at the timeout b1 is dropped, without being told anything (it is not connected)
    assert step(role, Tick(), TIMEOUT) == [
        StopExpecting(("b1",)),
        Transition(S.RECOVERING, S.ACTIVE, "backup timeout: gave up on b1"),
    ]


def test_expected_backup_lost_and_back_counts_when_ready_again() -> None:
    role, _ = promoted({"b1"}, now=0.0)
    step(role, connected("b1", 5), 1.0)
    step(role, BackupLost("b1", "closed"), 2.0)
    assert step(role, BackupAcked("b1", 5), 2.5) == []  # a late ack of the lost link: ignored
    step(role, connected("b1", 6), 3.0)
    actions = step(role, BackupAcked("b1", 6), 4.0)
    assert actions[0] == TellReady("b1")
    assert role.state == S.ACTIVE


def test_unexpected_backup_lost_while_recovering_stops_being_expected() -> None:
    role, _ = promoted({"b1"}, now=0.0)
    step(role, connected("new", 3), 1.0)
    assert step(role, BackupLost("new", "closed"), 2.0) == [StopExpecting(("new",))]
    assert role.state == S.RECOVERING


# -- active primary -----------------------------------------------------------------------------


def test_backup_lost_while_active_stops_expecting_it() -> None:
    role, _ = promoted({"b1"}, now=0.0)
    step(role, connected("b1", 0), 1.0)
    assert role.state == S.ACTIVE
    assert step(role, BackupLost("b1", "missed heartbeats"), 5.0) == [StopExpecting(("b1",))]
    assert role.ready_backups == []


def test_new_backup_under_an_active_primary_is_ready_once_caught_up() -> None:
    role, _ = promoted(set())
    actions = step(role, connected("b9", 4), 1.0)
    assert TellReady("b9") not in actions
    assert step(role, BackupAcked("b9", 4), 2.0) == [TellReady("b9")]
    assert step(role, BackupAcked("b9", 8), 3.0) == []  # told once
    assert role.ready_backups == ["b9"]


def test_backup_with_nothing_to_catch_up_is_ready_on_connect() -> None:
    role, _ = promoted(set())
    assert step(role, connected("b9", 0), 1.0) == [Expect("b9"), TellReady("b9")]


def test_backup_not_caught_up_is_told_to_catch_up_on_connect() -> None:
    """A backup still `ready` from an older primary (e.g. one this primary timed out while it was
    away) must not stay `ready` while it lacks what this primary acknowledged: it would be
    promotable without holding everything (seed 1.12.12.4)."""
    role, _ = promoted(set())
    assert step(role, connected("b9", 4), 1.0) == [Expect("b9"), TellCatchUp("b9")]


def test_expected_backup_is_not_told_to_catch_up_on_connect() -> None:
    """An expected backup keeps `ready` while the recovering primary holds acks on its behalf."""
    role, _ = promoted({"b1"})
    assert TellCatchUp("b1") not in step(role, connected("b1", 4), 1.0)


def test_acks_from_an_unknown_backup_are_ignored() -> None:
    role, _ = promoted(set())
    assert step(role, BackupAcked("ghost", 10), 1.0) == []


def test_tick_while_active_does_nothing() -> None:
    role, _ = promoted(set())
    assert step(role, Tick(), 1e6) == []


def test_unknown_event_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown HA event"):
        backup().step(object(), 0.0)


# -- two roles talking: the primary's tells drive the backup's states ---------------------------


def deliver(primary_actions: list[Action], backups: dict[str, HaRole], now: float) -> None:
    for action in primary_actions:
        if isinstance(action, TellReady):
            backups[action.name].step(ToldReady(), now)
        elif isinstance(action, TellCatchUp):
            backups[action.name].step(ToldCatchUp(), now)


def test_failover_round_trip() -> None:
    """b1 and b2 ready under an old primary; b1 is promoted; b2 reconnects, catches up, is ready;
    a third broker joins and becomes ready. Every transition on the way is legal."""
    b1, b2, b3 = backup(S.READY), backup(S.READY), backup(S.JOINING)
    heard(b1, {"b2"})
    roles = {"b2": b2, "b3": b3}

    assert step(b1, Promote(), 0.0)[:2] == [
        Transition(S.READY, S.RECOVERING, "promoted"),
        StartEpoch(1),
    ]
    step(b2, PrimaryLost("old primary died"), 0.0)
    step(b2, PrimaryFound("h1:5672"), 0.5)
    deliver(step(b1, connected("b2", 10), 0.5), roles, 0.5)
    assert b2.state == S.READY  # still protected: b1 holds acks for it
    deliver(step(b1, BackupAcked("b2", 10), 1.0), roles, 1.0)
    assert (b1.state, b2.state) == (S.ACTIVE, S.READY)

    deliver(step(b1, connected("b3", 12), 2.0), roles, 2.0)
    step(b3, FirstData(), 2.1)
    assert b3.state == S.CATCH_UP
    deliver(step(b1, BackupAcked("b3", 12), 3.0), roles, 3.0)
    assert b3.state == S.READY


def test_timed_out_backup_that_reconnects_late_is_not_ready_until_caught_up() -> None:
    b1, b2 = backup(S.READY), backup(S.READY)
    heard(b1, {"b2"})
    roles = {"b2": b2}
    step(b1, Promote(), 0.0)
    step(b2, PrimaryLost("old primary died"), 0.0)  # and b2 stays away past the timeout
    step(b1, Tick(), TIMEOUT)
    assert b1.state == S.ACTIVE
    assert b2.state == S.READY  # nobody could tell it yet

    deliver(step(b1, connected("b2", 20), 15.0), roles, 15.0)
    assert b2.state == S.CATCH_UP  # not promotable while it lacks what b1 acknowledged
    deliver(step(b1, BackupAcked("b2", 20), 16.0), roles, 16.0)
    assert b2.state == S.READY


# -- start ---------------------------------------------------------------------------------------


def test_started_joins_and_tries_the_first_other_broker_at_once() -> None:
    role = HaRole(
        addresses=[], maintenance_interval=INTERVAL, backup_timeout=TIMEOUT, state=S.STANDALONE
    )
    assert step(role, Started("me", "h0:5672", tuple(ADDRESSES)), 7.0) == [
        Transition(S.STANDALONE, S.JOINING, "started with --ha-cluster yes"),
        Connect("h1:5672"),
        WakeAt(7.0 + INTERVAL),
    ]
    assert (role.name, role.address, role.addresses) == ("me", "h0:5672", ADDRESSES)
    with pytest.raises(IllegalTransition):  # started twice is a bug, not a second join
        step(role, Started("me", "h0:5672", ()), 8.0)


def test_started_alone_joins_and_waits() -> None:
    role = HaRole(
        addresses=[], maintenance_interval=INTERVAL, backup_timeout=TIMEOUT, state=S.STANDALONE
    )
    assert step(role, Started("me", "h0:5672", ()), 0.0) == [
        Transition(S.STANDALONE, S.JOINING, "started with --ha-cluster yes")
    ]


# -- membership ----------------------------------------------------------------------------------


def test_promotion_expects_exactly_the_backups_that_were_ready() -> None:
    """Not the old primary, not a catch-up or joining broker, not this broker itself."""
    role = HaRole(
        addresses=list(ADDRESSES),
        maintenance_interval=INTERVAL,
        backup_timeout=TIMEOUT,
        state=S.READY,
        name="me",
    )
    event = membership({"b1", "b2", "me"}, {"b3": S.CATCH_UP, "b4": S.JOINING})
    assert step(role, event, 0.0) == []
    assert role.membership() == event.members  # a backup shows what it heard
    assert role.last_membership_ready == {"b1", "b2"}
    actions = step(role, Promote(), 1.0)
    assert [a for a in actions if isinstance(a, Expect)] == [Expect("b1"), Expect("b2")]
    assert role.expected == {"b1", "b2"}
    assert role.state == S.RECOVERING


def test_the_last_membership_heard_counts() -> None:
    role = backup(S.READY)
    step(role, membership({"b1", "b2"}), 0.0)
    step(role, membership({"b2"}, {"b1": S.CATCH_UP}), 1.0)  # b1 fell behind meanwhile
    assert [a for a in step(role, Promote(), 2.0) if isinstance(a, Expect)] == [Expect("b2")]


def test_membership_heard_after_promotion_is_stale() -> None:
    role, _ = promoted({"b1"})
    assert step(role, membership({"b7", "b8"}), 1.0) == []
    assert role.expected == {"b1"}
    assert [m.name for m in role.membership()] == [""]  # itself; nobody connected yet


def test_a_joining_broker_promoted_with_no_membership_expects_nobody() -> None:
    role = backup(S.JOINING)
    actions = step(role, Promote(), 0.0)
    assert not [a for a in actions if isinstance(a, Expect)]
    assert role.state == S.ACTIVE


def test_primary_membership_is_itself_and_its_backups_as_they_are_now() -> None:
    role = HaRole(
        addresses=[], maintenance_interval=INTERVAL, backup_timeout=TIMEOUT, state=S.STANDALONE
    )
    step(role, Started("p", "h0:5672", ()), 0.0)
    step(role, Promote(), 0.0)
    step(role, BackupConnected("b2", "h2:5672", 5), 1.0)
    step(role, BackupConnected("b1", "h1:5672", 0), 1.0)
    assert role.membership() == (
        Member("p", "h0:5672", S.ACTIVE),
        Member("b1", "h1:5672", S.READY),
        Member("b2", "h2:5672", S.CATCH_UP),
    )
    step(role, BackupAcked("b2", 5), 2.0)
    step(role, BackupLost("b1", "closed"), 3.0)
    assert role.membership() == (
        Member("p", "h0:5672", S.ACTIVE),
        Member("b2", "h2:5672", S.READY),
    )


def test_members_travel_as_plain_dicts_and_back() -> None:
    members = membership({"b1"}, {"b2": S.CATCH_UP}).members
    wire = [m.wire() for m in members]
    assert wire[1] == {"name": "b1", "address": "b1:5672", "state": "ready"}
    assert members_from_wire(wire) == members
    assert members_from_wire([{"name": "b", "state": "catchup"}]) == (Member("b", "", S.CATCH_UP),)


@pytest.mark.parametrize(
    "bad",
    [
        ["b1"],
        [{"state": "ready"}],
        [{"name": "", "state": "ready"}],
        [{"name": "b1", "state": "leader"}],
        [{"name": "b1"}],
    ],
    ids=["not-a-dict", "no-name", "empty-name", "unknown-state", "no-state"],
)
def test_a_member_that_is_not_one_is_a_value_error(bad: list[object]) -> None:
    with pytest.raises(ValueError):
        members_from_wire(bad)


# -- the new epoch's number ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("known", "number"),
    [((), 1), ((0,), 1), ((1, 2, 3), 4), ((3, 9, 4), 10), ((5, 5, 2), 6)],
)
def test_the_new_epoch_is_numbered_past_every_known_one(
    known: tuple[int, ...], number: int
) -> None:
    role = backup(S.READY)
    actions = step(role, Promote(known_epochs=known), 0.0)
    assert actions[1] == StartEpoch(number)


def test_a_joining_broker_numbers_past_the_peers_epochs_it_was_told() -> None:
    """After a total failure the joining brokers may hold older histories than a peer that
    answered: the epochs it reported count too (the HA member passes them in known_epochs)."""
    role = backup(S.JOINING)
    actions = step(role, Promote(known_epochs=(2, 2, 6)), 0.0)
    assert StartEpoch(7) in actions


@pytest.mark.parametrize("state", [S.CATCH_UP, S.ACTIVE], ids=str)
def test_a_refused_promotion_starts_no_epoch(state: BrokerState) -> None:
    role = backup(state)
    (refuse,) = step(role, Promote(known_epochs=(4,)), 0.0)
    assert isinstance(refuse, Refuse)


# -- admission ---------------------------------------------------------------------------------


BACKUP_INFO = {"name": "b1", "address": "h1:5672"}
PRIMARY_STATES = [S.RECOVERING, S.ACTIVE]
OTHER_STATES = [S.STANDALONE, S.JOINING, S.CATCH_UP, S.READY]


@pytest.mark.parametrize(
    ("properties", "privileged", "on_primary", "elsewhere"),
    [
        ({}, False, "client", "refuse"),
        ({"product": "qpid"}, True, "client", "refuse"),
        ({ADMIN_PROPERTY: True}, True, "admin", "admin"),
        ({ADMIN_PROPERTY: True}, False, "denied", "denied"),
        ({ADMIN_PROPERTY: False}, False, "client", "refuse"),  # no claim: a plain client
        ({BACKUP_PROPERTY: BACKUP_INFO}, True, "backup", "refuse"),
        ({BACKUP_PROPERTY: BACKUP_INFO}, False, "denied", "denied"),
        ({BACKUP_PROPERTY: None}, False, "denied", "denied"),  # claimed by its key alone
        ({ADMIN_PROPERTY: True, BACKUP_PROPERTY: BACKUP_INFO}, True, "admin", "admin"),
    ],
    ids=[
        "client",
        "client-privileged",
        "admin",
        "admin-unprivileged",
        "admin-false",
        "backup",
        "backup-unprivileged",
        "backup-none",
        "admin-and-backup",
    ],
)
@pytest.mark.parametrize("state", PRIMARY_STATES + OTHER_STATES, ids=str)
def test_admission(
    properties: dict[str, object],
    privileged: bool,
    on_primary: str,
    elsewhere: str,
    state: BrokerState,
) -> None:
    asked: list[bool] = []

    def check() -> bool:
        asked.append(True)
        return privileged

    want = on_primary if state in PRIMARY_STATES else elsewhere
    assert admission(properties, check, state) == want
    # the (ACL) check is made only for a connection that claims HA privileges
    claims = bool(properties.get(ADMIN_PROPERTY)) or BACKUP_PROPERTY in properties
    assert asked == ([True] if claims else [])


# -- the guard is told whom to wait for ----------------------------------------------------------


class Primary:
    """A role with a real QueueGuard, the guard told what the role's actions say (the HA member's
    two lines for Expect / StopExpecting), the acknowledgements fed to both as Primary does."""

    def __init__(self, expected: set[str]) -> None:
        self.guard = QueueGuard()
        self.released: list[int] = []
        self.role = heard(backup(S.READY), expected)
        self.actions: list[Action] = []
        self.step(Promote(), 0.0)

    def step(self, event: object, now: float) -> list[Action]:
        self.actions = step(self.role, event, now)
        for a in self.actions:
            if isinstance(a, Expect):
                self.guard.expect(a.name)
            elif isinstance(a, StopExpecting):
                self.run(self.guard.drop(a.names))
        assert self.guard.expected == self.role.held_for()  # the guard does as it is told
        return self.actions

    def ack(self, name: str, seq: int, now: float) -> list[Action]:
        self.run(self.guard.acknowledged(name, seq))
        return self.step(BackupAcked(name, seq), now)

    def hold(self, seq: int) -> bool:
        return self.guard.hold(seq, ("q", seq), lambda _: self.released.append(seq))

    def run(self, releases: list) -> None:  # type: ignore[type-arg]
        for release in releases:
            release(None)


def test_a_promoted_primary_holds_for_the_expected_backups_before_they_reconnect() -> None:
    p = Primary({"b1", "b2"})
    assert p.hold(1) is True  # nobody connected yet: held for b1 and b2
    step(p, connected("b1", 0), 1.0)
    p.ack("b1", 1, 1.5)
    assert p.released == []  # still b2
    step(p, connected("b2", 1), 2.0)
    assert p.ack("b2", 1, 2.5) == [
        TellReady("b2"),
        Transition(S.RECOVERING, S.ACTIVE, "every expected backup is ready"),
    ]
    assert p.released == [1]


def test_an_expected_backup_lost_while_recovering_is_held_for_until_the_timeout() -> None:
    p = Primary({"b1", "b2"})
    step(p, connected("b1", 4), 1.0)
    p.ack("b1", 2, 1.5)  # not yet at its target
    assert p.hold(5) is True
    assert step(p, BackupLost("b1", "heartbeat"), 2.0) == []  # still expected, still held for
    step(p, connected("b1", 6), 3.0)  # back, with a later target
    p.ack("b1", 5, 3.5)
    assert p.released == []  # b2 never came
    assert step(p, Tick(), TIMEOUT) == [
        TellCatchUp("b1"),  # connected but short of its target: catch up again
        StopExpecting(("b2",)),  # only the absent one stops holding
        Transition(S.RECOVERING, S.ACTIVE, "backup timeout: gave up on b1, b2"),
    ]
    assert p.released == [5]


def test_a_connected_backup_timed_out_stays_held_for_until_it_is_ready_again() -> None:
    """Were it dropped from the guard, it would become ready (promotable) on reaching its target
    without the messages acknowledged to senders after it: a promotion would lose them."""
    p = Primary({"b1"})
    step(p, connected("b1", 4), 1.0)
    step(p, Tick(), TIMEOUT)  # gave up waiting: active, b1 back to catch-up
    assert p.role.held_for() == {"b1"}
    assert p.hold(7) is True  # a sender's message after the timeout waits for b1
    assert p.ack("b1", 4, 11.0) == [TellReady("b1")]  # at its target: ready ...
    assert p.released == []  # ... and message 7, not yet on b1, is still held
    p.ack("b1", 7, 11.5)
    assert p.released == [7]


def test_a_backup_lost_while_active_is_no_longer_held_for() -> None:
    p = Primary(set())
    step(p, connected("b9", 0), 1.0)
    step(p, connected("b8", 0), 1.0)
    assert p.hold(3) is True
    p.ack("b9", 3, 2.0)
    assert p.released == []
    assert step(p, BackupLost("b8", "closed"), 3.0) == [StopExpecting(("b8",))]
    assert p.released == [3]
    step(p, BackupLost("b9", "closed"), 4.0)
    assert p.hold(4) is False  # nobody to wait for


def test_a_backup_that_connects_is_held_for_from_then_on() -> None:
    p = Primary(set())
    assert p.hold(1) is False  # before it: nobody to wait for
    assert step(p, connected("b9", 1), 1.0)[0] == Expect("b9")
    assert p.hold(2) is True
    p.ack("b9", 2, 2.0)
    assert p.released == [2]


def announced(actions: list[Action]) -> list[tuple[str, str]] | None:
    """What an Announce among `actions` says (name, state of each member), or None."""
    found = [a for a in actions if isinstance(a, Announce)]
    assert len(found) <= 1
    return [(m.name, str(m.state)) for m in found[0].members] if found else None


def test_a_primary_announces_each_change_of_its_membership_once() -> None:
    role = HaRole(addresses=[], maintenance_interval=INTERVAL, backup_timeout=TIMEOUT, name="p")
    assert announced(role.step(Promote(), 0.0)) == [("p", "active")]  # no backup expected
    assert announced(role.step(connected("b1", 5), 1.0)) == [("p", "active"), ("b1", "catch-up")]
    assert announced(role.step(BackupAcked("b1", 3), 2.0)) is None  # nothing changed
    assert announced(role.step(BackupAcked("b1", 5), 3.0)) == [("p", "active"), ("b1", "ready")]
    assert announced(role.step(BackupAcked("b1", 9), 4.0)) is None
    assert announced(role.step(Tick(), 5.0)) is None
    # a backup that leaves is announced too: a later primary must not wait for it
    assert announced(role.step(BackupLost("b1", "closed"), 6.0)) == [("p", "active")]


def test_a_backup_never_announces() -> None:
    role = backup()
    for event in (ToldReady(), membership({"b2"}), PrimaryLost("gone"), Tick()):
        assert announced(role.step(event, 1.0)) is None


def test_a_backup_promoted_after_its_primary_expects_whom_the_primary_had_ready() -> None:
    """The membership travels as the wire has it: p announces, b2 hears, p dies, b2 leads."""
    p = HaRole(
        addresses=[],
        maintenance_interval=INTERVAL,
        backup_timeout=TIMEOUT,
        name="p",
        address="h0:5672",
    )
    step(p, Promote(), 0.0)
    for name, target in (("b2", 0), ("b3", 0), ("b4", 9)):
        step(p, BackupConnected(name, f"{name}:5672", target), 1.0)
    wire = [m.wire() for m in p.membership()]

    b2 = HaRole(addresses=[], maintenance_interval=INTERVAL, backup_timeout=TIMEOUT, name="b2")
    step(b2, ToldReady(), 1.0)
    step(b2, MembershipHeard(members_from_wire(wire)), 1.0)
    actions = step(b2, Promote(known_epochs=(1,)), 5.0)
    assert actions[:4] == [
        Transition(S.READY, S.RECOVERING, "promoted"),
        StartEpoch(2),
        Expect("b3"),  # b2 itself, the dead primary and catch-up b4 are not waited for
        WakeAt(5.0 + TIMEOUT),
    ]
