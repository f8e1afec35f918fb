"""`qstore-journal` shows each journaled message as the application sent it (decoded with proton):
`dump`, `messages` and `export`, as text and as JSON fields; a body that is no AMQP message is
shown as such, on its record's line, never as a traceback."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from inspect_support import encoded, run, write_journal
from proton import symbol, ulong

from qstore.journal import Delivery, Enqueue

CREATED = 1767225600.25  # 2026-01-01T00:00:00.250Z, in proton's seconds
BAD = "byte 0: a message section was expected, not a 0x6e)"
LONG = "".join(f"word{i} " for i in range(100))
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    d = tmp_path / "node"
    write_journal(
        d,
        [
            [
                Enqueue(
                    "orders",
                    1,
                    encoded(
                        id="order-1",
                        correlation_id=ulong(42),
                        subject="order.created",
                        address="orders",
                        reply_to="replies",
                        durable=True,
                        ttl=30,
                        creation_time=CREATED,
                        properties={"customer": "acme", "lines": 3, "kind": symbol("rush")},
                        body="one widget",
                    ),
                ),
                Enqueue("orders", 2, encoded(id=ID, body=b"\x00\x01\xfe\xff" * 20)),
                Enqueue("orders", 3, encoded(id=7, body=LONG, priority=9), priority=9),
                Enqueue("orders", 4, b"not an AMQP message"),
                Enqueue("orders", 5, encoded(body={"sku": "w-1", "qty": [1, 2]})),
            ],
            [Delivery("orders", 1, 2)],
        ],
        queues=["orders"],
    )
    return d


def lines_of(d: Path, *args: str) -> list[str]:
    cp = run("dump", d, "--type", "enqueue", *args)
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr
    return cp.stdout.splitlines()


def test_dump_shows_the_message_fields(journal: Path) -> None:
    first, binary, long, bad, value = lines_of(journal)
    assert first.endswith(
        " size=" + first.split(" size=")[1].split()[0] + " message-id=order-1 correlation-id=42"
        " subject=order.created to=orders reply-to=replies durable=true ttl=30000ms"
        " creation-time=2026-01-01T00:00:00.250Z"
        ' properties={"customer":"acme","kind":"rush","lines":3} body="one widget"'
    )
    assert f" message-id={ID} " in binary
    assert binary.endswith(" body=hex:" + "0001feff" * 8 + "...")  # 32 bytes, then "..."
    assert " priority=9 " in long and "amqp-priority" not in long  # the same priority: once
    assert long.endswith(' body="' + LONG[:64] + '"...')
    assert bad.startswith("seq=6 ") and bad.endswith(
        ' size=19 message="undecodable: byte 0: a message section was expected, not a 0x6e"'
    )
    assert value.endswith(' body={"qty":[1,2],"sku":"w-1"}')


def test_body_option_shows_the_whole_body(journal: Path) -> None:
    _, binary, long, _, _ = lines_of(journal, "--body")
    assert binary.endswith(" body=hex:" + "0001feff" * 20)
    assert long.endswith(' body="' + LONG + '"')


def test_json_gives_the_fields(journal: Path) -> None:
    cp = run("dump", "--json", journal, "--type", "enqueue")
    assert cp.returncode == 0
    first, binary, long, bad, _ = (json.loads(x) for x in cp.stdout.splitlines())
    assert first["message"] == {
        "message_id": "order-1",
        "correlation_id": 42,
        "subject": "order.created",
        "to": "orders",
        "reply_to": "replies",
        "content_type": None,
        "durable": True,
        "priority": 4,
        "ttl": 30000,
        "expiry_time": None,
        "creation_time": 1767225600250,
        "properties": {"customer": "acme", "lines": 3, "kind": "rush"},
        "body_type": "text",
        "body_size": 10,
        "body": "one widget",
        "body_truncated": False,
    }
    assert "body" in first["record"]  # the stored bytes stay (base64): what import reads
    assert binary["message"]["message_id"] == str(ID)
    assert (binary["message"]["body_type"], binary["message"]["body_size"]) == ("binary", 80)
    assert binary["message"]["body"] == "0001feff" * 8 and binary["message"]["body_truncated"]
    assert long["message"]["message_id"] == 7 and long["message"]["priority"] == 9
    assert "message" not in bad
    assert bad["message_error"] == "byte 0: a message section was expected, not a 0x6e"
    whole = [json.loads(x) for x in run("export", journal, "--body").stdout.splitlines()[1:]]
    assert [w["message"]["body"] for w in whole if w["seq"] == long["seq"]] == [LONG]


def test_messages_lists_what_the_application_knows(journal: Path) -> None:
    cp = run("messages", journal, "--queue", "orders")
    assert cp.returncode == 0, cp.stderr
    head, *rows, total = cp.stdout.splitlines()
    assert head.split()[-3:] == ["MESSAGE-ID", "SUBJECT", "BODY"]
    assert rows[0].split()[5] == "2"  # delivered twice (its Delivery record)
    assert rows[0].split()[-4:] == ["order-1", "order.created", '"one', 'widget"']
    assert rows[3].split()[8:] == ["-", "-", "(undecodable:", *BAD.split()]
    assert total == "5 messages, " + total.split()[2] + " bytes in queue 'orders'"
    js = [
        json.loads(x)
        for x in run("messages", "--json", journal, "--queue", "orders").stdout.split("\n")
        if x
    ]
    assert js[0]["message"]["properties"]["customer"] == "acme"
    assert js[0]["delivery_count"] == 2
    assert "message_error" in js[3]
