"""qstore-config and qstore-stat as a user runs them: subprocesses against a real qstored."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from proton import Message
from proton.utils import BlockingConnection

ROOT = Path(__file__).resolve().parent.parent
TOOL_TIMEOUT = 30.0


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"tools.{tool}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def ok(tool: str, *args: str) -> str:
    p = run(tool, *args)
    assert p.returncode == 0, f"{tool} {args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    assert p.stderr == ""
    return p.stdout


def config(url: str, *args: str) -> str:
    return ok("qstore_config", "-b", url, *args)


def config_json(url: str, listing: str) -> dict[str, dict[str, Any]]:
    rows = json.loads(config(url, listing, "--json"))
    return {r["name"]: r for r in rows} if listing != "bindings" else rows


def stat_json(url: str, view: str) -> list[dict[str, Any]]:
    return json.loads(ok("qstore_stat", "-b", url, view, "--json"))


def assert_fails(p: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert p.returncode == code, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    assert text in p.stderr, p.stderr
    if code == 1:
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.fixture
def url(brokers: Any) -> str:
    return brokers.start().url  # no --auto-create: only what the tools declare exists


def send(url: str, address: str, *messages: Message) -> None:
    c = BlockingConnection(url, timeout=10)
    try:
        s = c.create_sender(address)
        for m in messages:
            s.send(m)
    finally:
        c.close()


def test_add_queue_with_each_option_and_delete(url: str) -> None:
    config(url, "add", "queue", "plain")
    # Options before and after the verb, every queue option, typed --argument values.
    ok(
        "qstore_config",
        "add",
        "queue",
        "full",
        "-b",
        url,
        "--durable",
        "--replicate",
        "all",
        "--max-queue-size",
        "4096",
        "--max-queue-count",
        "10",
        "--limit-policy",
        "ring",
        "--lvq-key",
        "k",
        "--priorities",
        "4",
        "--flow-stop-size",
        "4000",
        "--flow-resume-size",
        "3000",
        "--flow-stop-count",
        "9",
        "--flow-resume-count",
        "5",
        "--argument",
        "x-n=7",
        "--argument",
        "x-flag=true",
        "--argument",
        "x-text=hello",
    )
    queues = config_json(url, "queues")
    assert set(queues) == {"plain", "full"}  # the tool's own reply queue is not listed
    assert queues["plain"]["durable"] is False
    assert queues["plain"]["arguments"] == {}
    full = queues["full"]
    assert full["durable"] is True
    assert full["arguments"] == {
        "qpid.replicate": "all",
        "qpid.max_size": 4096,
        "qpid.max_count": 10,
        "qpid.policy_type": "ring",
        "qpid.last_value_queue_key": "k",
        "qpid.priorities": 4,
        "qpid.flow_stop_size": 4000,
        "qpid.flow_resume_size": 3000,
        "qpid.flow_stop_count": 9,
        "qpid.flow_resume_count": 5,
        "x-n": 7,
        "x-flag": True,
        "x-text": "hello",
    }
    text = config(url, "queues")
    assert "Queue Name" in text.splitlines()[0]
    line = next(ln for ln in text.splitlines() if ln.startswith("full "))
    for attr in ("--durable", "--max-queue-size=4096", "--limit-policy=ring", "--replicate=all"):
        assert attr in line

    ok("qstore_config", "del", "queue", "plain", "-b", url)
    assert set(config_json(url, "queues")) == {"full"}
    assert_fails(run("qstore_config", "-b", url, "del", "queue", "plain"), 1, "plain")


def test_del_queue_needs_force_when_not_empty(url: str) -> None:
    config(url, "add", "queue", "busy")
    send(url, "busy", Message(body="one"), Message(body="two"))
    p = run("qstore_config", "-b", url, "del", "queue", "busy")
    assert_fails(p, 1, "holds 2 messages")
    assert p.stderr.startswith("qstore-config: ")
    assert "busy" in config_json(url, "queues")
    config(url, "del", "queue", "busy", "--force")
    assert "busy" not in config_json(url, "queues")


def test_exchanges_and_bindings(url: str) -> None:
    config(url, "add", "queue", "q")
    config(url, "add", "exchange", "topic", "tx", "--durable", "--replicate", "configuration")
    config(url, "add", "exchange", "headers", "hx")
    exchanges = config_json(url, "exchanges")
    assert exchanges["tx"]["type"] == "topic"
    assert exchanges["tx"]["durable"] is True
    assert exchanges["tx"]["arguments"] == {"qpid.replicate": "configuration"}
    assert exchanges["hx"]["type"] == "headers"
    assert {"", "amq.direct", "amq.topic", "amq.fanout", "amq.match"} <= set(exchanges)
    assert "--replicate=configuration" in config(url, "exchanges")

    config(url, "bind", "tx", "q", "a.#")
    config(url, "bind", "hx", "q", "k1", "--argument", "x-match=all", "--argument", "n=1")
    config(url, "bind", "hx", "q", "k2", "any", "color=red", "size=3")  # the seed's form
    bindings = config_json(url, "bindings")
    assert {(b["exchange"], b["queue"], b["key"]) for b in bindings} == {
        ("tx", "q", "a.#"),
        ("hx", "q", "k1"),
        ("hx", "q", "k2"),
    }
    by_key = {b["key"]: b["arguments"] for b in bindings}
    assert by_key["k1"] == {"x-match": "all", "n": 1}
    assert by_key["k2"] == {"x-match": "any", "color": "red", "size": 3}
    text = config(url, "bindings")
    assert "Exchange 'hx' (headers)" in text
    assert "bind [a.#] => q" in text

    # The headers binding routes by application properties; the topic one by subject.
    send(
        url,
        "hx",
        Message(body="h", properties={"color": "red"}),
        Message(body="miss", properties={"color": "blue"}),
    )
    send(url, "tx", Message(body="t", subject="a.b.c"))
    assert config_json(url, "queues")["q"]["depth"] == 2

    config(url, "unbind", "hx", "q", "k2")
    config(url, "unbind", "tx", "q", "a.#")
    assert [b["key"] for b in config_json(url, "bindings")] == ["k1"]
    assert_fails(run("qstore_config", "-b", url, "unbind", "tx", "q", "a.#"), 1, "no binding")

    config(url, "del", "exchange", "tx")
    assert "tx" not in config_json(url, "exchanges")
    assert_fails(run("qstore_config", "-b", url, "add", "exchange", "bogus", "bx"), 1, "bogus")


def test_usage_errors_and_broker_refusals(url: str) -> None:
    p = run("qstore_config", "-b", url, "add", "queue", "q", "--replicate", "sometimes")
    assert_fails(p, 2, "invalid choice: 'sometimes'")
    assert p.stderr.startswith("usage:")
    p = run(
        "qstore_config", "-b", url, "add", "queue", "q", "--argument", "qpid.replicate=sometimes"
    )
    assert_fails(p, 1, "qpid.replicate must be one of none|configuration|all")
    assert "q" not in config_json(url, "queues")
    assert_fails(run("qstore_config", "-b", url, "add", "queue", "q", "--argument", "x"), 2, "K=V")
    assert_fails(run("qstore_config", "add", "queue", "q", "--max-queue-count", "-1"), 2, ">= 0")
    assert_fails(run("qstore_config", "-b", "no/such:host", "queues"), 2, "bad broker address")
    assert_fails(run("qstore_config"), 2, "VERB")
    assert_fails(run("qstore_stat", "-q", "-e"), 2, "choose one view")


def test_stat_views_with_real_counts(url: str) -> None:
    config(url, "add", "queue", "work", "--durable", "--replicate", "all")
    config(url, "add", "queue", "other")
    config(url, "bind", "amq.direct", "work", "jobs")
    send(url, "work", *(Message(body=f"m{i}", durable=True) for i in range(3)))
    send(url, "amq.direct", Message(body="j", subject="jobs"), Message(body="x", subject="none"))
    c = BlockingConnection(url, timeout=10)
    try:
        r = c.create_receiver("work")
        assert r.receive(timeout=10).body == "m0"
        r.accept()
        c.create_sender("other")  # a round trip: the broker has the accept once this attaches

        queues = {q["name"]: q for q in stat_json(url, "-q")}
        assert set(queues) == {"work", "other"}
        work = queues["work"]
        assert work["durable"] is True
        assert work["enqueues"] == 4
        assert work["dequeues"] == 1
        assert work["depth"] == 3
        assert work["bytes"] > 0
        assert work["consumers"] == 1
        assert work["replication"] == "all"
        assert queues["other"]["replication"] == "none"  # the broker's default
        text = ok("qstore_stat", "-b", url, "-q")
        line = next(ln for ln in text.splitlines() if ln.startswith("work "))
        assert work["flowStopped"] is False and work["flowStoppedCount"] == 0
        assert line.split() == [
            "work", "Y", "3", str(work["bytes"]), "4", "1", "1", "0", "all", "-", "0"
        ]  # fmt: skip

        exchanges = {x["name"]: x for x in stat_json(url, "-e")}
        assert exchanges["amq.direct"]["routed"] == 1
        assert exchanges["amq.direct"]["dropped"] == 1
        assert exchanges["amq.direct"]["bindings"] == 1
        assert exchanges["amq.direct"]["type"] == "direct"
        assert "amq.direct" in ok("qstore_stat", "-e", "--broker", url)

        conns = stat_json(url, "-c")
        assert len(conns) == 2  # the connection above and the tool's own
        assert sorted(c["admin"] for c in conns) == [False, False]
        assert all(c["peer"].startswith("127.0.0.1:") and c["links"] >= 1 for c in conns)
        admin = json.loads(ok("qstore_stat", "--ha-admin", "-c", "-b", url, "--json"))
        assert sorted(c["admin"] for c in admin) == [False, True]
        assert "container" in ok("qstore_stat", "-b", url, "-c")
    finally:
        c.close()

    # The brokers view: `-b ADDRESS -b`, and the explicit long forms.
    [broker] = json.loads(ok("qstore_stat", "-b", url, "-b", "--json"))
    assert broker["state"] == "standalone"
    assert broker["name"].endswith(url.rsplit(":", 1)[1])
    assert isinstance(broker["pid"], int) and broker["node-id"] and broker["data-dir"]
    assert broker["statistics"]["queues"] >= 2
    assert broker["statistics"]["dropped"] == 1
    text = ok("qstore_stat", "--brokers", "--broker", url)
    assert "standalone" in text and broker["node-id"] in text


def test_dedup_window_set_by_config_and_counted_by_stat(url: str) -> None:
    config(url, "add", "queue", "once", "--durable", "--dedup-window", "100")
    config(url, "add", "queue", "plain")
    assert config_json(url, "queues")["once"]["arguments"] == {"qstore.dedup-window": 100}
    assert "--dedup-window=100" in config(url, "queues")
    for q in ("once", "plain"):
        send(url, q, *(Message(id=f"m{i % 2}", body=i, durable=True) for i in range(5)))
    queues = {q["name"]: q for q in stat_json(url, "-q")}
    assert (queues["once"]["depth"], queues["once"]["duplicatesDropped"]) == (2, 3)
    assert (queues["plain"]["depth"], queues["plain"]["duplicatesDropped"]) == (5, 0)
    assert queues["once"]["dedupWindow"] == 100 and queues["plain"]["dedupWindow"] == 0
    line = next(ln for ln in ok("qstore_stat", "-b", url, "-q").splitlines() if "once" in ln)
    assert line.split()[-2:] == ["100", "3"]


def test_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    where = f"127.0.0.1:{port}"
    for tool, args in (
        ("qstore_stat", ("-b", where, "-q")),
        ("qstore_stat", ("--broker", where, "-b")),
        ("qstore_config", ("-b", where, "queues")),
        ("qstore_config", ("add", "queue", "q", "-b", where, "--timeout", "5")),
    ):
        p = run(tool, *args)
        prog = tool.replace("_", "-")
        assert_fails(p, 1, f"{prog}: cannot connect to {where}: ")
