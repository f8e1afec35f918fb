"""The OCF agent's decisions: the monitor's exit code and the promotion score (tools/ocf/decide)."""

from __future__ import annotations

import pytest

from tools.cluster_manager import NodeView
from tools.ocf.decide import (
    SCORE_BEST_JOINING,
    SCORE_PRIMARY,
    SCORE_READY,
    SCORE_UNREADY,
    Rc,
    monitor_rc,
    promotion_score,
)


@pytest.mark.parametrize(
    ("running", "state", "was_primary", "rc"),
    [
        (False, None, False, Rc.NOT_RUNNING),
        (False, None, True, Rc.NOT_RUNNING),  # a dead primary is not running, not "failed"
        (True, "joining", False, Rc.SUCCESS),
        (True, "catch-up", False, Rc.SUCCESS),
        (True, "ready", False, Rc.SUCCESS),
        (True, "recovering", True, Rc.RUNNING_PROMOTED),
        (True, "active", True, Rc.RUNNING_PROMOTED),
        (True, "active", False, Rc.RUNNING_PROMOTED),  # promoted by someone else: still primary
        (True, None, True, Rc.FAILED_PROMOTED),  # alive, silent primary (SIGSTOP, hung)
        (True, None, False, Rc.ERR_GENERIC),  # alive, silent backup
        (True, "standalone", False, Rc.ERR_GENERIC),  # not a cluster member
    ],
)
def test_monitor_rc(running: bool, state: str | None, was_primary: bool, rc: Rc) -> None:
    assert monitor_rc(running, state, was_primary) == rc


def node(
    i: int, state: str | None, pos: tuple[int, int] = (0, 0), running: bool = True
) -> NodeView:
    return NodeView(i, running, state, pos)


def score(me: NodeView, *peers: NodeView, waited: float = 0.0, wait: float = 10.0) -> int | None:
    return promotion_score(me, list(peers), waited, wait)


def test_dead_or_silent_instance_has_no_score() -> None:
    assert score(node(0, None, running=False)) is None
    assert score(node(0, None)) is None


def test_ready_backup_scores_above_catch_up_and_joining_but_below_the_primary() -> None:
    primary = score(node(0, "active"), node(1, "ready"))
    ready = score(node(1, "ready"), node(0, "active"))
    catch_up = score(node(2, "catch-up"), node(0, "active"))
    joining = score(node(2, "joining"), node(0, "active"), node(1, "ready"))
    assert primary == SCORE_PRIMARY and ready == SCORE_READY
    assert catch_up == joining == SCORE_UNREADY
    assert primary > ready > joining > 0
    assert score(node(0, "recovering")) == SCORE_PRIMARY


def test_restarted_instance_beside_ready_backups_never_ties_with_them() -> None:
    # the primary was killed and restarted: the others are ready, it is joining
    restarted = score(node(0, "joining", (5, 900)), node(1, "ready"), node(2, "ready"))
    assert restarted is not None and restarted < SCORE_READY


def test_total_failure_only_the_highest_journal_position_scores() -> None:
    views = [node(0, "joining", (3, 50)), node(1, "joining", (3, 80)), node(2, "joining", (2, 999))]
    scores = [score(v, *[p for p in views if p is not v]) for v in views]
    assert scores == [None, SCORE_BEST_JOINING, None]


def test_total_failure_ties_go_to_the_lowest_index() -> None:
    views = [node(0, "joining", (1, 7)), node(1, "joining", (1, 7))]
    assert score(views[0], views[1]) == SCORE_BEST_JOINING
    assert score(views[1], views[0]) is None


def test_total_failure_waits_for_silent_peers_then_takes_the_best_that_answered() -> None:
    me, silent = node(0, "joining", (1, 5)), node(1, None, running=False)
    other = node(2, "joining", (1, 3))
    assert score(me, silent, other, waited=9.9, wait=10.0) is None
    assert score(me, silent, other, waited=10.0, wait=10.0) == SCORE_BEST_JOINING
    assert score(other, silent, me, waited=60.0, wait=10.0) is None


def test_lone_joining_broker_scores() -> None:
    assert score(node(0, "joining")) == SCORE_BEST_JOINING
