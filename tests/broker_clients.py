"""Stock python-qpid-proton clients for the broker's functional tests.

Everything here is what any AMQP 1.0 user would write with proton: `BlockingConnection` for
sending, receiving and management requests (`SyncRequestResponse` over a dynamic reply queue), and
a `Container` run in a thread with a hard deadline for what needs the event API (link credit,
connections that die with unsettled messages). Every wait is bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from proton import Delivery, Message, Timeout
from proton.handlers import FlowController, MessagingHandler
from proton.reactor import Container, LinkOption
from proton.utils import BlockingConnection, BlockingReceiver, BlockingSender, SyncRequestResponse

TIMEOUT = 10.0  # bound on any single blocking call
QUIET = 0.3  # how long a test watches that something does not happen (never: "queue empty")
DRAIN_CREDIT = 1000  # credit per round of `drain`


@dataclass(frozen=True)
class Reply:
    """A management response: status code, description and body."""

    code: int
    description: str
    body: Any


@dataclass(frozen=True)
class Outcome:
    """A sent message's outcome: the delivery state and its error condition, if any."""

    state: Any
    condition: str | None = None
    description: str | None = None


class Mgmt:
    """AMQP Management requests to `$management` over one connection."""

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.conn = BlockingConnection(url, timeout=timeout)
        self.rr = SyncRequestResponse(self.conn, "$management")

    def call(
        self, operation: str, kind: str, name: str | None = None, body: Any = None, **props: Any
    ) -> Reply:
        properties: dict[str, Any] = {"operation": operation, "type": kind, **props}
        if name is not None:
            properties["name"] = name
        response = self.rr.call(Message(body=body, properties=properties))
        p = response.properties or {}
        return Reply(int(p["statusCode"]), str(p.get("statusDescription", "")), response.body)

    def create_queue(
        self,
        name: str,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> Reply:
        body = {"durable": durable, "auto-delete": auto_delete, "arguments": arguments or {}}
        reply = self.call("CREATE", "queue", name, body)
        assert reply.code == 201, reply
        return reply

    def create_exchange(self, name: str, kind: str, *, durable: bool = False) -> Reply:
        reply = self.call("CREATE", "exchange", name, {"type": kind, "durable": durable})
        assert reply.code == 201, reply
        return reply

    def bind(
        self, exchange: str, queue: str, key: str = "", arguments: dict[str, Any] | None = None
    ) -> Reply:
        body: dict[str, Any] = {"exchange": exchange, "queue": queue, "key": key}
        if arguments is not None:
            body["arguments"] = arguments
        reply = self.call("CREATE", "binding", None, body)
        assert reply.code in (200, 201), reply
        return reply

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Mgmt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send(url: str, address: str, messages: Iterable[Message | Any]) -> None:
    """Send each message (or body) at least once, waiting for each to be accepted."""
    conn = BlockingConnection(url, timeout=TIMEOUT)
    try:
        sender = conn.create_sender(address)
        for m in messages:
            sender.send(m if isinstance(m, Message) else Message(body=m))
    finally:
        conn.close()


def outcome(conn: BlockingConnection, sender: BlockingSender, message: Message) -> Outcome:
    """Send one message and return the broker's outcome with its error condition, read before
    the delivery is settled and freed (BlockingSender.send settles it and keeps no condition)."""
    dlv = sender.link.send(message)
    conn.wait(lambda: bool(dlv.settled or dlv.remote_state), timeout=TIMEOUT)
    cond = dlv.remote.condition
    result = Outcome(
        dlv.remote_state,
        cond.name if cond else None,
        cond.description if cond else None,
    )
    dlv.settle()
    return result


def take(receiver: BlockingReceiver, timeout: float = TIMEOUT) -> tuple[Message, Delivery]:
    """Receive one message and keep its delivery, to settle it with `settle` (the blocking
    receiver's own `settle` cannot send modified with delivery-failed)."""
    m = receiver.receive(timeout=timeout)
    unsettled = receiver.fetcher.unsettled
    assert unsettled, "the message arrived settled"
    return m, unsettled.pop()


def settle(dlv: Delivery, state: Any, *, failed: bool = False, undeliverable: bool = False) -> None:
    """Send an outcome for a received delivery; it goes out with the connection's next I/O."""
    if state == Delivery.MODIFIED:
        dlv.local.failed = failed
        dlv.local.undeliverable = undeliverable
    dlv.update(state)
    dlv.settle()


def drain(receiver: BlockingReceiver, timeout: float = TIMEOUT) -> list[Message]:
    """Every message the broker holds for `receiver` now, in order, accepted (a browser's come
    settled: nothing to accept).

    Asked the AMQP way, not by waiting for silence: credit granted with the drain flag makes the
    broker send what it has and use up the rest of the credit, and the flow that brings the link's
    credit to 0 is its word that there is no more. Rounds of `DRAIN_CREDIT` until one comes back
    short. The receiver must have no prefetch (made without `credit=`): proton's flow controller
    would grant credit again. Drain mode is off again afterwards, for later `receive()` calls."""
    fetcher = receiver.fetcher
    assert fetcher is not None and not any(
        isinstance(h, FlowController) for h in getattr(fetcher, "handlers", ())
    ), "drain() needs a receiver made without credit= (no prefetch)"
    link = receiver.link
    got: list[Message] = []
    try:
        while True:
            link.drain(DRAIN_CREDIT)
            receiver.connection.wait(
                lambda: link.credit == 0, timeout=timeout, msg=f"the broker to drain {link.name}"
            )
            came = 0
            while fetcher.incoming:
                message, dlv = fetcher.incoming.popleft()
                if not dlv.settled:
                    dlv.update(Delivery.ACCEPTED)
                    dlv.settle()
                got.append(message)
                came += 1
            if came < DRAIN_CREDIT:
                return got
    finally:
        link.drain_mode = False


def body(m: Message) -> Any:
    """A received message's body, owned: proton 0.40 hands a binary body out as a memoryview
    into the C message, which is garbage (or a crash) once the message is freed."""
    b = m.body
    return b.tobytes() if isinstance(b, memoryview) else b


def depth(url: str, queue: str) -> int:
    """The queue's depth as management reports it (no waiting: sends settle after routing)."""
    with Mgmt(url) as m:
        reply = m.call("READ", "queue", queue)
        assert reply.code == 200, reply
        return int(reply.body["depth"])


def receive_n(receiver: BlockingReceiver, n: int, timeout: float = TIMEOUT) -> list[Message]:
    """The next `n` messages, each accepted; each may take `timeout` seconds to come, else the
    test fails saying how many did."""
    out: list[Message] = []
    for _ in range(n):
        try:
            out.append(receiver.receive(timeout=timeout))
        except Timeout:
            raise AssertionError(f"{len(out)} of {n} messages came") from None
        receiver.accept()
    return out


def fetch(url: str, address: str, n: int | None = None) -> list[Any]:
    """The bodies on a queue, accepted: `n` of them, or as many as its depth says."""
    if n is None:
        n = depth(url, address)
    conn = BlockingConnection(url, timeout=TIMEOUT)
    try:
        return [body(m) for m in receive_n(conn.create_receiver(address), n)]
    finally:
        conn.close()


def run_container(handler: MessagingHandler, timeout: float = TIMEOUT) -> Container:
    """Run a Container with `handler` in a thread; fail if it is still running at `timeout`.

    The handler is expected to stop the container (close its connection) when done; a deadline
    timer on the container also stops it, so the thread never outlives the test.
    """
    container = Container(handler)
    container.container_id = "qstore-test"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            container.run()
        except BaseException as exc:
            errors.append(exc)

    class _Deadline:
        def on_timer_task(self, event: Any) -> None:
            event.container.stop()

    container.schedule(timeout, _Deadline())
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout + 2.0)
    assert not t.is_alive(), "container did not stop in time"
    if errors:
        raise errors[0]
    return container


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll `condition` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


class CreateOnDemand(LinkOption):
    """The `create-on-demand` terminus capability (no stock option sets capabilities)."""

    def apply(self, link: Any) -> None:
        terminus = link.source if link.is_receiver else link.target
        terminus.capabilities.put_symbol("create-on-demand")


class Step:
    """A timer callback for `container.schedule(delay, Step(fn))`."""

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.fn = fn

    def on_timer_task(self, event: Any) -> None:
        self.fn(event)
