"""A consumer that stops reading is not fed without bound, and does not stall anyone else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from proton import Message
from proton.utils import BlockingConnection

from tools._mgmt import ManagementClient, parse_broker

CONSUMER = textwrap.dedent(
    """
    import sys
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    class Greedy(MessagingHandler):
        def __init__(self):
            super().__init__(prefetch=100000, auto_accept=False)
        def on_start(self, event):
            event.container.create_receiver(event.container.connect(sys.argv[1]), "slow")
        def on_link_opened(self, event):
            print("attached", flush=True)
        def on_message(self, event):
            pass  # never settles: everything it gets stays acquired

    Container(Greedy()).run()
    """
)


def test_a_stopped_consumer_is_not_fed_without_bound(broker_proc) -> None:
    url = broker_proc.url
    child = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "attached"
        os.kill(child.pid, signal.SIGSTOP)  # it stops reading its socket
        conn = BlockingConnection(url, timeout=20)
        snd = conn.create_sender("slow")
        body = b"x" * 16384
        total = 2000  # 32 MiB: far more than socket buffers and the pump's high-water mark
        for _ in range(total):
            snd.send(Message(body=body), timeout=20)  # non-durable: settled at once
        # another client is served promptly meanwhile
        t0 = time.monotonic()
        conn.create_sender("fast").send(Message(body="ping"))
        got = conn.create_receiver("fast").receive(timeout=5)
        assert got.body == "ping" and time.monotonic() - t0 < 5
        conn.close()
        m = ManagementClient(parse_broker(url), timeout=10)
        try:
            q = m.call("READ", "queue", "slow")
        finally:
            m.close()
        assert q["depth"] == total
        assert q["acquired"] < total // 2, f"{q['acquired']} of {total} pushed to a stopped peer"
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.wait(10)
