"""A stock proton consumer for tests/test_broker_credit.py, run as its own process with
PN_TRACE_FRM=1 so its stderr is the frame capture. One credit pattern per run; prints a JSON line
{"got": [...], "credit": n, "drained": n} on stdout.

    python credit_client.py URL QUEUE PATTERN N
"""

from __future__ import annotations

import json
import sys

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container

DEADLINE = 8.0  # every run ends by then, whatever the broker does


class Client(MessagingHandler):
    def __init__(self, url: str, queue: str, pattern: str, n: int) -> None:
        window = pattern[len("window") :].split("_")[0]  # window1_late: window 1, sent later
        prefetch = int(window) if pattern.startswith("window") else 0
        super().__init__(prefetch=prefetch, auto_accept=True)
        self.url, self.queue, self.pattern, self.n = url, queue, pattern, n
        self.got: list[object] = []
        self.drained = 0
        self.phase: int | None = None  # messages that came while the credit was 0

    def on_start(self, event):
        self.container = event.container
        self.conn = event.container.connect(self.url)
        self.receiver = event.container.create_receiver(self.conn, self.queue)
        event.container.schedule(DEADLINE, self)
        p = self.pattern
        if p in ("one_same_batch", "one_later", "after_messages", "withdrawn"):
            self.receiver.flow(1 if p.startswith("one") else self.n)
        if p == "withdrawn":
            self.receiver.flow(-self.n)  # takes back what it granted: link-credit 0
            self.send(self.n)
            self.container.schedule(1.0, _Call(self.regrant))
        if p == "before_messages":
            self.receiver.flow(self.n)
        if p in ("before_messages", "window1_late"):  # sent on this connection's session
            self.container.schedule(0.5, _Call(lambda: self.send(self.n)))
        if p == "drain":
            self.receiver.drain(self.n + 5)
        if p == "window1_many":  # two more links: one on this session, one on a second session
            event.container.create_receiver(self.conn, self.queue + "-b")
            ssn = self.conn.session()
            ssn.open()
            rcv = ssn.receiver(f"{self.queue}-c")
            rcv.source.address = self.queue + "-c"
            rcv.open()

    def send(self, n: int) -> None:
        sender = self.container.create_sender(self.conn, self.queue)
        self.to_send = n
        self.sender = sender

    def on_sendable(self, event):
        while event.sender.credit and self.to_send:
            self.to_send -= 1
            event.sender.send(Message(body=f"late-{self.to_send}", durable=True))

    def regrant(self) -> None:
        self.phase = len(self.got)  # what came while the credit was 0
        self.receiver.flow(1)

    def on_message(self, event):
        self.got.append(event.message.body)
        if self.pattern == "one_same_batch":
            self.accept(event.delivery)
            self.receiver.flow(1)  # with the accept: one frame batch
        elif self.pattern == "one_later":
            self.accept(event.delivery)
            self.container.schedule(0.05, _Call(lambda: self.receiver.flow(1)))
        self.check_done()

    def on_link_flow(self, event):
        if self.pattern == "drain" and event.link.is_receiver:
            self.drained += event.link.drained()
            if event.link.credit == 0:
                self.finish()

    def check_done(self) -> None:
        want = {"withdrawn": 1, "window1_many": 3 * self.n}.get(self.pattern, self.n)
        if len(self.got) >= want and self.pattern not in ("drain", "withdrawn"):
            self.finish()
        if self.pattern == "withdrawn" and self.phase is not None and len(self.got) > self.phase:
            self.finish()

    def on_timer_task(self, event):
        self.finish()

    def finish(self) -> None:
        if self.conn is not None:
            self.credit = self.receiver.credit
            self.conn.close()
            self.conn = None
            self.container.stop()


class _Call:
    def __init__(self, fn) -> None:
        self.fn = fn

    def on_timer_task(self, event) -> None:
        self.fn()


if __name__ == "__main__":
    url, queue, pattern, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = Client(url, queue, pattern, n)
    c.credit = -1
    Container(c).run()
    print(json.dumps({"got": c.got, "credit": c.credit, "drained": c.drained, "phase": c.phase}))
