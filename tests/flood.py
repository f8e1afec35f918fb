"""A stock proton producer that sends durable messages as fast as the broker's credit allows and
records each one's outcome with its error condition, and the management reads the journal tests
need. Every wait is bounded (broker_clients.run_container)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from broker_clients import TIMEOUT, Mgmt, run_container, wait_for
from journal_helpers import REPO, python_env
from proton import Message
from proton.handlers import MessagingHandler


@dataclass
class Outcomes:
    accepted: list[int] = field(default_factory=list)
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # body, condition, text


class Flood(MessagingHandler):
    """Send `bodies` (ints) durably to `address`, `pad` bytes each; stop sending once `stop_after`
    were refused, and close when every sent message has its outcome."""

    def __init__(
        self, url: str, address: str, bodies: range, pad: int, stop_after: int = 20
    ) -> None:
        super().__init__(auto_accept=False)
        self.url = url
        self.address = address
        self.bodies = iter(bodies)
        self.pad = "x" * pad
        self.stop_after = stop_after
        self.out = Outcomes()
        self.sent: dict[Any, int] = {}  # delivery tag -> body
        self.unsettled = 0
        self.done_sending = False
        self.conn: Any = None

    def on_start(self, event: Any) -> None:
        self.conn = event.container.connect(self.url)
        event.container.create_sender(self.conn, self.address)

    def on_sendable(self, event: Any) -> None:
        sender = event.sender
        while sender.credit and not self.done_sending:
            if len(self.out.refused) >= self.stop_after:
                self.done_sending = True
                break
            n = next(self.bodies, None)
            if n is None:
                self.done_sending = True
                break
            dlv = sender.send(Message(body=n, durable=True, properties={"pad": self.pad}))
            self.sent[dlv.tag] = n
            self.unsettled += 1
        self._maybe_close()

    def on_accepted(self, event: Any) -> None:
        self.out.accepted.append(self.sent.pop(event.delivery.tag))
        self._settled()

    def on_rejected(self, event: Any) -> None:
        cond = event.delivery.remote.condition
        name, text = (cond.name, cond.description) if cond else ("", "")
        self.out.refused.append((self.sent.pop(event.delivery.tag), name, text))
        self._settled()

    def _settled(self) -> None:
        self.unsettled -= 1
        self._maybe_close()

    def _maybe_close(self) -> None:
        done = self.done_sending or len(self.out.refused) >= self.stop_after
        if self.unsettled == 0 and done and self.conn.state & self.conn.LOCAL_ACTIVE:
            self.conn.close()

    def on_connection_closed(self, event: Any) -> None:
        event.container.stop()  # the deadline timer would keep it running


def flood(
    url: str, address: str, bodies: range, pad: int, stop_after: int = 20, timeout: float = 60.0
) -> Outcomes:
    handler = Flood(url, address, bodies, pad, stop_after)
    run_container(handler, timeout)
    return handler.out


def journal_status(url: str) -> dict[str, Any]:
    """The journal part of management's broker READ."""
    with Mgmt(url) as m:
        reply = m.call("READ", "broker")
        assert reply.code == 200, reply
        return dict(reply.body["journal"])


def wait_journal(url: str, state: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def reached() -> bool:
        seen.append(journal_status(url))
        return seen[-1]["state"] == state

    try:
        wait_for(reached, timeout)
    except AssertionError:
        raise AssertionError(f"journal not {state} in {timeout}s: {seen[-1]}") from None
    return seen[-1]


def qstore_stat(url: str, *args: str) -> str:
    """`qstore-stat -b URL ARGS` as a user runs it; its output."""
    p = subprocess.run(
        [sys.executable, "-m", "tools.qstore_stat", "--broker", url, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 10,
        cwd=REPO,
        env=python_env(),
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def stat_journal(url: str) -> dict[str, Any]:
    [row] = json.loads(qstore_stat(url, "-b", "--json"))
    return dict(row["journal"])
