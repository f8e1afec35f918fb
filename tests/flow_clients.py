"""Stock proton clients for the flow-control tests: a sender that sends only on the credit the
broker grants (what every proton sender does) and keeps its deliveries, and a receiver helper
that returns once the broker has its accepts."""

from __future__ import annotations

from typing import Any

from proton import Delivery, Message, Timeout
from proton.utils import BlockingConnection, BlockingReceiver

T = 10.0  # bound on any one wait
QUIET = 0.5  # no credit for this long: the producer is stalled


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

    def send_on_credit(self, total: int, quiet: float = QUIET) -> int:
        """Send until `total` are sent in all or no credit comes for `quiet` s; how many sent."""
        while self.sent < total:
            try:
                self.conn.wait(lambda: self.credit > 0, timeout=quiet)
            except Timeout:
                break
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
