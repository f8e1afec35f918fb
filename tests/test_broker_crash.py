"""A broker killed with SIGKILL while senders run comes back with every message it had accepted.

`accepted` is the broker's promise: it settles a durable message's delivery only once the
enqueue is fsync'd in the journal. So whatever a sender saw accepted before the crash must be on
the queue after a restart on the same data directory. Messages in flight at the crash (sent, not
yet accepted) may or may not be there; nothing may be there twice unless sent twice (these
senders never resend, so a duplicate would be the broker's doing: a failure).

The senders are separate processes running this file in worker mode (stock proton Container +
MessagingHandler, a window of unsettled messages); each appends the id of every accepted
delivery to its own file, so what the test checks is exactly what the clients were told.
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys
import time
from pathlib import Path

from proton import Event, Message, Sender
from proton._reactor import Task  # the type Container.schedule returns
from proton.handlers import MessagingHandler
from proton.reactor import Container

QUEUE = "crash"
SENDERS = 3
WINDOW = 50
KILL_AFTER = 2000  # accepted messages (all senders) before the SIGKILL
KILL_DEADLINE = 15.0  # seconds to wait for them; the test fails if not even one was accepted
WORKER_MAX_SECONDS = 30.0  # a worker stops by itself after this long, whatever happens
EXIT_TIMEOUT = 10.0
END = "end-of-test"


class _Sender(MessagingHandler):
    """Keeps `window` durable messages unsettled; records each accepted id, one per line."""

    def __init__(self, url: str, queue: str, prefix: str, out: Path) -> None:
        super().__init__(prefetch=0)
        self.url = url
        self.queue = queue
        self.prefix = prefix
        self.out = out.open("a", buffering=1)
        self.sent = 0
        self.settled = 0
        self.accepted = 0
        self.rejected = 0
        self.timer: Task | None = None

    def on_start(self, event: Event) -> None:
        conn = event.container.connect(self.url, reconnect=False)
        event.container.create_sender(conn, self.queue)
        self.timer = event.container.schedule(WORKER_MAX_SECONDS, self)

    def on_sendable(self, event: Event) -> None:
        self._fill(event.sender)

    def _fill(self, sender: Sender) -> None:
        while sender.credit > 0 and self.sent - self.settled < WINDOW:
            mid = f"{self.prefix}-{self.sent}"
            dlv = sender.send(Message(id=mid, body=mid, durable=True, properties={"id": mid}))
            dlv.mid = mid
            self.sent += 1

    def on_accepted(self, event: Event) -> None:
        self.accepted += 1
        if not self.out.closed:
            self.out.write(f"{event.delivery.mid}\n")

    def on_rejected(self, event: Event) -> None:
        self.rejected += 1
        print(f"{self.prefix}: rejected {event.delivery.mid}", file=sys.stderr)

    def on_settled(self, event: Event) -> None:
        self.settled += 1
        self._fill(event.link)

    def on_timer_task(self, event: Event) -> None:
        self._stop(event, "time limit")

    def on_transport_error(self, event: Event) -> None:
        self._stop(event, "transport error")

    def on_disconnected(self, event: Event) -> None:
        self._stop(event, "disconnected")

    def _stop(self, event: Event, why: str) -> None:
        if self.out.closed:
            return  # a broken connection reports both a transport error and a disconnect
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.out.close()
        print(f"RESULT {self.prefix} {self.sent} {self.accepted} {self.rejected} {why}")
        event.container.stop()


def _worker(url: str, prefix: str, out: str) -> None:
    Container(_Sender(url, QUEUE, prefix, Path(out))).run()


def _count_lines(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        with contextlib.suppress(OSError):
            n += p.read_bytes().count(b"\n")
    return n


def _read_ids(path: Path) -> list[str]:
    # A worker killed mid-write could leave a partial last line: only whole lines count.
    text = path.read_text() if path.exists() else ""
    return text.split("\n")[:-1]


def _drain(url: str) -> list[str]:
    """Every message id on the queue, in order: a marker is sent last and read up to."""
    from proton.utils import BlockingConnection

    conn = BlockingConnection(url, timeout=10)
    try:
        conn.create_sender(QUEUE).send(Message(body=END, durable=True))
        receiver = conn.create_receiver(QUEUE, credit=500)
        got: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = receiver.receive(timeout=10)
            receiver.accept()
            if m.body == END:
                return got
            got.append(m.properties["id"])
        raise AssertionError(f"drain did not reach the end marker; {len(got)} messages read")
    finally:
        conn.close()


def test_sigkill_keeps_every_accepted_message(brokers, tmp_path: Path) -> None:
    b = brokers.start(args=["--auto-create", "yes"])
    outs = [tmp_path / f"accepted-{i}.txt" for i in range(SENDERS)]
    errs = [tmp_path / f"worker-{i}.err" for i in range(SENDERS)]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(SENDERS):
            with errs[i].open("wb") as err:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, __file__, b.url, f"s{i}", str(outs[i])],
                        stdout=err,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
        deadline = time.monotonic() + KILL_DEADLINE
        while _count_lines(outs) < KILL_AFTER and time.monotonic() < deadline:
            if any(w.poll() is not None for w in workers):
                break  # a worker died early: kill now and let the checks below say why
            time.sleep(0.02)
        b.kill()  # SIGKILL, mid-stream: every worker has up to WINDOW messages in flight
        for w in workers:
            try:
                w.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait(EXIT_TIMEOUT)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(EXIT_TIMEOUT)
    reports = "\n".join(e.read_text(errors="replace").strip() for e in errs)

    accepted = [mid for o in outs for mid in _read_ids(o)]
    assert accepted, f"no message was accepted before the kill:\n{reports}\n{b.log()}"
    results = [line.split() for line in reports.splitlines() if line.startswith("RESULT ")]
    assert len(results) == SENDERS, f"a worker did not finish cleanly:\n{reports}"
    in_flight = sum(int(r[2]) - int(r[3]) for r in results)
    assert in_flight > 0, "the kill came when nothing was in flight"
    assert all(r[4] == "0" for r in results), f"a sender saw rejections:\n{reports}"

    b2 = brokers.start(data_dir=b.data_dir, args=["--auto-create", "yes"])
    received = _drain(b2.url)

    counts = collections.Counter(received)
    missing = sorted(set(accepted) - counts.keys())
    duplicates = {mid: n for mid, n in counts.items() if n > 1}
    in_doubt = len(counts.keys() - set(accepted))  # journaled before the kill, not yet settled
    print(
        f"senders={SENDERS} window={WINDOW} accepted={len(accepted)} in-flight={in_flight} "
        f"received={len(received)} "
        f"missing={len(missing)} duplicates={len(duplicates)} "
        f"unacknowledged-but-kept={in_doubt}\n{reports}"
    )
    assert not missing, f"{len(missing)} accepted messages lost, e.g. {missing[:10]}\n{reports}"
    assert len(set(accepted)) == len(accepted), "a sender saw the same id accepted twice"
    assert not duplicates, f"the broker doubled {len(duplicates)} messages, e.g. {duplicates}"


if __name__ == "__main__":  # worker mode: URL PREFIX OUT-FILE
    _worker(*sys.argv[1:4])
