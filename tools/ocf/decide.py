"""What the OCF agent decides, as plain functions: the monitor's exit code and the promotion score.

Pacemaker promotes the instance with the highest promotion score (`crm_attribute --promotion`),
and it orders promotes after the clone's starts, so the scores are how the agent, not the
scheduler, keeps the seed's rules (1.12.10, 1.12.12.4):

- the primary keeps the top score, so that Pacemaker never moves it while it runs;
- a `ready` backup scores above a `catch-up` or `joining` one: only a ready backup holds all that
  was acknowledged. A freshly restarted instance is joining, so it never wins against the ready
  backups beside it (the first Pacemaker run re-promoted the instance it had just restarted when
  every running instance had the same score);
- a stopped or dead instance has no score at all;
- after a total failure every instance is joining: then only the joining broker with the highest
  journal position (epoch, seq) gets a score, chosen by `best_candidate`, the rule `qstore-cluster`
  and `qstore-ha recover` use. The others get none, so that Pacemaker cannot promote one of them
  before the best has spoken. While some peer does not answer, its journal may be the newest:
  no one gets a score until every peer answered or `recovery_wait` has passed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from tools.cluster_manager import NodeView, best_candidate


class Rc(enum.IntEnum):
    """OCF exit codes (resource-agents' ocf-returncodes)."""

    SUCCESS = 0
    ERR_GENERIC = 1
    ERR_ARGS = 2
    ERR_UNIMPLEMENTED = 3
    ERR_PERM = 4
    ERR_INSTALLED = 5
    ERR_CONFIGURED = 6
    NOT_RUNNING = 7
    RUNNING_PROMOTED = 8
    FAILED_PROMOTED = 9


PRIMARY_STATES = ("recovering", "active")
BACKUP_STATES = ("joining", "catch-up", "ready")

SCORE_PRIMARY = 1000
SCORE_READY = 100
SCORE_BEST_JOINING = 10  # after a total failure: the most up-to-date journal
SCORE_UNREADY = 1  # joining or catch-up beside a live cluster: promotable only as a last resort


def monitor_rc(running: bool, state: str | None, was_primary: bool) -> Rc:
    """The monitor's exit code.

    `running`: the broker's process is alive (a zombie is not); `state`: what it answered over
    AMQP, None if it did not answer in time; `was_primary`: this instance was promoted and not
    demoted since. A live process that does not answer is never `not running`: if it was the
    primary Pacemaker must see a failed primary (9), and stop it before promoting another."""
    if not running:
        return Rc.NOT_RUNNING
    if state is None:
        return Rc.FAILED_PROMOTED if was_primary else Rc.ERR_GENERIC
    if state in PRIMARY_STATES:
        return Rc.RUNNING_PROMOTED
    if state in BACKUP_STATES:
        return Rc.SUCCESS
    return Rc.ERR_GENERIC  # standalone: not started as a cluster member


def promotion_score(
    me: NodeView, peers: Sequence[NodeView], waited: float, recovery_wait: float
) -> int | None:
    """This instance's promotion score, None to delete it.

    `peers`: the other brokers of the brokers URL as they answered (state None: no answer),
    indexed as in that URL (ties go to the lowest index, as in `best_candidate`); only looked at
    for a joining broker. `waited`: seconds since this instance was started."""
    if not me.running or me.state is None:
        return None
    if me.state in PRIMARY_STATES:
        return SCORE_PRIMARY
    if me.state == "ready":
        return SCORE_READY
    if me.state != "joining":
        return SCORE_UNREADY  # catch-up
    others = [p.state for p in peers]
    if any(s is not None and s != "joining" for s in others):
        return SCORE_UNREADY  # a cluster is there (or forming): catch up first
    if None in others and waited < recovery_wait:
        return None  # a silent peer may hold the newest journal
    best = best_candidate([me, *peers], "joining")
    return SCORE_BEST_JOINING if best is not None and best.index == me.index else None
