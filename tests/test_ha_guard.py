"""QueueGuard (broker/ha/guard.py): the ack guard's bookkeeping.

A held message is released when every backup expected at hold time has acknowledged its seq, when
a consumer on the primary acknowledged it, or when the backups it waits for are dropped. Releases
are plain callables; the tests record which ran, in what order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from broker.ha.guard import QueueGuard, Release


class Settled:
    """Records the message keys whose release ran, in order."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, int]] = []

    def release(self, key: tuple[str, int]) -> Callable[[object], None]:
        def settle(_: object = None) -> None:
            self.keys.append(key)

        return settle


def run(releases: Iterable[Release]) -> None:
    for release in releases:
        release(None)


def hold(guard: QueueGuard, settled: Settled, seq: int, queue: str = "q") -> bool:
    key = (queue, seq * 10)  # message ids distinct from seqs, to catch mix-ups
    return guard.hold(seq, key, settled.release(key))


def test_no_expected_backup_means_no_hold() -> None:
    guard, settled = QueueGuard(), Settled()
    assert hold(guard, settled, 1) is False
    assert len(guard) == 0
    assert guard.release_all() == []
    assert settled.keys == []


def test_one_backup_releases_in_seq_order_as_it_acks() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    for seq in (1, 2, 3, 4):
        assert hold(guard, settled, seq) is True
    assert len(guard) == 4

    run(guard.acknowledged("b1", 2))
    assert settled.keys == [("q", 10), ("q", 20)]
    assert len(guard) == 2

    run(guard.acknowledged("b1", 1))  # an older position changes nothing
    assert settled.keys == [("q", 10), ("q", 20)]
    assert guard.acked["b1"] == 2

    run(guard.acknowledged("b1", 4))
    assert settled.keys == [("q", 10), ("q", 20), ("q", 30), ("q", 40)]
    assert len(guard) == 0


def test_ack_between_seqs_releases_only_up_to_it() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    for seq in (5, 9):
        hold(guard, settled, seq)
    run(guard.acknowledged("b1", 7))
    assert settled.keys == [("q", 50)]
    run(guard.acknowledged("b1", 9))
    assert settled.keys == [("q", 50), ("q", 90)]


def test_hold_waits_for_both_backups() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    guard.expect("b2")
    hold(guard, settled, 1)
    hold(guard, settled, 2)

    run(guard.acknowledged("b1", 2))
    assert settled.keys == []  # b2 has nothing yet

    run(guard.acknowledged("b2", 1))
    assert settled.keys == [("q", 10)]

    run(guard.acknowledged("b2", 2))
    assert settled.keys == [("q", 10), ("q", 20)]
    assert len(guard) == 0


def test_expect_with_a_position_counts_as_acked() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1", acked=3)
    hold(guard, settled, 4)
    run(guard.acknowledged("b1", 3))
    assert settled.keys == []
    run(guard.acknowledged("b1", 4))
    assert settled.keys == [("q", 40)]


def test_backup_expected_later_does_not_hold_earlier_messages() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    hold(guard, settled, 1)
    guard.expect("b2")
    hold(guard, settled, 2)

    run(guard.acknowledged("b1", 2))
    assert settled.keys == [("q", 10)]  # seq 1 never waited for b2
    run(guard.acknowledged("b2", 2))
    assert settled.keys == [("q", 10), ("q", 20)]


def test_drop_of_the_slow_backup_releases_holds() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    guard.expect("b2")
    for seq in (1, 2, 3):
        hold(guard, settled, seq)
    run(guard.acknowledged("b1", 2))
    assert settled.keys == []

    run(guard.drop(["b2"]))
    assert settled.keys == [("q", 10), ("q", 20)]  # seq 3 still waits for b1
    assert guard.expected == {"b1"}
    assert "b2" not in guard.acked

    run(guard.acknowledged("b1", 3))
    assert settled.keys == [("q", 10), ("q", 20), ("q", 30)]


def test_drop_of_the_last_backup_releases_everything() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    hold(guard, settled, 1)
    hold(guard, settled, 2)
    run(guard.drop(["b1"]))
    assert settled.keys == [("q", 10), ("q", 20)]
    assert len(guard) == 0
    assert hold(guard, settled, 3) is False  # nobody expected any more


def test_drop_of_unknown_backup_is_harmless() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    hold(guard, settled, 1)
    assert guard.drop(["nobody"]) == []
    assert guard.drop([]) == []
    assert len(guard) == 1


def test_dropped_backup_expected_again_holds_only_new_messages() -> None:
    """A dropped backup stops holding anything: when it comes back, old holds ignore it."""
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    guard.expect("b2")
    hold(guard, settled, 1)
    run(guard.drop(["b2"]))
    assert settled.keys == []  # still waits for b1
    guard.expect("b2")
    hold(guard, settled, 2)

    run(guard.acknowledged("b1", 2))
    assert settled.keys == [("q", 10)]  # seq 1 no longer waits for b2; seq 2 does
    run(guard.acknowledged("b2", 2))
    assert settled.keys == [("q", 10), ("q", 20)]


def test_drop_accepts_any_iterable() -> None:
    """The role hands over a tuple, a set or a generator; all must drop the same way."""
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    guard.expect("b2")
    hold(guard, settled, 1)
    run(guard.drop(n for n in ["b2"]))
    guard.expect("b2")  # back again: must not hold seq 1
    run(guard.acknowledged("b1", 1))
    assert settled.keys == [("q", 10)]


def test_consumed_releases_one_hold_out_of_order() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    for seq in (1, 2, 3):
        hold(guard, settled, seq)

    run(guard.consumed(("q", 20)))  # the middle one was consumed and acked on the primary
    assert settled.keys == [("q", 20)]
    assert len(guard) == 2

    assert guard.consumed(("q", 20)) == []  # once only
    assert guard.consumed(("other", 20)) == []

    run(guard.acknowledged("b1", 3))
    assert settled.keys == [("q", 20), ("q", 10), ("q", 30)]  # never released twice
    assert len(guard) == 0


def test_consumed_after_release_is_a_no_op() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    hold(guard, settled, 1)
    run(guard.acknowledged("b1", 1))
    assert guard.consumed(("q", 10)) == []
    assert settled.keys == [("q", 10)]


def test_same_message_id_in_two_queues_are_distinct_holds() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    guard.hold(1, ("a", 7), settled.release(("a", 7)))
    guard.hold(2, ("b", 7), settled.release(("b", 7)))
    run(guard.consumed(("b", 7)))
    assert settled.keys == [("b", 7)]
    run(guard.acknowledged("b1", 1))
    assert settled.keys == [("b", 7), ("a", 7)]


def test_release_all_returns_every_hold_in_seq_order_and_empties() -> None:
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    for seq in (1, 2, 3):
        hold(guard, settled, seq)
    run(guard.release_all())
    assert settled.keys == [("q", 10), ("q", 20), ("q", 30)]
    assert len(guard) == 0
    assert guard.consumed(("q", 10)) == []
    assert guard.acknowledged("b1", 3) == []


def test_releases_are_returned_not_run() -> None:
    """The caller runs releases (outside any lock), so the guard itself never calls them."""
    guard, settled = QueueGuard(), Settled()
    guard.expect("b1")
    hold(guard, settled, 1)
    due = guard.acknowledged("b1", 1)
    assert len(due) == 1
    assert settled.keys == []
    run(due)
    assert settled.keys == [("q", 10)]
