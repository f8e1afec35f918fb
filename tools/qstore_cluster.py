"""`qstore-cluster`: a local cluster manager for one machine (what rgmanager does in the seed).

    qstore-cluster up [--nodes 3] [--base-port 5672] [--data-dir ./data] [--ha-replicate all]
                      [--heartbeat S] [--poll S] [--steady-poll S] [--recovery-wait S]
                      [--auth yes|no]
    qstore-cluster status [--data-dir ./data] [--json]

`up` starts one `qstored` per node (node i: port base-port + i, data in DATA_DIR/node<i>, log in
DATA_DIR/node<i>.log), keeps each running (a broker that dies is restarted: it comes back as a
backup), and keeps exactly one primary (see cluster_manager.py for the rules). It prints each state
change with a timestamp. Ctrl-C or SIGTERM stops every broker cleanly. The same --data-dir again
reuses the journals and the ports (kept in DATA_DIR/cluster.json).

Watching costs little while the cluster is idle: the manager learns of a broker's exit from the
kernel at once (a pidfd per child, see child_watch.py), asks each broker its state over one kept
connection (status_link.py), every --poll seconds while the cluster settles and every
--steady-poll seconds once it is steady (one active primary, the others ready), which only a hung
primary can end unseen.

The brokers run with `--auth yes`: the first `up` creates DATA_DIR/sasl-db with an `admin` user and
the HA user `qstore-ha`, their random passwords in DATA_DIR/credentials (see cluster_auth.py), and
prints how to connect. The brokers get the HA password from a file, never on a command line; the
manager polls and promotes as the HA user. `--auth no` runs an open cluster (anyone may connect,
and do anything, HA operations included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.logfmt import escape_controls
from tools import cluster_auth
from tools._mgmt import ToolError, query_status
from tools.child_watch import ChildWatch
from tools.cluster_manager import Memory, NodeView, Note, Promote, Restart, decide, next_poll
from tools.status_link import StatusLink

STOP_TIMEOUT = 10.0


def stamp() -> str:
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def say(text: str) -> None:
    """One line per event: what a broker answered (a refusal's description) cannot add lines."""
    print(f"{stamp()} {escape_controls(text)}", flush=True)


@dataclass
class Node:
    index: int
    port: int
    data_dir: Path
    link: StatusLink
    proc: subprocess.Popen[bytes] | None = None
    last_state: str | None = "?"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ClusterManager:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(args.data_dir).resolve()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # private when we make it
        saved = self._load()
        base = saved.get("base_port", args.base_port) if saved else args.base_port
        n = saved.get("nodes", args.nodes) if saved else args.nodes
        if saved and (base != args.base_port or n != args.nodes):
            say(f"reusing {self.root}: {n} nodes from port {base} (as first set up)")
        self.auth = args.auth == "yes"
        # How the manager logs in to its brokers (the keywords of query_status and
        # ManagementClient): the HA identity, the only one that may read a backup's status and
        # promote; empty for an open cluster.
        self.login: dict[str, Any] = {}
        self.ha_user = ""
        first = f"127.0.0.1:{base}"
        if self.auth:
            prepared = cluster_auth.ensure(self.root, first)
            creds = prepared.credentials
            self.login = creds.ha_login()
            self.ha_user = creds.ha_user
            for note in prepared.notes:
                say(note)
            made = "created" if prepared.created else "reused"
            say(f"authentication on: users {creds.user} and {creds.ha_user} ({made})")
            say(cluster_auth.connect_line(creds, first, self.root, show=sys.stdout.isatty()))
        else:
            say("authentication off (--auth no): anyone may connect and do anything")
        self.nodes = [
            Node(i, port, self.root / f"node{i}", StatusLink(f"127.0.0.1:{port}", self.login))
            for i, port in enumerate(range(base, base + n))
        ]
        self.url = ",".join(node.address for node in self.nodes)
        self.memory = Memory()
        self.stopping = False
        self.watch = ChildWatch()
        self._save()

    # -- the cluster file ---------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        path = self.root / "cluster.json"
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(path.read_text()))
        return {}

    def _save(self) -> None:
        info = {
            "nodes": len(self.nodes),
            "base_port": self.nodes[0].port,
            "manager_pid": os.getpid(),
            "auth": self.auth,
            "brokers": [
                {"index": n.index, "address": n.address, "pid": n.proc.pid if n.proc else None}
                for n in self.nodes
            ],
        }
        tmp = self.root / "cluster.json.tmp"  # readers never see half a file
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(self.root / "cluster.json")

    # -- brokers ------------------------------------------------------------------------------

    def start(self, node: Node) -> None:
        a = self.args
        cmd = [
            sys.executable, "-m", "broker.main",
            "--name", f"node{node.index}",
            "--interface", "127.0.0.1",
            "--port", str(node.port),
            "--data-dir", str(node.data_dir),
            "--ha-cluster", "yes",
            "--ha-brokers-url", self.url,
            "--ha-replicate", a.ha_replicate,
            "--link-heartbeat-interval", str(a.heartbeat),
            "--link-maintenance-interval", str(min(0.1, a.heartbeat / 4)),
            "--ha-backup-timeout", str(a.backup_timeout),
            "--auto-create", "yes",
        ]  # fmt: skip
        if self.auth:  # the HA password in a file: a command line is for everyone to read
            cmd += [
                "--auth", "yes",
                "--sasl-db", str(self.root / cluster_auth.SASL_DB),
                "--ha-username", self.ha_user,
                "--ha-password-file", str(self.root / cluster_auth.HA_PASSWORD),
            ]  # fmt: skip
        else:
            cmd += ["--auth", "no"]
        node.link.drop()  # a connection to the process before this one, if any
        if node.proc is not None:
            self.watch.forget(node.proc.pid)
        log = open(self.root / f"node{node.index}.log", "ab")  # noqa: SIM115 - child's stdout
        node.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the manager only; it stops them in order
        )
        log.close()
        self.watch.watch(node.proc)
        node.last_state = "?"
        say(f"node{node.index} started: pid {node.proc.pid} on {node.address}")
        self._save()

    def stop_all(self) -> None:
        for node in self.nodes:
            node.link.drop()  # never a polite close: a hung broker would hold it for ever
        for node in self.nodes:
            if node.running():
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
            say(f"node{node.index} stopped (exit {node.proc.returncode})")
        self.watch.close()

    def view(self, node: Node) -> NodeView:
        if node.running():
            st = node.link.status(timeout=max(1.0, 2 * self.args.heartbeat))
        else:
            node.link.drop()
            st = None
        state = str(st["state"]) if st else None
        pos = st.get("position") if st else None
        position = (int(pos[0]), int(pos[1])) if isinstance(pos, list) and len(pos) == 2 else (0, 0)
        if state != node.last_state and not (state is None and node.last_state == "?"):
            where = f" position {list(position)}" if state else ""
            say(f"node{node.index} {node.address}: {state or 'not answering'}{where}")
            node.last_state = state
        return NodeView(node.index, node.running(), state, position)

    def promote(self, node: Node, why: str) -> None:
        say(f"promoting node{node.index} ({why})")
        try:  # over the kept connection: no connection set-up on the fail-over's path
            code, desc, _ = node.link.request("PROMOTE", "ha", timeout=15)
        except ToolError as exc:
            say(f"promote node{node.index} failed: {exc}")
            self.memory.promoting = None
            return
        if code != 200:
            say(f"promote node{node.index} refused: {desc}")
            self.memory.promoting = None

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        for node in self.nodes:
            self.start(node)
        args = self.args
        while not self.stopping:
            views = [self.view(n) for n in self.nodes]
            hung_after = max(2.0, 4 * self.args.heartbeat)
            actions = decide(
                views, time.monotonic(), self.memory, self.args.recovery_wait, hung_after
            )
            # promotes first: a dead broker's restart (a fork and exec) can wait for the new primary
            actions.sort(key=lambda a: not isinstance(a, Promote))
            for a in actions:
                if self.stopping:
                    break
                node = self.nodes[a.index] if not isinstance(a, Note) else None
                match a:
                    case Restart(why=why):
                        assert node is not None
                        say(f"node{node.index}: restarting ({why})")
                        if node.running():
                            assert node.proc is not None
                            node.proc.kill()
                            node.proc.wait()
                        self.start(node)
                    case Promote(why=why):
                        assert node is not None
                        self.promote(node, why)
                    case Note(text=text):
                        if text not in self.memory.noted:
                            self.memory.noted.add(text)
                            say(text)
            if not self.stopping:  # until the interval passes, a broker exits or a signal
                self.watch.wait(next_poll(views, self.memory, args.poll, args.steady_poll))


def seconds(text: str) -> float:
    try:
        v = float(text.rstrip("s"))
    except ValueError:
        v = -1
    if v <= 0:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (seconds > 0)")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qstore-cluster", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    up = sub.add_parser("up", help="start the cluster and manage it until Ctrl-C")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--base-port", type=int, default=5672)
    up.add_argument("--data-dir", default="./data")
    up.add_argument("--ha-replicate", choices=["none", "configuration", "all"], default="all")
    up.add_argument("--heartbeat", type=seconds, default=1.0, help="link heartbeat interval")
    up.add_argument(
        "--poll", type=seconds, default=0.25,
        help="seconds between status polls while the cluster settles",
    )  # fmt: skip
    up.add_argument(
        "--steady-poll", type=seconds, default=1.0,
        help="seconds between status polls while the cluster is steady (a broker's exit is seen "
        "at once; this bounds how soon a hung primary is noticed)",
    )  # fmt: skip
    up.add_argument("--backup-timeout", type=seconds, default=10.0)
    up.add_argument(
        "--recovery-wait", type=seconds, default=10.0,
        help="after a total failure, wait this long for every node before promoting the best",
    )  # fmt: skip
    up.add_argument(
        "--auth", choices=["yes", "no"], default="yes",
        help="yes (default): brokers require a login; users and passwords made in DATA_DIR on "
        "first start (DATA_DIR/credentials). no: an open cluster",
    )  # fmt: skip
    st = sub.add_parser("status", help="print the table of brokers")
    st.add_argument("--data-dir", default="./data")
    st.add_argument("--json", action="store_true")
    return p


def status(args: argparse.Namespace) -> int:
    root = Path(args.data_dir)
    path = root / "cluster.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"qstore-cluster: no cluster in {args.data_dir} (no {path})", file=sys.stderr)
        return 2
    login: dict[str, Any] = {}
    # as the HA user, as the manager does (a backup answers no one else); a cluster.json from
    # before authentication has no "auth": the credentials file says then
    if info.get("auth", (root / cluster_auth.CREDENTIALS).exists()):
        try:
            login = cluster_auth.load(root).ha_login()
        except cluster_auth.CredentialsError as exc:
            print(f"qstore-cluster: {exc}", file=sys.stderr)
            return 2
    rows = []
    for b in info.get("brokers", []):
        st = query_status(b["address"], timeout=2.0, **login)
        rows.append(
            {
                "node": b["index"],
                "address": b["address"],
                "pid": b.get("pid"),
                "state": st["state"] if st else "not answering",
                "position": st.get("position") if st else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'NODE':<6}{'ADDRESS':<18}{'PID':<9}{'STATE':<16}POSITION")
    for r in rows:
        pos = "-" if r["position"] is None else f"({r['position'][0]}, {r['position'][1]})"
        node = f"node{r['node']}"
        print(f"{node:<6}{r['address']:<18}{r['pid'] or '-'!s:<9}{r['state']:<16}{pos}")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.verb == "status":
        sys.exit(status(args))
    if args.nodes < 1 or not 0 < args.base_port < 65536 - args.nodes:
        print("qstore-cluster: error: --nodes must be >= 1 and the ports within 1..65535",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    try:
        manager = ClusterManager(args)
    except cluster_auth.CredentialsError as exc:
        print(f"qstore-cluster: {escape_controls(str(exc))}", file=sys.stderr)
        sys.exit(2)

    def on_signal(signum: int, _frame: Any) -> None:
        manager.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        manager.run()
    finally:
        say("stopping every broker")
        manager.stop_all()
    sys.exit(0)


if __name__ == "__main__":
    main()
