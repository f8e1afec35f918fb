"""The ACL file (qpidd's syntax) enforced by a real qstored on stock proton clients: connect,
consume, publish (at attach and per message), create, delete, purge, management reads; reload by
SIGHUP and by management, a bad file keeping the rules in force."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from broker_harness import Brokers
from proton import Delivery, Message
from proton.utils import LinkDetached, SendException
from security_support import closing, connect, mgmt, refusal, start_secure, wait_for_log

ACL = """\
# the test's rules: admins do anything, alice a little, bob less, eve nothing
group admins admin@QPID \\
    ha
acl allow admins all all
acl deny-log eve access connection
acl allow all access connection
acl allow alice consume queue name=public.*
acl allow alice publish exchange name=amq.default routingkey=public.*
acl allow alice publish exchange name=amq.default routingkey=alice.*
acl allow alice publish exchange name=news routingkey=sport.#
acl allow alice create queue name=alice.*
acl allow alice access broker
acl deny all all
"""


@pytest.fixture
def secured(brokers: Brokers):  # type: ignore[no-untyped-def]
    b = start_secure(brokers, acl=ACL)
    with closing(connect(b.url, "admin")) as admin:  # what the tests use, made by an admin
        for q in ("public.a", "private", "doomed"):
            assert mgmt(admin, "CREATE", "queue", q, {"durable": True})[0] in (200, 201)
        assert mgmt(admin, "CREATE", "exchange", "news", {"type": "topic"})[0] in (200, 201)
        binding = {"exchange": "news", "queue": "public.a", "key": "#"}
        assert mgmt(admin, "CREATE", "binding", None, binding)[0] in (200, 201)
        admin.create_sender("doomed").send(Message(body="x", durable=True))
    return b


def test_connect_denied(secured) -> None:  # type: ignore[no-untyped-def]
    text = refusal(secured.url, "eve")
    assert "ACL denied eve@QPID" in text and "connection" in text, text
    wait_for_log(secured, "eve@QPID")
    with closing(connect(secured.url, "bob")):  # allowed to connect, nothing more
        pass


def test_consume_and_publish_at_attach(secured) -> None:  # type: ignore[no-untyped-def]
    with closing(connect(secured.url, "alice")) as c:
        c.create_sender("public.a").send(Message(body="ok", durable=True))
        assert c.create_receiver("public.a").receive(timeout=5).body == "ok"
        with pytest.raises(LinkDetached) as err:
            c.create_receiver("private")
        assert "ACL denied alice@QPID consume queue" in str(err.value)
        with pytest.raises(LinkDetached) as err:
            c.create_sender("private")
        assert "ACL denied alice@QPID publish exchange" in str(err.value)
    line = wait_for_log(secured, "action:consume")
    assert "alice@QPID" in line and "private" in line


def test_publish_to_an_exchange_is_checked_per_message(secured) -> None:  # type: ignore[no-untyped-def]
    with closing(connect(secured.url, "alice")) as c:
        sender = c.create_sender("news")
        sender.send(Message(subject="sport.football", body="goal", durable=True))
        with pytest.raises(SendException) as err:
            sender.send(Message(subject="politics", body="vote", durable=True))
        assert err.value.state == Delivery.REJECTED
        # the link is still good for what the ACL allows
        sender.send(Message(subject="sport.tennis", body="ace", durable=True))
        r = c.create_receiver("public.a")
        assert [r.receive(timeout=5).body for _ in range(2)] == ["goal", "ace"]
    wait_for_log(secured, "politics")


def test_anonymous_relay_is_checked_per_message(secured) -> None:  # type: ignore[no-untyped-def]
    with closing(connect(secured.url, "alice")) as c:
        relay = c.create_sender(None)
        relay.send(Message(address="public.a", body="via relay", durable=True))
        with pytest.raises(SendException):
            relay.send(Message(address="private", body="nope", durable=True))
        assert c.create_receiver("public.a").receive(timeout=5).body == "via relay"


def test_management_changes_and_reads(secured) -> None:  # type: ignore[no-untyped-def]
    with closing(connect(secured.url, "alice")) as c:
        assert mgmt(c, "CREATE", "queue", "alice.mine", {"durable": True})[0] in (200, 201)
        code, text, _ = mgmt(c, "CREATE", "queue", "someone.else", {"durable": True})
        assert code == 403 and "ACL denied alice@QPID create queue" in text
        code, text, _ = mgmt(c, "DELETE", "queue", "doomed", {"force": True})
        assert code == 403 and "delete queue" in text
        code, text, _ = mgmt(c, "PURGE", "queue", "doomed")
        assert code == 403 and "purge queue" in text
        assert mgmt(c, "QUERY", "queue")[0] == 200  # alice may read (access broker)
    with closing(connect(secured.url, "bob")) as c:
        code, text, _ = mgmt(c, "QUERY", "queue")
        assert code == 403 and "ACL denied bob@QPID access broker" in text
        code, _, _ = mgmt(c, "READ", "broker")
        assert code == 403
    with closing(connect(secured.url, "admin")) as c:  # nothing was changed by the refusals
        assert mgmt(c, "READ", "queue", "doomed")[2]["depth"] == 1


def test_auto_create_on_attach_needs_create(secured) -> None:  # type: ignore[no-untyped-def]
    with closing(connect(secured.url, "alice")) as c:
        with pytest.raises(LinkDetached) as err:  # alice may publish to public.* ...
            c.create_sender("public.new")
        assert "ACL denied alice@QPID create queue name=public.new" in str(err.value)
        c.create_sender("alice.new").send(Message(body=1, durable=True))  # ...create alice.*
    with closing(connect(secured.url, "admin")) as c:
        assert mgmt(c, "READ", "queue", "public.new")[0] == 404
        assert mgmt(c, "READ", "queue", "alice.new")[2]["depth"] == 1


def test_reload_by_sighup_and_by_management(secured, brokers: Brokers) -> None:  # type: ignore[no-untyped-def]
    acl_file = brokers.tmp_path / "broker.acl"
    more = "acl allow bob consume queue\nacl deny all all"
    acl_file.write_text(ACL.replace("acl deny all all", more))
    secured.proc.send_signal(signal.SIGHUP)
    wait_for_log(secured, "ACL: read 11 rules")
    with closing(connect(secured.url, "bob")) as c:
        c.create_receiver("private")  # allowed now
    acl_file.write_text("acl allow bob eat all\n")
    with closing(connect(secured.url, "admin")) as c:
        code, text, _ = mgmt(c, "RELOAD", "acl")
        assert code == 400 and "broker.acl:1" in text and "previous rules stay" in text
    with closing(connect(secured.url, "bob")) as c:
        c.create_receiver("private")  # the old (reloaded) rules still hold
    with closing(connect(secured.url, "alice")) as c:
        assert mgmt(c, "RELOAD", "acl")[0] == 403  # reloading is `update broker`


def test_bad_acl_file_stops_start_up_with_one_line(brokers: Brokers) -> None:
    with pytest.raises(RuntimeError) as err:
        start_secure(brokers, acl="acl allow bob eat queue\n")
    text = str(err.value)
    assert "qstored: error:" in text and "broker.acl:1" in text and "Traceback" not in text


def test_qstore_config_reload_acl(secured, brokers: Brokers) -> None:  # type: ignore[no-untyped-def]
    password = brokers.tmp_path / "admin.password"
    password.write_text("admin-secret-1\n")
    cmd = [sys.executable, "-m", "tools.qstore_config", "-b", f"admin@{secured.url}",
           "--password-file", str(password), "reload-acl"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ACL reloaded from") and "rules" in done.stdout
    (brokers.tmp_path / "broker.acl").write_text("acl allow bob eat all\n")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "previous rules stay in force" in done.stderr
