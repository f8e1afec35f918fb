"""A broker's epoch history: which epochs its stream holds (number, node, first seq), oldest first.

One owner: the event log (`EventLog.history`). It loads the history from the journal at start-up
and is the only one that changes it, journaling each change in order with the events, so that
what a restarted broker reads back is what it had: an epoch record at a promotion (its own, or
its primary's applied), a history record at each end of a snapshot (empty at the start, the
primary's at the end), a truncate of a diverged tail. The HA member, the primary's catch-up plan
and the status only read it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qstore.journal import JournalState

log = logging.getLogger("qstore.ha")


@dataclass(frozen=True)
class EpochId:
    number: int
    node: str  # the node id (uuid text) of the broker promoted into it; "" for epoch 0
    origin: int  # the seq at which it starts


class EpochHistory:
    def __init__(self, epochs: Iterable[EpochId] = ()) -> None:
        self.epochs: list[EpochId] = list(epochs)

    @classmethod
    def from_journal(cls, state: JournalState) -> EpochHistory:
        return cls(EpochId(e.number, str(e.node), e.origin) for e in state.epochs)

    def node(self, number: int) -> str:
        """The node promoted into epoch `number` ("" if this history has no such epoch)."""
        return next((e.node for e in reversed(self.epochs) if e.number == number), "")

    @property
    def numbers(self) -> list[int]:
        return [e.number for e in self.epochs]

    def add(self, number: int, node: str, origin: int) -> None:
        self.epochs.append(EpochId(number, node, origin))

    def replace(self, epochs: Iterable[EpochId]) -> None:
        self.epochs = list(epochs)

    def truncate(self, after: int) -> None:
        """The stream after seq `after` is dropped: so are the epochs that start there."""
        self.epochs = [e for e in self.epochs if e.origin <= after]

    def wire(self) -> list[list[Any]]:
        """As a backup states it when it connects, and a snapshot carries it."""
        return [[e.number, e.node, e.origin] for e in self.epochs]

    def records(self) -> list[tuple[int, uuid.UUID, int]]:
        """As a history record holds it (epochs without a node id cannot be journaled)."""
        return [(e.number, uuid.UUID(e.node), e.origin) for e in self.epochs if e.node]


def from_wire(data: Any) -> list[EpochId] | None:
    """A history as `wire()` gives it, from a peer; None (and a warning) if it is not one."""
    if not isinstance(data, list):
        return None
    out: list[EpochId] = []
    try:
        for e in data:
            number, node, origin = e
            uuid.UUID(str(node))  # a history record stores node ids as uuids
            out.append(EpochId(int(number), str(node), int(origin)))
    except (TypeError, ValueError) as exc:
        log.warning("ignoring an epoch history that does not parse (%s): %r", exc, data)
        return None
    return out
