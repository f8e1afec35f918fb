"""Deliveries out: one pass over the model's ready queues per event-loop turn.

Anything that can make a delivery possible (a message in, credit granted, a message given back)
calls `schedule()`. The pass runs once per turn however many times it was asked: it takes the
model's deliveries, sends each on its consumer's link, and wakes the pumps it wrote to, so each
connection flushes once for the lot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker.model import Broker

if TYPE_CHECKING:
    from .links import OutgoingLink

log = logging.getLogger("qstore.amqp")


class Outbox:
    def __init__(self, model: Broker, clock: Callable[[], float]) -> None:
        self.model = model
        self.clock = clock
        self._scheduled = False
        self._drain: dict[OutgoingLink, None] = {}  # links whose receiver asked to drain

    def schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.run)

    def drain_requested(self, link: OutgoingLink) -> None:
        self._drain[link] = None
        self.schedule()

    def run(self) -> None:
        self._scheduled = False
        touched = {}
        for consumer, qm in self.model.dispatch(self.clock()):
            out: OutgoingLink = consumer.context
            try:
                out.send(qm)
            except Exception:  # a dead link: give the message back, keep the others going
                log.exception("sending message %s on %s failed", qm.id, out)
                self.model.release(consumer, qm.id)
                continue
            touched[out.pump] = None
        if self._drain:
            links, self._drain = list(self._drain), {}
            for out in links:
                if out.drain():
                    touched[out.pump] = None
        for pump in touched:
            pump.wake()  # its process() pauses the connection's consumers if it backed up
