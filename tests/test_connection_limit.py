"""--max-connections decided sans I/O (broker/net/limit.py), on an injected clock: which socket is
refused or dropped at accept, which connection may stay at its AMQP open, the HA reserve, and the
spell logged once. Through real sockets and brokers: test_net.py, test_broker_limits.py and
test_ha_connection_reserve.py."""

from __future__ import annotations

import logging

import pytest

from broker.net.limit import GRACE, ConnectionLimit, Slot, ha_reserve


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _fill(limit: ConnectionLimit, n: int, prefix: str = "p") -> list[Slot]:
    slots = []
    for i in range(n):
        slot, victim = limit.admit(f"{prefix}{i}")
        assert slot is not None and victim is None
        slots.append(slot)
    return slots


def test_sockets_beyond_the_limit_are_refused_while_the_others_are_young(clock: Clock) -> None:
    limit = ConnectionLimit(3, clock=clock)
    _fill(limit, 3)
    clock.now += GRACE  # exactly the grace: not yet
    assert limit.admit("late") == (None, None)
    assert limit.sockets == 3


def test_the_oldest_unopened_socket_past_the_grace_gives_its_slot(clock: Clock) -> None:
    limit = ConnectionLimit(3, clock=clock)
    a, b, c = _fill(limit, 3)
    clock.now += 0.5
    assert limit.admit("d") == (None, None)  # a, b, c are young: refused
    clock.now += 0.6  # a, b, c have waited 1.1 s: dropped oldest first, one per newcomer
    victims = []
    for name in ("x", "y", "z"):
        slot, victim = limit.admit(name)
        assert slot is not None
        victims.append(victim)
    assert victims == [a, b, c] and all(s.evicted for s in victims)
    assert limit.sockets == 3
    assert limit.admit("late") == (None, None)  # x, y, z are young
    for s in victims:  # the evicted sockets' tasks end: each slot was counted once
        limit.release(s)
    assert limit.sockets == 3
    assert limit.admit("later") == (None, None)


def test_opened_connections_are_never_dropped(clock: Clock) -> None:
    limit = ConnectionLimit(3, clock=clock)
    slots = _fill(limit, 3)
    for s in slots:
        assert s.admit_open(ha=False)
    clock.now += 3600
    assert limit.admit("late") == (None, None)
    assert limit.open == 3 and limit.clients == 3
    limit.release(slots[0])
    slot, victim = limit.admit("late")
    assert slot is not None and victim is None


def test_eviction_skips_opened_sockets_and_takes_the_oldest_unopened(clock: Clock) -> None:
    limit = ConnectionLimit(4, clock=clock)
    a, b, c, d = _fill(limit, 4)
    a.admit_open(ha=False)
    c.admit_open(ha=True)
    clock.now += 2
    _, victim = limit.admit("x")
    assert victim is b
    _, victim = limit.admit("y")
    assert victim is d
    assert limit.admit("z") == (None, None)  # x and y are young


def test_a_client_refused_at_its_open_can_be_dropped_for_a_newcomer(clock: Clock) -> None:
    limit = ConnectionLimit(4, reserve=2, clock=clock)
    a, b, c, _ = _fill(limit, 4)
    assert a.admit_open(ha=False) and b.admit_open(ha=False)
    assert not c.admit_open(ha=False)  # 2 open = 4 - 2
    assert c.kind == "refused"
    clock.now += 2
    _, victim = limit.admit("backup")
    assert victim is c


def test_no_limit(clock: Clock) -> None:
    limit = ConnectionLimit(0, reserve=0, clock=clock)
    slots = _fill(limit, 1000)
    assert all(s.admit_open(ha=False) for s in slots)
    assert limit.open == 1000


def test_without_a_reserve_clients_get_every_slot(clock: Clock) -> None:
    limit = ConnectionLimit(5, clock=clock)
    assert all(s.admit_open(ha=False) for s in _fill(limit, 5))


def test_the_reserve_refuses_clients_and_admits_ha_up_to_the_limit(clock: Clock) -> None:
    limit = ConnectionLimit(10, reserve=3, clock=clock)
    slots = _fill(limit, 10)
    assert all(s.admit_open(ha=False) for s in slots[:7])
    assert not slots[7].admit_open(ha=False)
    assert "--max-connections 10" in slots[7].refusal()
    assert slots[8].admit_open(ha=True)  # backups and admins: up to the full limit
    assert slots[9].admit_open(ha=True)
    assert (limit.clients, limit.ha, limit.sockets) == (7, 2, 10)
    # HA connections count as open: a client gone leaves the reserve still kept
    limit.release(slots[0])
    new, _ = limit.admit("c")
    assert new is not None and not new.admit_open(ha=False)  # 6 + 2 HA = 8 > 10 - 3
    limit.release(slots[9])
    limit.release(slots[1])
    again, _ = limit.admit("c2")
    assert again is not None and again.admit_open(ha=False)  # 5 + 1 HA = 6 < 7


def test_release_counts_each_kind_once(clock: Clock) -> None:
    limit = ConnectionLimit(10, reserve=2, clock=clock)
    a, b, c, d = _fill(limit, 4)
    a.admit_open(ha=False)
    b.admit_open(ha=True)
    for s in (a, b, c, d, a, b):
        limit.release(s)
    assert (limit.sockets, limit.clients, limit.ha, limit.open) == (0, 0, 0, 0)
    assert a.admit_open(ha=False) is False  # a released slot is nobody's


def test_a_spell_is_logged_at_its_start_and_end_only(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qstore.net")
    limit = ConnectionLimit(2, clock=clock)
    a, b = _fill(limit, 2)
    for i in range(5):
        assert limit.admit(f"r{i}") == (None, None)
    clock.now += 2
    e, victim_e = limit.admit("e")
    _, victim_f = limit.admit("f")
    assert (victim_e, victim_f) == (a, b)
    assert limit.admit("r") == (None, None)  # e and f are young
    for s in (a, b):
        limit.release(s)
    starts = [r for r in caplog.records if "at --max-connections" in r.getMessage()]
    assert len(starts) == 1 and starts[0].levelno == logging.WARNING
    assert "first peer=r0" in starts[0].getMessage()
    assert not [r for r in caplog.records if "accepting connections again" in r.getMessage()]
    assert e is not None
    limit.release(e)
    slot, victim = limit.admit("ok")
    assert slot is not None and victim is None
    ends = [r.getMessage() for r in caplog.records if "accepting" in r.getMessage()]
    assert ends == [
        "accepting connections again (6 refused, 2 unopened sockets dropped for newer ones "
        "meanwhile)"
    ]


def test_refusals_at_the_open_are_logged_once_per_spell(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qstore.net")
    limit = ConnectionLimit(10, reserve=5, clock=clock)
    slots = _fill(limit, 10)
    assert all(s.admit_open(ha=False) for s in slots[:5])
    assert not any(s.admit_open(ha=False) for s in slots[5:9])
    assert slots[9].admit_open(ha=True)  # HA admitted: the clients' spell goes on
    limit.release(slots[0])
    limit.release(slots[9])
    new, _ = limit.admit("new")
    assert new is not None and new.admit_open(ha=False)
    messages = [r.getMessage() for r in caplog.records]
    starts = [m for m in messages if "refusing clients at their open" in m]
    assert len(starts) == 1 and "first refused peer=p5" in starts[0]
    assert [m for m in messages if "admitting clients again" in m] == [
        "admitting clients again (4 refused at their open meanwhile)"
    ]


@pytest.mark.parametrize(
    ("most", "brokers", "reserve"),
    [(500, 3, 10), (500, 5, 14), (20, 3, 10), (20, 2, 8), (10, 3, 5), (1, 3, 0), (0, 3, 0)],
)
def test_ha_reserve(most: int, brokers: int, reserve: int) -> None:
    assert ha_reserve(most, brokers) == reserve
