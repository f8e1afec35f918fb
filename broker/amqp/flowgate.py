"""Publishing links held back by flow control, and credit for them once they may go again.

The model says when a queue is flow-stopped or resumes, and when the memory alarm is raised or
cleared (`broker.model.flow`, through `on_flow`, the model's one flow listener). An
`IncomingLink` decides for itself, when its credit runs low, whether to refill it; if not, it is
`hold`-ed here. Any resume or alarm cleared makes one pass (a loop callback, never inside the
model call that caused it) in which each held link looks again at what held it and, if free, is
credited and its connection woken, so a producer goes again at once.

Each stop, resume, alarm raised and cleared is logged here, one line each.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from broker.model import Broker, Queue

if TYPE_CHECKING:
    from collections.abc import Callable

    from .links import IncomingLink

log = logging.getLogger("qstore.amqp")


class FlowGate:
    def __init__(self, model: Broker, name: Callable[[], str]) -> None:
        self.model = model
        self._name = name
        self.held: dict[IncomingLink, None] = {}
        self._scheduled = False

    def hold(self, link: IncomingLink) -> None:
        self.held[link] = None

    def forget(self, link: IncomingLink) -> None:
        self.held.pop(link, None)

    def on_flow(self, queue: Queue | None, stopped: bool) -> None:
        """The model's flow listener (see the module doc). Must not call back into the model."""
        name = self._name()
        if queue is not None:
            if stopped:
                log.info(
                    "broker=%s queue %r flow-stopped at %d messages, %d bytes (%s): links "
                    "publishing to it get no more credit until it drains",
                    name, queue.name, queue.depth, queue.bytes, queue.flow_limits_text(),
                )  # fmt: skip
            else:
                log.info(
                    "broker=%s queue %r flow resumed at %d messages, %d bytes%s",
                    name, queue.name, queue.depth, queue.bytes,
                    " (deleted)" if queue.deleted else ": its publishers get credit again",
                )  # fmt: skip
        else:
            usage = self.model.usage
            if stopped:
                log.warning(
                    "broker=%s memory alarm raised: queued messages take about %d bytes, above "
                    "--max-memory %d; no publishing link gets credit until they hold less than %d",
                    name, usage.bytes, usage.limit, usage.resume_at,
                )  # fmt: skip
            else:
                log.warning(
                    "broker=%s memory alarm cleared: queued messages take about %d bytes; "
                    "publishers get credit again",
                    name, usage.bytes,
                )  # fmt: skip
        if not stopped and self.held:
            self._schedule()

    def _schedule(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self.retry)
        except RuntimeError:  # no loop (a synchronous caller): now
            self.retry()

    def retry(self) -> None:
        """Every held link looks again; those now free are credited and dropped from here."""
        self._scheduled = False
        for link in list(self.held):
            if link.retry_credit():
                self.held.pop(link, None)
