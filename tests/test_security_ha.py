"""The HA identity: backups log in as it, only it (or an ACL grant of `update broker`) may
replicate, act as `qpid.ha-admin` or promote, and a backup with the wrong credentials never
becomes ready, saying why in the seed's words (1.12.9, 1.12.12.2). Real brokers, stock clients."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from broker_harness import Brokers
from proton import Message, symbol
from proton.utils import BlockingConnection, LinkDetached
from security_support import (
    ADMIN,
    PASSWORDS,
    SecureCluster,
    closing,
    connect,
    mgmt,
    refusal,
    wait_for_log,
)

from qstore.ha import BACKUP_PROPERTY, REPLICATION


def backup_claim(name: str) -> dict[Any, Any]:
    info = {"name": name, "address": "127.0.0.1:1", "position": {"epoch": 0, "node": "", "seq": 0}}
    return {symbol(BACKUP_PROPERTY): info}


def test_backups_log_in_as_the_ha_identity_and_fail_over(brokers: Brokers) -> None:
    c = SecureCluster(brokers, 2)
    assert c.promote(0)[0] == 200
    c.wait_state(1, "ready")
    with closing(connect(f"127.0.0.1:{c.ports[0]}", "alice")) as conn:
        conn.create_sender("orders").send(Message(body="order-1", durable=True))
    c.members[0].kill()
    assert c.promote(1)[0] == 200
    with closing(connect(f"127.0.0.1:{c.ports[1]}", "alice")) as conn:
        assert conn.create_receiver("orders").receive(timeout=5).body == "order-1"
    for b in c.members:  # the HA password is in no log and on no command line
        assert PASSWORDS["ha"] not in b.log_path.read_text()
        cmdline = Path(f"/proc/{b.pid}/cmdline").read_bytes() if b.alive() else b""
        assert PASSWORDS["ha"].encode() not in cmdline


def test_impostors_are_refused_on_primary_and_backup(brokers: Brokers) -> None:
    c = SecureCluster(brokers, 2)
    assert c.promote(0)[0] == 200
    c.wait_state(1, "ready")
    for i in (0, 1):  # an ordinary user claiming to be a backup, or an HA admin
        url = f"127.0.0.1:{c.ports[i]}"
        text = refusal(url, "alice", properties=backup_claim("node1"))
        assert "ACL denied alice@QPID creating a federation link" in text, text
        text = refusal(url, "alice", properties=ADMIN)
        assert "ACL denied alice@QPID update broker" in text, text
    wait_for_log(c.members[0], "creating a federation link")
    # nothing changed: the real backup is still ready, and promote needs the HA admin
    assert c.state(1) == "ready"
    with closing(connect(f"127.0.0.1:{c.ports[0]}", "alice")) as conn:
        code, text, _ = mgmt(conn, "PROMOTE", "ha")
    assert code == 403 and "promote refused for alice@QPID" in text


def test_a_backup_name_cannot_be_taken_over(brokers: Brokers) -> None:
    c = SecureCluster(brokers, 2)
    assert c.promote(0)[0] == 200
    c.wait_state(1, "ready")
    url = f"127.0.0.1:{c.ports[0]}"
    conn = connect(url, "ha", properties=backup_claim("node1"))
    with closing(conn), pytest.raises(LinkDetached) as err:
        conn.create_receiver(REPLICATION)
    assert "backup name 'node1' is in use" in str(err.value)
    time.sleep(0.5)
    assert c.state(1) == "ready"


def test_wrong_ha_credentials_never_become_ready(brokers: Brokers) -> None:
    c = SecureCluster(brokers, 1 + 1)
    assert c.promote(0)[0] == 200
    c.wait_state(1, "ready")
    c.members[1].kill()
    wrong = brokers.tmp_path / "wrong.password"
    wrong.write_text("not-the-ha-password\n")
    c.members[1] = c.start(1, password_file=wrong)
    line = wait_for_log(c.members[1], "SASL: Authentication failed")
    assert f"127.0.0.1:{c.ports[0]}" in line
    wait_for_log(c.members[0], "password verification failed")
    time.sleep(1.0)  # several link-maintenance intervals: it keeps trying, never in
    assert c.members[1].log().count("SASL: Authentication failed") >= 2
    assert c.state(1) == "joining"
    with closing(c.admin(0)) as conn:
        _, _, status = mgmt(conn, "READ", "ha")
    assert all(m["name"] != "node1" for m in status["members"]), status["members"]
    # what an operator runs (seed 1.12.12.2): the backup is not ready
    done = subprocess.run(
        [sys.executable, "-m", "tools.qstore_ha", "-b", f"ha@127.0.0.1:{c.ports[0]}",
         "--password-file", str(c.password_file), "status", "--all"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert any(f":{c.ports[0]}" in line and "active" in line for line in lines), done.stdout
    assert any(f":{c.ports[1]}" in line and "joining" in line for line in lines), done.stdout


def test_open_cluster_still_needs_the_ha_identity_for_ha(brokers: Brokers) -> None:
    """`--auth no` with an HA user: anyone connects, only that user (by name) replicates."""
    c = SecureCluster(brokers, 2, auth=False)
    assert c.promote(0)[0] == 200
    c.wait_state(1, "ready")
    url = f"127.0.0.1:{c.ports[0]}"
    text = refusal(url, properties=backup_claim("node9"))  # anonymous
    assert "ACL denied anonymous@QPID creating a federation link" in text
    with closing(BlockingConnection(url, timeout=10)) as conn:
        conn.create_sender("q").send(Message(body=1))


def test_status_checks_between_brokers_log_in(brokers: Brokers) -> None:
    """A joining broker told to promote asks its peers first (as the HA identity, by SCRAM):
    with a primary among them, it refuses."""
    c = SecureCluster(brokers, 3)
    assert c.promote(1)[0] == 200
    c.wait_state(0, "ready")
    c.wait_state(2, "ready")
    c.members[2].kill()
    # its first attempt goes to node0 (a backup: refused), the next one only in 60 s
    c.members[2] = c.start(2, extra=("--link-maintenance-interval", "60"))
    c.wait_state(2, "joining")
    code, text = c.promote(2)
    assert code == 409 and f"127.0.0.1:{c.ports[1]}" in text, text
    assert c.state(1) == "active"
    assert "password verification failed" not in c.members[1].log()


def test_a_backup_refused_by_the_acl_says_so_and_stays_out(brokers: Brokers) -> None:
    """The seed's 1.12.12.2: an ACL without a rule for the HA identity keeps the backups out,
    and their logs say why."""
    acl = "acl allow admin all all\nacl allow ha access broker\nacl allow ha update broker\n"
    c = SecureCluster(brokers, 2, acl=acl)
    assert c.promote(0, "admin")[0] == 200  # an ACL grant of `update broker` may promote
    # the backup's own side: the primary closed its link connection, and why
    wait_for_log(c.members[1], "peer closed with amqp:unauthorized-access: ACL denied ha@QPID")
    wait_for_log(c.members[0], "ACL denied ha@QPID")
    time.sleep(0.5)
    assert c.state(0, "admin") == "active"  # no backup ever got in
    assert c.state(1, "admin") == "joining"
