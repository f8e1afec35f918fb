"""The HA state table (broker/ha/states.py): exactly the seed's transitions are legal.

The seed's broker stops on any other transition, so the table is checked as a whole: every one of
the 36 (from, to) pairs is either in the expected set or raises IllegalTransition.
"""

from __future__ import annotations

import itertools

import pytest

from broker.ha.states import TRANSITIONS, BrokerState, IllegalTransition, check, matches

S = BrokerState

# The seed's table (1.12.1 "HA Broker States", 1.12.12.4), written out independently of the code.
LEGAL: set[tuple[BrokerState, BrokerState]] = {
    (S.STANDALONE, S.JOINING),
    (S.JOINING, S.CATCH_UP),
    (S.JOINING, S.RECOVERING),
    (S.CATCH_UP, S.READY),
    (S.READY, S.RECOVERING),
    (S.READY, S.CATCH_UP),
    (S.RECOVERING, S.ACTIVE),
}

ALL_PAIRS = list(itertools.product(list(S), repeat=2))


def test_six_states_printed_as_the_seed_prints_them() -> None:
    assert [s.value for s in S] == [
        "standalone",
        "joining",
        "catch-up",
        "ready",
        "recovering",
        "active",
    ]
    assert len(ALL_PAIRS) == 36


def test_table_is_exactly_the_seed_table() -> None:
    assert set(TRANSITIONS) == LEGAL


@pytest.mark.parametrize(("old", "new"), sorted(LEGAL), ids=lambda s: str(s))
def test_legal_transition_returns_its_reason(old: BrokerState, new: BrokerState) -> None:
    reason = check(old, new, "test")
    assert reason == TRANSITIONS[(old, new)]
    assert reason  # every legal transition says why


@pytest.mark.parametrize(
    ("old", "new"), [p for p in ALL_PAIRS if p not in LEGAL], ids=lambda s: str(s)
)
def test_every_other_pair_is_illegal(old: BrokerState, new: BrokerState) -> None:
    with pytest.raises(IllegalTransition) as info:
        check(old, new, "because the test says so")
    assert info.value.old == old
    assert info.value.new == new
    assert f"{old} -> {new}" in str(info.value)
    assert "because the test says so" in str(info.value)


def test_illegal_without_reason_still_says_something() -> None:
    with pytest.raises(IllegalTransition, match="no such transition"):
        check(S.ACTIVE, S.READY)


def test_legal_and_illegal_partition_all_36_pairs() -> None:
    legal = illegal = 0
    for old, new in ALL_PAIRS:
        try:
            check(old, new)
            legal += 1
        except IllegalTransition:
            illegal += 1
    assert (legal, illegal) == (7, 29)


@pytest.mark.parametrize("state", list(S), ids=str)
def test_parse_accepts_printed_names(state: BrokerState) -> None:
    assert S.parse(state.value) == state
    assert S.parse(f"  {state.value.upper()} ") == state


@pytest.mark.parametrize("text", ["catchup", "CatchUp", "catch_up", "catch-up"])
def test_parse_accepts_the_seeds_catchup_spellings(text: str) -> None:
    assert S.parse(text) == S.CATCH_UP


@pytest.mark.parametrize("text", ["", "primary", "backup", "bogus", "catch up"])
def test_parse_refuses_unknown_names_with_one_line(text: str) -> None:
    with pytest.raises(ValueError) as info:
        S.parse(text)
    message = str(info.value)
    assert "\n" not in message
    assert "unknown broker state" in message
    assert "standalone joining catch-up ready recovering active" in message


def test_primary_and_backup_groups() -> None:
    assert {s for s in S if s.is_primary} == {S.RECOVERING, S.ACTIVE}
    assert {s for s in S if s.is_backup} == {S.JOINING, S.CATCH_UP, S.READY}
    assert not S.STANDALONE.is_primary
    assert not S.STANDALONE.is_backup


@pytest.mark.parametrize("state", list(S), ids=str)
def test_matches_primary_and_backup(state: BrokerState) -> None:
    assert matches(state, "primary") == (state in (S.RECOVERING, S.ACTIVE))
    assert matches(state, " PRIMARY ") == (state in (S.RECOVERING, S.ACTIVE))
    assert matches(state, "backup") == (state in (S.JOINING, S.CATCH_UP, S.READY))


@pytest.mark.parametrize(("state", "expected"), ALL_PAIRS, ids=str)
def test_matches_state_names(state: BrokerState, expected: BrokerState) -> None:
    assert matches(state, expected.value) == (state == expected)


def test_matches_catchup_spelling() -> None:
    assert matches(S.CATCH_UP, "catchup")
    assert not matches(S.READY, "catchup")


def test_matches_refuses_unknown_expectation() -> None:
    with pytest.raises(ValueError, match="unknown broker state"):
        matches(S.ACTIVE, "leader")
