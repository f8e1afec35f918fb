"""`ocf:qstore:qstored` under real Corosync and Pacemaker: a single-node cluster on this machine
with a globally-unique promotable clone of 3 instances (3 brokers on 3 ports), started in a private
mount namespace so that each run begins with an empty CIB and writes nothing outside its tmp dir
(shared/notes/pacemaker.md records how this was found to work).

It asserts that exactly one instance is promoted, that kill -9 of the primary's process makes a
different, ready instance primary while a qstore.client sender with all three URLs loses nothing
acknowledged, that the killed one returns as a ready backup, and that after a total failure the
instance with the highest journal position becomes primary: the promotion scores and the liveness
probe are what this catches (ocf-tester cannot).

Needs root, unshare, and the packages pacemaker and corosync; skipped otherwise with the reason.
Corosync, Pacemaker and the namespace are stopped by their pids, the brokers killed by theirs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery.drill import ADDRESS, Load, Report, compare
from recovery.localcluster import consecutive_free_ports, drain
from tools._mgmt import query_status
from tools.qstore_ocf import install

TOOLS = ("corosync", "pacemakerd", "crm_mon", "cibadmin", "unshare", "corosync-cfgtool")
INSTALL = "apt-get install -y pacemaker corosync resource-agents (Debian; as root)"
FAST = (
    "--ha-replicate all --link-maintenance-interval 0.1 --link-heartbeat-interval 2 "
    "--ha-backup-timeout 3"
)
NODE = os.uname().nodename


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "Pacemaker runs as root: not root"
    lacking = [t for t in TOOLS if shutil.which(t) is None]
    if lacking:
        return f"{', '.join(lacking)} not installed: {INSTALL}"
    if subprocess.run(["crm_mon", "-1"], capture_output=True, timeout=10).returncode == 0:
        return "a Pacemaker cluster already runs on this machine (one per network namespace)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def corosync_conf(log_dir: Path) -> str:
    return textwrap.dedent(f"""\
        totem {{
            version: 2
            cluster_name: qstore-test
            transport: knet
            crypto_cipher: none
            crypto_hash: none
        }}
        nodelist {{
            node {{
                name: {NODE}
                nodeid: 1
                ring0_addr: 127.0.0.1
            }}
        }}
        quorum {{
            provider: corosync_votequorum
        }}
        logging {{
            to_stderr: no
            to_syslog: no
            to_logfile: yes
            logfile: {log_dir}/corosync.log
            timestamp: on
        }}
        """)


def clone_xml(params: dict[str, str]) -> str:
    attrs = "\n".join(
        f'        <nvpair id="qstored-ia-{k}" name="{k}" value="{v}"/>' for k, v in params.items()
    )
    meta = {
        "promotable": "true",
        "clone-max": "3",
        "clone-node-max": "3",
        "promoted-max": "1",
        "promoted-node-max": "1",
        "globally-unique": "true",  # else only one instance per node
        "notify": "true",
    }
    metas = "\n".join(
        f'      <nvpair id="qstored-clone-{k}" name="{k}" value="{v}"/>' for k, v in meta.items()
    )
    return f"""
  <clone id="qstored-clone">
    <meta_attributes id="qstored-clone-meta">
{metas}
    </meta_attributes>
    <primitive id="qstored" class="ocf" provider="qstore" type="qstored">
      <instance_attributes id="qstored-ia">
{attrs}
      </instance_attributes>
      <operations>
        <op id="qstored-start" name="start" interval="0" timeout="60s"/>
        <op id="qstored-stop" name="stop" interval="0" timeout="30s"/>
        <op id="qstored-promote" name="promote" interval="0" timeout="30s"/>
        <op id="qstored-demote" name="demote" interval="0" timeout="60s"/>
        <op id="qstored-mon-p" name="monitor" interval="1s" role="Promoted" timeout="20s"/>
        <op id="qstored-mon-u" name="monitor" interval="2s" role="Unpromoted" timeout="20s"/>
      </operations>
    </primitive>
  </clone>
"""


def seed_cib(clone: str) -> str:
    empty = subprocess.run(
        ["cibadmin", "--empty"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    options = """<crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="opt-stonith" name="stonith-enabled" value="false"/>
        <nvpair id="opt-quorum" name="no-quorum-policy" value="ignore"/>
        <nvpair id="opt-dc" name="dc-deadtime" value="2s"/>
      </cluster_property_set>
    </crm_config>"""
    return empty.replace("<crm_config/>", options).replace(
        "<resources/>", f"<resources>{clone}</resources>"
    )


NS_SCRIPT = """#!/bin/sh
# Runs inside `unshare -m --propagation private`: Pacemaker's state dirs and the OCF agents dir are
# fresh ones under $W/root, so each run starts with an empty CIB and leaves nothing outside $W.
set -e
W="$1"; R="$W/root"
mkdir -p "$R/vlp/cib" "$R/vlp/pengine" "$R/vlp/blackbox" "$R/vlp/cores" "$R/vlc" \
    "$R/vlogp/bundles" "$R/run/crm" "$R/run/resource-agents"
chown -R hacluster:haclient "$R/vlp" "$R/vlogp"; chmod 750 "$R"/vlp/*; chmod 770 "$R/vlogp"
mount --bind "$R/vlp" /var/lib/pacemaker
mount --bind "$R/vlc" /var/lib/corosync
mount --bind "$R/vlogp" /var/log/pacemaker
mount --bind "$R/run" /run
install -o hacluster -g haclient -m 600 "$W/cib.xml" "$R/vlp/cib/cib.xml"
cp -a /usr/lib/ocf/resource.d "$R/ra"
mkdir -p "$R/ra/qstore"; cp "$W/qstored" "$R/ra/qstore/qstored"; chmod 755 "$R/ra/qstore/qstored"
mount --bind "$R/ra" /usr/lib/ocf/resource.d
ln -sf /dev/shm /run/shm
export PCMK_logfile="$W/log/pacemaker.log" PCMK_logfacility=none
corosync -f -c "$W/corosync.conf" > "$W/log/corosync.out" 2>&1 &
echo $! > "$W/corosync.pid"
i=0
while [ $i -lt 100 ] && ! corosync-cfgtool -s > /dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
pacemakerd > "$W/log/pacemakerd.out" 2>&1 &
echo $! > "$W/pacemakerd.pid"
wait
"""


def _stop_pid(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Cluster:
    def __init__(self, work: Path, base: int) -> None:
        self.work = work
        self.base = base
        self.addresses = [f"127.0.0.1:{base + i}" for i in range(3)]
        self.data = work / "data"

    def roles(self) -> dict[int, str]:
        """Clone instance -> role ("Promoted", "Unpromoted", "Stopped") as crm_mon shows it."""
        out = subprocess.run(
            ["crm_mon", "-1", "-r", "--output-as=xml"], capture_output=True, text=True, timeout=10
        )
        if out.returncode != 0:
            return {}
        roles: dict[int, str] = {}
        for r in ET.fromstring(out.stdout).iter("resource"):
            rid = r.get("id") or ""
            if rid.startswith("qstored:") and r.get("failed") != "true":
                roles[int(rid.split(":")[1])] = r.get("role") or ""
        return roles

    def maintenance(self) -> bool:
        out = subprocess.run(
            ["crm_mon", "-1", "--output-as=xml"], capture_output=True, text=True, timeout=10
        )
        opts = ET.fromstring(out.stdout).find(".//cluster_options") if out.returncode == 0 else None
        return opts is not None and opts.get("maintenance-mode") == "true"

    def promoted(self) -> list[int]:
        return sorted(i for i, role in self.roles().items() if role == "Promoted")

    def pid(self, i: int) -> int:
        return int((self.data / f"inst{i}" / "ocf-state" / "pid").read_text())

    def state(self, i: int) -> str | None:
        st = query_status(self.addresses[i], 2)
        return None if st is None else str(st["state"])

    def kill_brokers(self) -> None:
        for i in range(3):
            with contextlib.suppress(OSError, ValueError):
                pid = self.pid(i)
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if os.fsencode(str(self.data / f"inst{i}")) in cmd.split(b"\0"):
                    os.kill(pid, signal.SIGKILL)


def position(address: str, beyond: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """A broker's journal position (epoch, seq); None if it does not answer, or while it is not
    beyond `beyond`."""
    st = query_status(address, 2)
    if st is None:
        return None
    pos = (int(st["position"][0]), int(st["position"][1]))
    return pos if beyond is None or pos > beyond else None


def maintenance(on: bool) -> None:
    subprocess.run(
        ["crm_attribute", "--type", "crm_config", "--name", "maintenance-mode",
         "--update", "true" if on else "false"],
        capture_output=True, timeout=10, check=True,
    )  # fmt: skip


def wait_for(what: str, pred: Callable[[], Any], timeout: float, cluster: Cluster) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}: {cluster.roles()}"
            )
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    work = tmp_path
    (work / "log").mkdir()
    base = consecutive_free_ports(3)
    c = Cluster(work, base)
    params = {
        "data_dir": str(c.data),
        "interface": "127.0.0.1",
        "port": str(base),
        "per_clone": "yes",
        "ha_brokers_url": "amqp:" + ",".join(c.addresses),
        "options": f"--auth no --auto-create yes {FAST}",
        "status_timeout": "1",
    }
    (work / "cib.xml").write_text(seed_cib(clone_xml(params)))
    (work / "corosync.conf").write_text(corosync_conf(work / "log"))
    install(work / "agent", sys.executable)
    shutil.copy(work / "agent" / "qstored", work / "qstored")
    (work / "ns.sh").write_text(NS_SCRIPT)
    ns = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", str(work / "ns.sh"), str(work)],
        stdin=subprocess.DEVNULL,
        stdout=open(work / "log" / "ns.out", "wb"),  # noqa: SIM115 - the child's
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield c
    finally:
        for name, timeout in (("pacemakerd", 60.0), ("corosync", 30.0)):
            with contextlib.suppress(OSError, ValueError):
                _stop_pid(int((work / f"{name}.pid").read_text()), timeout)
        try:
            ns.wait(10)
        except subprocess.TimeoutExpired:
            ns.kill()
            ns.wait()
        c.kill_brokers()


def test_pacemaker_promotes_one_and_fails_over_to_a_ready_backup(cluster: Cluster) -> None:
    t0 = time.monotonic()
    first = wait_for("exactly one primary", lambda: cluster.promoted(), 30, cluster)
    assert len(first) == 1
    up = time.monotonic() - t0
    primary = first[0]
    backups = [i for i in range(3) if i != primary]
    assert cluster.state(primary) in ("recovering", "active")
    wait_for(
        "two ready backups",
        lambda: all(cluster.state(i) == "ready" for i in backups),
        30,
        cluster,
    )
    assert cluster.promoted() == [primary]

    # kill -9 the primary under load: a different, ready instance becomes primary
    load = Load(cluster.addresses, 200)
    load.more.set()
    load.start()
    wait_for("100 messages sent", lambda: load.sent >= 100 or load.error, 30, cluster)
    t1 = time.monotonic()
    os.kill(cluster.pid(primary), signal.SIGKILL)
    second = wait_for(
        "a different primary",
        lambda: [p for p in cluster.promoted() if p != primary],
        20,
        cluster,
    )
    failover = time.monotonic() - t1
    assert len(second) == 1 and second[0] in backups
    assert cluster.state(second[0]) in ("recovering", "active")
    at_failover = load.sent
    wait_for("100 more sent", lambda: load.sent >= at_failover + 100 or load.error, 30, cluster)
    load.more.clear()
    load.thread.join(60)
    assert not load.thread.is_alive() and load.error is None, load.error
    acked = load.acknowledged()
    load.close()

    # the killed instance returns as a ready backup
    wait_for(
        "the killed instance back as a ready backup",
        lambda: cluster.roles().get(primary) == "Unpromoted" and cluster.state(primary) == "ready",
        30,
        cluster,
    )
    assert cluster.promoted() == second
    report = Report("pacemaker")
    compare(report, load.sent, acked, drain(cluster.addresses, ADDRESS))
    assert report.lost == 0 and report.unexpected == 0, report
    assert report.acknowledged >= at_failover + 100
    print(f"cluster up in {up:.1f}s; fail-over in {failover:.2f}s; {report.acknowledged} acked")

    # total failure, with one journal left behind: Pacemaker unmanaged (maintenance mode) while
    # instance `stale` dies and the primary takes messages that only the other two hold
    primary = second[0]
    stale = 0 if primary != 0 else next(i for i in range(3) if i != primary)
    maintenance(True)
    wait_for("maintenance mode", lambda: cluster.maintenance(), 20, cluster)
    positions = {stale: position(cluster.addresses[stale])}
    os.kill(cluster.pid(stale), signal.SIGKILL)
    send = Load([cluster.addresses[primary]], 50)
    send.start()
    send.thread.join(60)
    assert send.error is None and send.sent == 50, send.error
    send.close()
    for i in range(3):
        if i != stale:  # the journal each comes back with
            positions[i] = wait_for(
                f"instance {i} holding the 50",
                lambda i=i: position(cluster.addresses[i], positions[stale]),
                10,
                cluster,
            )
    killed = {cluster.pid(i) for i in range(3)}
    for i in range(3):
        if i != stale:
            os.kill(cluster.pid(i), signal.SIGKILL)
    maintenance(False)

    # Pacemaker restarts all three; every one is joining; the best journal wins (crm_mon shows
    # the old primary as promoted until Pacemaker has looked again: wait for a broker to say so)
    def new_primary() -> list[int]:
        return [
            i
            for i in cluster.promoted()
            if cluster.pid(i) not in killed and cluster.state(i) in ("recovering", "active")
        ]

    third = wait_for("a primary after the total failure", new_primary, 60, cluster)
    assert len(third) == 1 and third[0] != stale
    assert positions[third[0]] == max(positions.values()) > positions[stale], positions
    assert cluster.promoted() == third
