"""Stock proton clients for the flow-control tests: a sender that sends only on the credit the
broker grants (what every proton sender does) and keeps its deliveries, and a receiver helper
that returns once the broker has its accepts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from proton import Delivery, Message, Timeout
from proton.utils import BlockingConnection, BlockingReceiver

T = 10.0  # bound on any one wait
QUIET = 0.5  # how long a test watches that a held producer gets no credit


class Producer:
    """A stock BlockingConnection sender that sends only while it holds credit and keeps every
    delivery, to check the outcomes at the end. `target` None: the anonymous relay (then give
    each message's `address`, its `to`, in `kw`)."""

    def __init__(
        self, url: str, target: str | None, *, durable: bool = True, pad: int = 0, **kw: Any
    ) -> None:
        self.conn = BlockingConnection(url, timeout=T)
        self.sender = self.conn.create_sender(target)
        self.durable, self.pad, self.kw = durable, pad, kw
        self.deliveries: list[Delivery] = []

    @property
    def sent(self) -> int:
        return len(self.deliveries)

    @property
    def credit(self) -> int:
        return self.sender.link.credit

    def send_on_credit(self, total: int, held: Callable[[], bool] | None = None) -> int:
        """Send on the credit the broker grants until `total` are sent in all, or until the
        producer is held: its credit used up, every message it sent has its outcome (so no credit
        is on its way) and `held()`, the broker's own report (a queue's flowStopped, the memory
        alarm), says so. Not a silence: without credit for T seconds and not held, the test
        fails. How many were sent in all."""
        while self.sent < total:
            deadline = time.monotonic() + T
            while self.credit == 0:
                try:
                    self.conn.wait(lambda: self.credit > 0, timeout=0.1)
                except Timeout:
                    settled = all(d.remote_state or d.settled for d in self.deliveries)
                    if settled and held is not None and held():
                        return self.sent
                    assert time.monotonic() < deadline, (
                        f"no credit for {T:g} s after {self.sent} sent, and not held"
                    )
            body = f"m{self.sent}".ljust(self.pad, ".")
            msg = Message(body=body, durable=self.durable, **self.kw)
            self.deliveries.append(self.sender.link.send(msg))
        return self.sent

    def credited_within(self, timeout: float) -> bool:
        try:
            self.conn.wait(lambda: self.credit > 0, timeout=timeout)
        except Timeout:
            return False
        return True

    def states(self) -> set[Any]:
        """Every outcome (waiting for the last): {ACCEPTED} when nothing was refused."""
        self.conn.wait(lambda: all(d.remote_state for d in self.deliveries), timeout=T)
        return {d.remote_state for d in self.deliveries}

    def close(self) -> None:
        self.conn.close()


def take(receiver: BlockingReceiver, n: int) -> list[str]:
    """Receive and accept `n` messages; return once the broker has every accept."""
    out = []
    for _ in range(n):
        out.append(receiver.receive(timeout=T).body.rstrip("."))
        receiver.accept()
    receiver.connection.create_sender(None).close()  # a round trip: the accepts went before
    return out
