"""The catch-up decisions (broker/ha/catchup.py): tail, snapshot, and where histories diverge."""

from broker.ha.catchup import BackupPosition, common_prefix, plan
from broker.history import EpochId

A, B = "node-a", "node-b"


def pos(epoch: int, node: str, seq: int, *history: EpochId) -> BackupPosition:
    return BackupPosition(epoch, node, seq, tuple(history))


def test_a_prefix_gets_the_tail_when_the_recent_log_covers_it() -> None:
    hist = [EpochId(1, A, 1)]
    p = plan(pos(1, A, 40, EpochId(1, A, 1)), hist, 100, recent_from=10)
    assert (p.snapshot, p.tail_from, p.truncate_after) == (False, 40, None)


def test_a_prefix_older_than_the_recent_log_gets_a_snapshot() -> None:
    p = plan(pos(1, A, 5, EpochId(1, A, 1)), [EpochId(1, A, 1)], 100, recent_from=10)
    assert p.snapshot and p.truncate_after is None


def test_after_a_fail_over_the_old_epoch_is_still_a_prefix() -> None:
    hist = [EpochId(1, A, 1), EpochId(2, B, 61)]
    p = plan(pos(1, A, 60, EpochId(1, A, 1)), hist, 80, recent_from=0)
    assert (p.snapshot, p.tail_from) == (False, 60)


def test_a_backup_that_went_on_alone_in_the_old_epoch_truncates_to_the_common_prefix() -> None:
    # B was promoted into epoch 2 at seq 51; A kept writing epoch 1 up to seq 100
    hist = [EpochId(1, A, 1), EpochId(2, B, 51)]
    backup = pos(1, A, 100, EpochId(1, A, 1))
    assert common_prefix(backup, hist, 70) == 50
    p = plan(backup, hist, 70, recent_from=0)
    assert p.snapshot and p.truncate_after == 50


def test_two_promotions_into_the_same_number_differ_by_node() -> None:
    hist = [EpochId(1, A, 1), EpochId(2, B, 51)]
    backup = pos(2, A, 60, EpochId(1, A, 1), EpochId(2, A, 51))
    assert common_prefix(backup, hist, 90) == 50


def test_a_backup_ahead_in_the_same_epoch_gets_a_snapshot() -> None:
    p = plan(pos(1, A, 120, EpochId(1, A, 1)), [EpochId(1, A, 1)], 100, recent_from=0)
    assert p.snapshot


def test_an_empty_backup_of_a_new_cluster_gets_the_whole_tail() -> None:
    p = plan(pos(0, "", 0), [EpochId(1, A, 1)], 30, recent_from=0)
    assert (p.snapshot, p.tail_from) == (False, 0)
