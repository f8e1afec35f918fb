"""A single-node Corosync + Pacemaker cluster running `ocf:qstore:qstored` as a globally-unique
promotable clone of N brokers on 127.0.0.1, for the tests and the fail-over benchmark.

It runs in a private mount namespace (`unshare -m`): Pacemaker's state directories and the OCF
agents directory are fresh ones under ROOT/root, so each run starts with an empty CIB, and nothing
is written outside ROOT. The CIB is seeded with the cluster options a one-node cluster needs
(stonith off, no quorum policy ignore, dc-deadtime 2s) and the clone. Root only, one such cluster
per network namespace (Pacemaker's IPC names are fixed). shared/notes/pacemaker.md has the how and
why. Corosync, Pacemaker and the namespace are stopped by their pids, the brokers by theirs.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tools import cluster_auth
from tools._mgmt import query_status
from tools.qstore_ocf import install

TOOLS = ("corosync", "pacemakerd", "crm_mon", "cibadmin", "crm_attribute", "unshare")
INSTALL = "apt-get install -y pacemaker corosync resource-agents (Debian; as root)"
FAST = (
    "--ha-replicate all --link-maintenance-interval 0.1 --link-heartbeat-interval 2 "
    "--ha-backup-timeout 3"
)
NODE = os.uname().nodename
PRIMARY = ("recovering", "active")


def unavailable() -> str | None:
    """Why such a cluster cannot run here, or None."""
    if os.geteuid() != 0:
        return "Pacemaker runs as root: not root"
    lacking = [t for t in TOOLS if shutil.which(t) is None]
    if lacking:
        return f"{', '.join(lacking)} not installed: {INSTALL}"
    if subprocess.run(["crm_mon", "-1"], capture_output=True, timeout=10).returncode == 0:
        return "a Pacemaker cluster already runs on this machine (one per network namespace)"
    return None


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


def clone_xml(
    params: dict[str, str], nodes: int, promoted_monitor: str, on_fail: str = "demote"
) -> str:
    attrs = "\n".join(
        f'        <nvpair id="qstored-ia-{k}" name="{k}" value="{v}"/>' for k, v in params.items()
    )
    meta = {
        "promotable": "true",
        "clone-max": str(nodes),
        "clone-node-max": str(nodes),
        "promoted-max": "1",
        "promoted-node-max": "1",
        "globally-unique": "true",  # else only one instance per node
        "notify": "false",  # the agent learns nothing from them, and each round costs time
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
        <op id="qstored-mon-p" name="monitor" interval="{promoted_monitor}" role="Promoted"
            timeout="20s" on-fail="{on_fail}"/>
        <op id="qstored-mon-u" name="monitor" interval="2s" role="Unpromoted" timeout="20s"/>
      </operations>
    </primitive>
  </clone>
"""


def seed_cib(clone: str, load_threshold: str | None = None) -> str:
    empty = subprocess.run(
        ["cibadmin", "--empty"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    options = """<crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="opt-stonith" name="stonith-enabled" value="false"/>
        <nvpair id="opt-quorum" name="no-quorum-policy" value="ignore"/>
        <nvpair id="opt-dc" name="dc-deadtime" value="2s"/>{load}
      </cluster_property_set>
    </crm_config>"""
    load = (
        f'\n        <nvpair id="opt-load" name="load-threshold" value="{load_threshold}"/>'
        if load_threshold
        else ""
    )
    options = options.replace("{load}", load)
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
# the log goes where the daemons that run as hacluster can write it too ($W is root's alone):
# $W/root/vlogp/pacemaker.log from outside
export PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none
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


class PacemakerCluster:
    """Start it; `stop()` always (it stops Pacemaker, Corosync, the namespace and the brokers).

    `auth`: the brokers require a login (made as `qstore-cluster up` makes it:
    cluster_auth.ensure), and the agent probes and promotes as the HA identity."""

    def __init__(
        self,
        root: Path,
        base_port: int,
        nodes: int = 3,
        *,
        auth: bool = False,
        options: str = FAST,
        promoted_monitor: str = "1s",
        promoted_on_fail: str = "demote",
        load_threshold: str | None = None,
    ) -> None:
        self.root = root
        self.nodes = nodes
        self.addresses = [f"127.0.0.1:{base_port + i}" for i in range(nodes)]
        self.data = root / "data"
        (root / "log").mkdir(parents=True, exist_ok=True)
        self.credentials: cluster_auth.ClusterCredentials | None = None
        params = {
            "data_dir": str(self.data),
            "interface": "127.0.0.1",
            "port": str(base_port),
            "per_clone": "yes",
            "ha_brokers_url": "amqp:" + ",".join(self.addresses),
            "options": "--auth no --auto-create yes " + options,
            "status_timeout": "1",
        }
        if auth:
            self.credentials = cluster_auth.ensure(root, self.addresses[0]).credentials
            params |= {
                "ha_username": self.credentials.ha_user,
                "ha_password_file": str(root / cluster_auth.HA_PASSWORD),
                "options": f"--auth yes --sasl-db {root / cluster_auth.SASL_DB} "
                f"--auto-create yes {options}",
            }
        self._ha_login = self.credentials.ha_login() if self.credentials else {}
        clone = clone_xml(params, nodes, promoted_monitor, promoted_on_fail)
        (root / "cib.xml").write_text(seed_cib(clone, load_threshold))
        (root / "corosync.conf").write_text(corosync_conf(root / "log"))
        install(root / "agent", sys.executable)
        shutil.copy(root / "agent" / "qstored", root / "qstored")
        (root / "ns.sh").write_text(NS_SCRIPT)
        self._pool = ThreadPoolExecutor(nodes)
        self._log = open(root / "log" / "ns.out", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", str(root / "ns.sh"), str(root)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def client_options(self) -> dict[str, Any]:
        """Login keywords of `qstore.client.Connection` (none for an open cluster)."""
        return self.credentials.client_options() if self.credentials else {}

    # -- what Pacemaker says ----------------------------------------------------------------------

    def _crm_mon(self) -> ET.Element | None:
        out = subprocess.run(
            ["crm_mon", "-1", "-r", "--output-as=xml"], capture_output=True, text=True, timeout=10
        )
        return ET.fromstring(out.stdout) if out.returncode == 0 else None

    def roles(self) -> dict[int, str]:
        """Clone instance -> role ("Promoted", "Unpromoted", "Stopped") as crm_mon shows it."""
        mon = self._crm_mon()
        roles: dict[int, str] = {}
        for r in mon.iter("resource") if mon is not None else ():
            rid = r.get("id") or ""
            if rid.startswith("qstored:") and r.get("failed") != "true":
                roles[int(rid.split(":")[1])] = r.get("role") or ""
        return roles

    def promoted(self) -> list[int]:
        return sorted(i for i, role in self.roles().items() if role == "Promoted")

    def maintenance(self, on: bool) -> None:
        """Cluster option maintenance-mode: Pacemaker leaves the brokers alone while on."""
        subprocess.run(
            ["crm_attribute", "--type", "crm_config", "--name", "maintenance-mode",
             "--update", "true" if on else "false"],
            capture_output=True, timeout=10, check=True,
        )  # fmt: skip

    def in_maintenance(self) -> bool:
        mon = self._crm_mon()
        opts = mon.find(".//cluster_options") if mon is not None else None
        return opts is not None and opts.get("maintenance-mode") == "true"

    # -- what the brokers say ---------------------------------------------------------------------

    def status(self, i: int) -> dict[str, Any] | None:
        return query_status(self.addresses[i], 2, **self._ha_login)

    def state(self, i: int) -> str | None:
        st = self.status(i)
        return None if st is None else str(st["state"])

    def position(self, i: int) -> tuple[int, int] | None:
        st = self.status(i)
        return None if st is None else (int(st["position"][0]), int(st["position"][1]))

    def states(self) -> list[str | None]:
        """Each broker's HA state, asked in parallel (a silent broker costs one timeout)."""
        return list(self._pool.map(self.state, range(self.nodes)))

    def whole(self, timeout: float) -> list[str | None]:
        """Wait for one active primary and every other broker ready; TimeoutError after
        `timeout`, RuntimeError if the cluster's namespace exits."""
        deadline = time.monotonic() + timeout
        states: list[str | None] = []
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Pacemaker's namespace exited ({self.proc.returncode})")
            states = self.states()
            if states.count("active") == 1 and states.count("ready") == self.nodes - 1:
                return states
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout:g}s waiting for a whole cluster: {states}")

    def pid(self, i: int) -> int:
        return int((self.data / f"inst{i}" / "ocf-state" / "pid").read_text())

    def kill(self, i: int) -> None:
        """SIGKILL broker `i`."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid(i), signal.SIGKILL)

    def stop(self) -> None:
        for name, timeout in (("pacemakerd", 60.0), ("corosync", 30.0)):
            with contextlib.suppress(OSError, ValueError):
                _stop_pid(int((self.root / f"{name}.pid").read_text()), timeout)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for i in range(self.nodes):  # what Pacemaker did not stop
            with contextlib.suppress(OSError, ValueError):
                pid = self.pid(i)
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if os.fsencode(str(self.data / f"inst{i}")) in cmd:
                    os.kill(pid, signal.SIGKILL)
        self._pool.shutdown(wait=False)
        self._log.close()
