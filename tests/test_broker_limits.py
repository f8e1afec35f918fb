"""Resource limits of a real qstored (#11): connections."""

from __future__ import annotations

import contextlib
import socket
import time

from broker_harness import Brokers
from proton import Message
from proton.utils import BlockingConnection
from security_support import wait_for_log

T = 10.0


def test_max_connections_refuses_the_next_socket_and_recovers(brokers: Brokers) -> None:
    b = brokers.start(args=["--auto-create", "yes", "--max-connections", "3"])
    held = [socket.create_connection(("127.0.0.1", b.port), timeout=T) for _ in range(3)]
    try:
        time.sleep(0.2)  # the broker has taken all three
        extra = socket.create_connection(("127.0.0.1", b.port), timeout=T)
        with contextlib.closing(extra):
            extra.settimeout(T)
            assert extra.recv(1) == b""  # closed at once, nothing said
        with contextlib.closing(socket.create_connection(("127.0.0.1", b.port), timeout=T)) as s:
            s.settimeout(T)
            assert s.recv(1) == b""
        line = wait_for_log(b, "refusing connections: 3 open")
        assert "--max-connections" in line
        assert b.log().count("refusing connections") == 1  # once per spell, not per socket
    finally:
        for s in held:
            s.close()
    # the idle sockets gone, a real client is served again
    deadline = time.monotonic() + T
    while True:
        try:
            conn = BlockingConnection(b.url, timeout=T)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        conn.create_sender("q").send(Message(body="after", durable=True))
        assert conn.create_receiver("q").receive(timeout=T).body == "after"
    finally:
        conn.close()
    line = wait_for_log(b, "accepting connections again")
    assert "(2 refused meanwhile)" in line
