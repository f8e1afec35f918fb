"""Single-record appends from one event loop, handed to the writer as one job per loop turn.

A broker appends a record per message from many tasks or callbacks on one loop. Handing each to
the writer thread on its own costs a cross-thread job, a waiter and a result each; gathering what
one loop turn produced into one non-atomic job keeps that cost per turn, not per record, and the
writer wakes the loop once per commit. Order is kept: records reach the writer in append order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .records import Prepared
from .writer import GroupCommitWriter, LoopWaiter, Result, _Append


class _Fanout:
    """The outcome of a gathered job, passed to each record's future or callback."""

    __slots__ = ("targets",)

    def __init__(self, targets: list[Any]) -> None:
        self.targets = targets

    def __call__(self, result: Result) -> None:
        outs = [result] * len(self.targets) if isinstance(result, BaseException) else result
        for target, out in zip(self.targets, outs, strict=True):
            if isinstance(target, asyncio.Future):
                if target.done():
                    continue
                if isinstance(out, BaseException):
                    target.set_exception(out)
                else:
                    target.set_result(out)
            else:
                target(out)


class LoopBatcher:
    """Per event loop: gathers appends made during one turn of the loop.

    A turn that appends many records hands them over in chunks, so that the writer's commit of
    the first chunk overlaps the loop's work on the next instead of waiting for the whole turn.
    """

    chunk = 256

    def __init__(self, writer: GroupCommitWriter, loop: asyncio.AbstractEventLoop) -> None:
        self.writer = writer
        self.loop = loop
        self._records: list[Prepared] = []
        self._targets: list[Any] = []
        self._lazy = True  # every record gathered so far was added lazy

    def add(self, record: Prepared, target: Any, lazy: bool = False) -> None:
        """`target`: an asyncio Future of the loop (gets the seq) or a callable(seq or error).
        `lazy`: nobody waits for it soon (see writer.py); a job is lazy if all its records are."""
        if not self._records:
            self.loop.call_soon(self.flush)
        if not lazy:
            self._lazy = False
        self._records.append(record)
        self._targets.append(target)
        if len(self._records) >= self.chunk:  # let the writer start while this turn goes on
            self.flush()
            self.loop.call_soon(self.flush)

    def add_job(self, records: list[Prepared], target: Any) -> None:
        """Records that make one job with one outcome (`target` gets their seqs, or the error),
        after whatever this turn gathered so far (order is kept)."""
        self.flush()
        self.writer.submit(_Append(records, LoopWaiter(self.loop, target)))

    def flush(self) -> None:
        if not self._records:
            return
        records, targets, lazy = self._records, self._targets, self._lazy
        self._records, self._targets, self._lazy = [], [], True
        job = _Append(records, LoopWaiter(self.loop, _Fanout(targets)), atomic=False, lazy=lazy)
        self.writer.submit(job)
