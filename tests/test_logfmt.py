"""Names that reach the logs cannot forge a line: broker/logfmt.py, alone and in a real broker."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any

import pytest
from proton.utils import BlockingConnection

from broker.logfmt import EscapingFormatter, escape_controls

T = 10.0
FORGED = "a\nINFO forged"


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain name", "plain name"),
        ("a\nINFO forged", "a\\nINFO forged"),
        ("cr\rlf\r\n", "cr\\rlf\\r\\n"),
        ("tab\there", "tab\\there"),
        ("\x00\x1b[2J\x7f", "\\x00\\x1b[2J\\x7f"),
        ("c1\x85\x9b", "c1\\x85\\x9b"),
        ("sep\u2028par\u2029", "sep\\u2028par\\u2029"),
        ("ünïcode ✓ stays", "ünïcode ✓ stays"),
    ],
)
def test_escape_controls(text: str, escaped: str) -> None:
    assert escape_controls(text) == escaped
    assert len(escape_controls(text).splitlines()) <= 1


def test_formatter_escapes_the_message_not_the_traceback() -> None:
    fmt = EscapingFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord(
        "qstore.x", logging.INFO, __file__, 1, "queue %s made", (FORGED,), None
    )
    assert fmt.format(record) == "INFO qstore.x: queue a\\nINFO forged made"
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "qstore.x", logging.ERROR, __file__, 1, "link %s", (FORGED,), exc_info
    )
    lines = fmt.format(record).splitlines()
    assert lines[0] == "ERROR qstore.x: link a\\nINFO forged"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"


def test_broker_log_has_no_forged_line(brokers: Any) -> None:
    """A stock proton client whose container id, link name and queue name hold a newline: no
    line of the broker's log starts with the forgery (the container id is logged at INFO)."""
    b = brokers.start()  # no auto-create: the attaches are refused, and logged
    conn = BlockingConnection(f"amqp://{b.url}", timeout=T, container_id=FORGED)
    try:
        for attach in (conn.create_receiver, conn.create_sender):
            with contextlib.suppress(Exception):  # refused: no such queue
                attach(FORGED, name=FORGED)
    finally:
        conn.close()
    deadline = time.monotonic() + T
    while "a\\nINFO forged" not in b.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    b.terminate()
    log = b.log_path.read_text()
    assert "a\\nINFO forged" in log  # the names did reach the log, escaped
    assert not [line for line in log.splitlines() if line.startswith("INFO forged")], log
