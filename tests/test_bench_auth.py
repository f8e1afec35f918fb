"""The benchmarks' authenticated mode (bench/bench_auth.py, bench/ab.py): the 50-rule ACL grants
the bench user what the benchmarks do and nothing else, late; a real broker started with the
bench's options lets the bench's stock proton clients in with PLAIN and nobody anonymous; and
`broker_bench.py --auth both` / `ha_bench.py --auth yes` run end to end with small counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from broker_harness import Brokers
from proton import Message
from proton.utils import BlockingConnection, LinkDetached

from broker.acl import Acl

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

from bench_auth import (  # noqa: E402  (bench/ is not a package: found through the path above)
    ACL_RULES,
    BENCH_USER,
    HA_USER,
    Security,
    client_options,
    write_acl,
)

TIMEOUT = 10.0
RUN_TIMEOUT = 300


def test_the_acl_has_50_rules_no_dead_ones_and_grants_the_bench_user_late(
    tmp_path: Path,
) -> None:
    first = write_acl(tmp_path / "a.acl", BENCH_USER, "amq.topic")
    acl = Acl.load(tmp_path / "a.acl")
    assert len(acl.rules) == ACL_RULES == 50
    assert acl.warnings == ()
    assert first == 44
    # nothing before rule 44 decides any of the bench user's requests
    asks: list[tuple[str, str, dict[str, str]]] = [
        ("access", "connection", {"host": "127.0.0.1"}),
        ("create", "queue", {"name": "bench.1-100.7"}),
        ("publish", "exchange", {"name": "", "routingkey": "bench.1-100.7"}),
        ("consume", "queue", {"name": "bench.1-100.7"}),
        ("create", "queue", {"name": "bench.x.7", "durable": "true", "autodelete": "false"}),
        ("bind", "exchange", {"name": "amq.topic", "queuename": "bench.x.7",
                              "routingkey": "bench.#"}),
        ("publish", "exchange", {"name": "amq.topic", "routingkey": "bench.load.42"}),
    ]  # fmt: skip
    for action, obj, props in asks:
        decision = acl.check(BENCH_USER, action, obj, props)
        assert decision.allowed, (action, obj, props)
        assert int(decision.rule.rsplit(":", 1)[1]) > 40  # a line of the late block
    assert acl.allows_publish(BENCH_USER, "amq.topic", "bench.load.1")
    # ... and nothing else: other queues, other subjects, other users
    assert not acl.check(BENCH_USER, "create", "queue", {"name": "orders.q"}).allowed
    assert not acl.check(BENCH_USER, "consume", "queue", {"name": "audit.q"}).allowed
    assert not acl.allows_publish(BENCH_USER, "amq.topic", "audit.load")
    assert not acl.allows_publish(BENCH_USER, "", "orders.q")
    assert not acl.check("svc-orders", "consume", "queue", {"name": "bench.1-100.7"}).allowed
    assert not acl.check("mallory", "access", "connection", {"host": "127.0.0.1"}).allowed


def test_the_cluster_acl_adds_the_ha_user_first(tmp_path: Path) -> None:
    first = write_acl(tmp_path / "a.acl", BENCH_USER, "amq.topic", HA_USER)
    acl = Acl.load(tmp_path / "a.acl")
    assert len(acl.rules) == ACL_RULES + 1
    assert first == 45
    assert acl.check(HA_USER, "update", "broker").rule == acl.rules[0].where


def connect(url: str, **options: Any) -> BlockingConnection:
    return BlockingConnection(url, timeout=TIMEOUT, **options)


def test_a_broker_with_the_bench_options_admits_the_bench_clients_only(
    brokers: Brokers, tmp_path: Path
) -> None:
    security = Security.make(tmp_path / "security")
    assert security.password and security.password not in " ".join(security.broker_args)
    broker = brokers.start(args=["--auto-create", "yes", *security.broker_args])
    options = client_options(security.env)
    assert options["allowed_mechs"] == "PLAIN" and options["user"] == BENCH_USER

    with pytest.raises(Exception, match="unauthorized-access"):
        connect(broker.url).close()  # anonymous
    wrong = {**options, "password": security.password + "x"}
    with pytest.raises(Exception, match="unauthorized-access"):
        connect(broker.url, **wrong).close()

    conn = connect(broker.url, **options)
    try:
        conn.create_sender("bench.q").send(Message(body="hi", durable=True))
        receiver = conn.create_receiver("bench.q")
        assert receiver.receive(timeout=TIMEOUT).body == "hi"
        receiver.accept()
        with pytest.raises(LinkDetached, match="ACL denied"):
            conn.create_sender("orders.q")
    finally:
        conn.close()
    assert client_options({}) == {}  # no credentials in the environment: anonymous, --auth no


def run_bench(script: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_broker_bench_auth_both_runs_every_case_in_both_modes_and_compares() -> None:
    lines = run_bench(
        "broker_bench.py",
        *("--messages", "300", "--senders", "1", "--windows", "50"),
        *("--auth", "both", "--rounds", "2", "--exchange", "--subjects", "7"),
    )
    runs = [x for x in lines if "summary" not in x]
    assert sorted({(x["auth"], x["case"], x["round"]) for x in runs}) == sorted(
        (auth, case, r)
        for auth in ("none", "sasl+acl50")
        for case in (
            "senders=1 window=50",
            "senders=1 window=50 exchange=amq.topic subjects=7",
            "senders=1 window=1000 receiver=prefetch1",
        )
        for r in (0, 1)
    )
    for x in runs:
        assert (x["received"], x["settled_not_accepted"]) == (300, 0), x
        assert x["stalled"] is False, x
    # the order alternates: round 0 starts with none, round 1 with the authenticated broker
    assert [x["auth"] for x in runs[:2]] == ["none", "sasl+acl50"]
    assert [x["auth"] for x in runs[6:8]] == ["sasl+acl50", "none"]
    summaries = [x for x in lines if "summary" in x]
    assert {x["case"] for x in summaries} == {r["case"] for r in runs}
    for s in summaries:
        assert s["summary"] == "sasl+acl50 vs none" and len(s["cpu_ratio_by_round"]) == 2


def test_ha_bench_runs_a_cluster_with_authentication_and_the_acl() -> None:
    lines = run_bench("ha_bench.py", "--messages", "300", "--auth", "yes")
    runs = {x["setup"]: x for x in lines if "setup" in x}
    assert set(runs) == {"standalone", "cluster-3"}
    for x in runs.values():
        assert x["auth"] == "sasl+acl50" and x["received"] == 300, x
        assert x["settled_not_accepted"] == 0
    assert runs["cluster-3"]["states_after"] == ["active", "ready", "ready"]
