"""`ocf:qstore:qstored`: a qstore broker as one instance of a Pacemaker promotable clone.

Pacemaker runs the installed `qstored` wrapper with the action as argv[1] and the parameters as
OCF_RESKEY_* (OCF 1.1); the wrapper runs this module with the interpreter of the `python`
parameter, an absolute path, because Pacemaker passes its own environment (and PATH) through.

The broker is what the seed's cluster manager starts (1.12.10): `qstored --ha-cluster yes`, one per
clone instance, which comes up as a backup (`joining`). The agent asks it over AMQP what it is (the
same `READ ha` request as `qstore-ha status`, with the HA identity), never trusts a pid alone (a
killed broker's zombie passes `kill -0`), promotes with the request of `qstore-ha
--cluster-manager promote`, and publishes its promotion score (see `decide`). Its files live in
DATA_DIR/ocf-state: the broker's pid, `promoted` while this instance is the primary, `started`
(when it was started) and `score` (the last promotion score set, for people and tests: Pacemaker
keeps its own copy in the CIB).

Exit codes are the OCF ones (`decide.Rc`); every error is one line on stderr, which Pacemaker puts
in its log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from qstore.secrets import SecretError, read_password_file
from qstore.urls import UrlError, parse_client_url
from tools._errors import UsageError
from tools._login import Login
from tools._mgmt import ToolError
from tools.cluster_manager import NodeView
from tools.ocf.decide import (
    BACKUP_STATES,
    PRIMARY_STATES,
    SCORE_PRIMARY,
    Rc,
    monitor_rc,
    promotion_score,
)
from tools.qstore_ha import addresses_of, connect, read_status

log = logging.getLogger("qstore.ocf")

AGENT = "qstored"
VERSION = "0.1.0"
WILDCARDS = ("0.0.0.0", "::", "")
CRM_ATTRIBUTE = ("/usr/sbin/crm_attribute", "/usr/bin/crm_attribute")
_POLL = 0.1


class Invalid(Exception):
    """A parameter that cannot work: one line, and the OCF code to exit with."""

    def __init__(self, rc: Rc, text: str) -> None:
        super().__init__(text)
        self.rc = rc


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    default: str
    short: str
    long: str
    required: bool = False
    kind: str = "string"


PARAMS: tuple[Param, ...] = (
    Param(
        "python",
        sys.executable,
        "Python interpreter (absolute path)",
        "The interpreter of the environment qstore is installed in, as an absolute path: "
        "Pacemaker passes its own PATH. It runs this agent and, without `binary`, the broker "
        "(python -m broker.main). `qstore-ocf install` makes the interpreter it ran under the "
        "default.",
    ),
    Param(
        "binary",
        "",
        "qstored executable (absolute path)",
        "Run the broker with this executable instead of `python -m broker.main`.",
    ),
    Param(
        "data_dir",
        "",
        "Data directory",
        "The broker's data directory (journal and lock); the agent keeps its own files in "
        "DATA_DIR/ocf-state. With per_clone=yes, instance N uses DATA_DIR/instN.",
        required=True,
    ),
    Param("interface", "0.0.0.0", "Listen address", "The address the broker listens on."),
    Param(
        "port",
        "5672",
        "AMQP port",
        "The broker's AMQP port; with per_clone=yes, instance N listens on PORT+N.",
        kind="integer",
    ),
    Param(
        "ha_brokers_url",
        "",
        "--ha-brokers-url",
        "The URL the brokers use to reach each other: every broker of the cluster, for example "
        "amqp:host1:5672,host2:5672,host3:5672.",
        required=True,
    ),
    Param(
        "ha_username",
        "qstore-ha",
        "HA user",
        "The HA identity (seed 1.12.9): the brokers' links, and the agent's status probes and "
        "promotes, log in as this user.",
    ),
    Param(
        "ha_password_file",
        "",
        "HA password file",
        "A file whose first line is the HA user's password (the broker's --ha-password-file). "
        "Empty: no HA identity (a broker with --auth no).",
    ),
    Param(
        "name",
        "",
        "Broker name",
        "The broker's --name (default: this host's name, with -N for instance N when "
        "per_clone=yes); each broker of a cluster needs its own.",
    ),
    Param(
        "ha_replicate",
        "all",
        "--ha-replicate",
        "Default replication of queues and exchanges: all (as qstore-cluster), configuration or "
        "none. With none, only queues declared with qpid.replicate survive a fail-over.",
    ),
    Param(
        "options", "", "Extra qstored options", "More qstored options, as a shell would split them."
    ),
    Param(
        "per_clone",
        "no",
        "One port and data directory per clone instance",
        "yes: instance N (OCF_RESKEY_CRM_meta_clone) listens on PORT+N with data DATA_DIR/instN, "
        "for several instances on one host (tests).",
        kind="boolean",
    ),
    Param(
        "status_timeout",
        "3",
        "Status probe timeout (s)",
        "How long the broker has to answer a status probe; a primary that does not answer in "
        "time is a failed primary (9).",
    ),
    Param(
        "stop_timeout",
        "20",
        "Stop timeout (s)",
        "Seconds between SIGTERM and SIGKILL on stop (never more than the stop action's timeout).",
    ),
    Param(
        "recovery_wait",
        "10",
        "Recovery wait (s)",
        "After a total failure, how long a joining broker waits for silent peers before it may "
        "win the promotion on the journals that answered (as qstore-cluster --recovery-wait).",
    ),
)


def meta_data(python: str = sys.executable) -> str:
    """The OCF 1.1 meta-data; `python` is the default shown for the `python` parameter."""
    defaults = {p.name: p.default for p in PARAMS} | {"python": python}
    params = "\n".join(
        f'  <parameter name="{p.name}" unique="0" required="{int(p.required)}">\n'
        f'    <longdesc lang="en">{_xml(p.long)}</longdesc>\n'
        f'    <shortdesc lang="en">{_xml(p.short)}</shortdesc>\n'
        f'    <content type="{p.kind}" default="{_xml(defaults[p.name])}"/>\n'
        "  </parameter>"
        for p in PARAMS
    )
    return f"""<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="{AGENT}" version="{VERSION}">
<version>1.1</version>
<longdesc lang="en">A qstore AMQP 1.0 broker (qstored --ha-cluster yes) as one instance of a
promotable clone: Pacemaker starts every instance as a backup and promotes one to primary. Use a
clone with promoted-max=1 and monitor operations for both roles.</longdesc>
<shortdesc lang="en">qstore HA broker</shortdesc>
<parameters>
{params}
</parameters>
<actions>
  <action name="start" timeout="60s"/>
  <action name="stop" timeout="30s"/>
  <action name="promote" timeout="30s"/>
  <action name="demote" timeout="60s"/>
  <action name="monitor" timeout="20s" interval="1s" depth="0" role="Promoted"/>
  <action name="monitor" timeout="20s" interval="2s" depth="0" role="Unpromoted"/>
  <action name="notify" timeout="20s"/>
  <action name="meta-data" timeout="5s"/>
  <action name="validate-all" timeout="20s"/>
</actions>
</resource-agent>
"""


def _xml(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


# -- configuration --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    python: str
    binary: str
    data_dir: Path
    interface: str
    port: int
    brokers_url: str
    ha_username: str
    ha_password_file: str
    ha_password: str | None = dataclasses.field(repr=False)
    name: str
    ha_replicate: str
    options: tuple[str, ...]
    clone: int
    status_timeout: float
    stop_timeout: float
    recovery_wait: float
    action_timeout: float | None  # this action's timeout from Pacemaker, seconds
    probe: bool  # a monitor with interval 0: look only, change nothing

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "ocf-state"

    @property
    def address(self) -> str:
        """Where the agent reaches its own broker."""
        host = "127.0.0.1" if self.interface in WILDCARDS else self.interface
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def login(self, address: str | None = None) -> Login:
        addresses = parse_client_url(address or self.address).addresses
        if self.ha_password is None:
            return Login(addresses)
        return Login(addresses, self.ha_username, self.ha_password, "PLAIN")

    def command(self) -> list[str]:
        head = [self.binary] if self.binary else [self.python, "-m", "broker.main"]
        cmd = [
            *head,
            "--name", self.name,
            "--interface", self.interface,
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--ha-cluster", "yes",
            "--ha-brokers-url", self.brokers_url,
            "--ha-replicate", self.ha_replicate,
        ]  # fmt: skip
        if self.ha_password is not None:
            cmd += ["--ha-username", self.ha_username, "--ha-password-file", self.ha_password_file]
        return cmd + list(self.options)


def _number(env: Mapping[str, str], name: str, default: str) -> float:
    text = env.get(f"OCF_RESKEY_{name}") or default
    try:
        value = float(text.strip().removesuffix("s"))
    except ValueError:
        value = -1.0
    if not value > 0:
        raise Invalid(Rc.ERR_CONFIGURED, f"{name}={text!r}: expected a number of seconds > 0")
    return value


def _absolute_executable(name: str, path: str) -> None:
    if not os.path.isabs(path):
        raise Invalid(Rc.ERR_CONFIGURED, f"{name}={path!r}: must be an absolute path")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise Invalid(Rc.ERR_INSTALLED, f"{name}={path}: no such executable file")


def load_config(env: Mapping[str, str]) -> Config:
    """The parameters, checked (what validate-all reports): `Invalid` for the first bad one."""

    def get(name: str) -> str:
        default = next(p.default for p in PARAMS if p.name == name)
        return (env.get(f"OCF_RESKEY_{name}") or default).strip()

    python, binary = get("python"), get("binary")
    _absolute_executable("python", python)
    if binary:
        _absolute_executable("binary", binary)
    data_text = get("data_dir")
    if not data_text:
        raise Invalid(Rc.ERR_CONFIGURED, "data_dir is required")
    if not os.path.isabs(data_text):
        raise Invalid(Rc.ERR_CONFIGURED, f"data_dir={data_text!r}: must be an absolute path")
    url = get("ha_brokers_url")
    if not url:
        raise Invalid(Rc.ERR_CONFIGURED, "ha_brokers_url is required")
    try:
        parse_client_url(url)
    except UrlError as exc:
        raise Invalid(Rc.ERR_CONFIGURED, f"ha_brokers_url: {exc}") from None
    port_text = get("port")
    if not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise Invalid(Rc.ERR_CONFIGURED, f"port={port_text!r}: expected 1..65535")
    per_clone_text = get("per_clone").lower()
    if per_clone_text not in ("yes", "no", "true", "false", "1", "0"):
        raise Invalid(Rc.ERR_CONFIGURED, f"per_clone={per_clone_text!r}: expected yes or no")
    per_clone = per_clone_text in ("yes", "true", "1")
    clone_text = env.get("OCF_RESKEY_CRM_meta_clone") or "0"
    clone = int(clone_text) if clone_text.isdigit() else 0
    port = int(port_text) + (clone if per_clone else 0)
    if port > 65535:
        raise Invalid(Rc.ERR_CONFIGURED, f"port {port_text} + instance {clone} is above 65535")
    data_dir = Path(data_text) / f"inst{clone}" if per_clone else Path(data_text)
    password_file = get("ha_password_file")
    password = None
    if password_file:
        try:
            password = read_password_file(password_file)
        except SecretError as exc:
            raise Invalid(Rc.ERR_CONFIGURED, f"ha_password_file: {exc}") from None
    try:
        options = tuple(shlex.split(get("options")))
    except ValueError as exc:
        raise Invalid(Rc.ERR_CONFIGURED, f"options: {exc}") from None
    name = get("name") or os.uname().nodename + (f"-{clone}" if per_clone else "")
    replicate = get("ha_replicate")
    if replicate not in ("all", "configuration", "none"):
        raise Invalid(
            Rc.ERR_CONFIGURED, f"ha_replicate={replicate!r}: expected all, configuration or none"
        )
    timeout_ms = env.get("OCF_RESKEY_CRM_meta_timeout", "")
    interval = env.get("OCF_RESKEY_CRM_meta_interval", "0")
    return Config(
        python=python,
        binary=binary,
        data_dir=data_dir,
        interface=get("interface"),
        port=port,
        brokers_url=url,
        ha_username=get("ha_username"),
        ha_password_file=password_file,
        ha_password=password,
        name=name,
        ha_replicate=replicate,
        options=options,
        clone=clone,
        status_timeout=_number(env, "status_timeout", "3"),
        stop_timeout=_number(env, "stop_timeout", "20"),
        recovery_wait=_number(env, "recovery_wait", "10"),
        action_timeout=int(timeout_ms) / 1000 if timeout_ms.isdigit() else None,
        probe=interval in ("", "0"),
    )


# -- the broker's process -------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def broker_pid(cfg: Config) -> int | None:
    """The pid of this instance's broker if it is alive: a zombie is dead, and a pid the OS gave
    to another process since (its command line does not name our data directory) is not ours."""
    text = _read(cfg.state_dir / "pid")
    if not text or not text.isdigit():
        return None
    pid = int(text)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return None
    return pid if os.fsencode(str(cfg.data_dir)) in cmdline else None


def probe(
    cfg: Config, address: str | None = None, timeout: float | None = None
) -> dict[str, Any] | None:
    """A broker's HA status over AMQP (`READ ha`, as `qstore-ha status`), None without an answer."""
    try:
        with connect(cfg.login(address), timeout or cfg.status_timeout) as client:
            return read_status(client)
    except (ToolError, UsageError):
        return None


def _state(st: dict[str, Any] | None) -> str | None:
    return None if st is None else str(st["state"])


def _position(st: dict[str, Any]) -> tuple[int, int]:
    pos = st.get("position")
    if isinstance(pos, (list, tuple)) and len(pos) == 2:
        return int(pos[0]), int(pos[1])
    return (0, 0)


# -- promotion scores -----------------------------------------------------------------------------


def set_score(cfg: Config, score: int | None) -> None:
    """Publish the promotion score (None: delete it). Outside a cluster crm_attribute fails
    (rc 102, in milliseconds) or is not installed: the score file still says what was meant."""
    path = cfg.state_dir / "score"
    if score is None:
        path.unlink(missing_ok=True)
    else:
        _write(path, str(score))
    tool = next((t for t in CRM_ATTRIBUTE if os.access(t, os.X_OK)), shutil.which("crm_attribute"))
    if tool is None:
        return
    args = [tool, "--promotion", "-D"] if score is None else [tool, "--promotion", "-v", str(score)]
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)


def score_of(cfg: Config, st: dict[str, Any]) -> int | None:
    """This running broker's score; the peers are asked only when it is joining."""
    state = _state(st)
    me = NodeView(-1, True, state, _position(st))
    peers: list[NodeView] = []
    if state == "joining":
        try:
            addresses = [str(a) for a in addresses_of(str(st.get("brokers_url") or ""))]
        except ToolError:
            addresses = []
        timeout = min(cfg.status_timeout, 2.0)
        with ThreadPoolExecutor(max(1, len(addresses))) as pool:  # one timeout, not one per peer
            answers = list(pool.map(lambda a: probe(cfg, a, timeout), addresses))
        for i, peer in enumerate(answers):
            if peer is not None and peer.get("name") == st.get("name"):
                me = dataclasses.replace(me, index=i)
                continue
            peers.append(NodeView(i, peer is not None, _state(peer), _position(peer or {})))
        if me.index < 0:
            me = dataclasses.replace(me, index=len(addresses))
    started = _read(cfg.state_dir / "started")
    waited = time.time() - float(started) if started else 0.0
    return promotion_score(me, peers, waited, cfg.recovery_wait)


# -- actions --------------------------------------------------------------------------------------


def _deadline(cfg: Config, default: float) -> float:
    """When this action must be done: a second before Pacemaker's timeout for it."""
    budget = cfg.action_timeout - 1 if cfg.action_timeout else default
    return time.monotonic() + max(1.0, budget)


def monitor(cfg: Config) -> Rc:
    pid = broker_pid(cfg)
    st = probe(cfg) if pid is not None else None
    was_primary = (cfg.state_dir / "promoted").exists()
    rc = monitor_rc(pid is not None, _state(st), was_primary)
    if rc == Rc.FAILED_PROMOTED:
        log.error("primary broker pid %s does not answer within %gs", pid, cfg.status_timeout)
    elif rc == Rc.ERR_GENERIC:
        what = "does not answer" if st is None else f"is {_state(st)}, not a cluster member"
        log.error("broker pid %s %s", pid, what)
    if cfg.probe:
        return rc
    if st is not None and rc in (Rc.SUCCESS, Rc.RUNNING_PROMOTED):
        set_score(cfg, score_of(cfg, st))
    else:
        # dead, silent or not a member: its score goes before Pacemaker sees the failure, or
        # with on-fail=demote it would promote the failed instance again (the top score wins)
        set_score(cfg, None)
    return rc


def start(cfg: Config) -> Rc:
    """Start the broker and return once it answers as a backup (joining or catch-up): not after it
    caught up, because Pacemaker restarts a failed instance before it promotes another."""
    pid = broker_pid(cfg)
    if pid is not None:
        st = probe(cfg)
        if _state(st) in (*BACKUP_STATES, *PRIMARY_STATES):
            return Rc.SUCCESS
        log.error("broker pid %s runs but is %s", pid, _state(st) or "not answering")
        return Rc.ERR_GENERIC
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    (cfg.state_dir / "promoted").unlink(missing_ok=True)
    _write(cfg.state_dir / "started", repr(time.time()))
    logfile = cfg.data_dir / "qstored.log"
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            cfg.command(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in Pacemaker's process group, not killed with the agent
            cwd=str(cfg.data_dir),
        )
    _write(cfg.state_dir / "pid", str(proc.pid))
    deadline = _deadline(cfg, 60.0)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.error("qstored exited with %s at start; see %s", proc.returncode, logfile)
            (cfg.state_dir / "pid").unlink(missing_ok=True)
            return Rc.ERR_GENERIC
        st = probe(cfg, timeout=min(1.0, cfg.status_timeout))
        if _state(st) in BACKUP_STATES:
            assert st is not None
            set_score(cfg, score_of(cfg, st))
            log.info("started qstored pid %s on %s as %s", proc.pid, cfg.address, _state(st))
            return Rc.SUCCESS
        if st is not None:
            log.error("qstored on %s started as %s, not as a backup", cfg.address, _state(st))
            return Rc.ERR_GENERIC
        time.sleep(_POLL)
    log.error("qstored pid %s did not answer on %s in time; see %s", proc.pid, cfg.address, logfile)
    return Rc.ERR_GENERIC


def stop(cfg: Config, grace: bool = True) -> Rc:
    """SIGTERM, then SIGKILL after stop_timeout (at once without `grace`); success if it was not
    running."""
    pid = broker_pid(cfg)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        term_until = min(
            time.monotonic() + (cfg.stop_timeout if grace else 0.0),
            _deadline(cfg, cfg.stop_timeout + 5) - 2,
        )
        while broker_pid(cfg) is not None and time.monotonic() < term_until:
            time.sleep(_POLL)
        if broker_pid(cfg) is not None:
            log.warning("qstored pid %s ignored SIGTERM: SIGKILL", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            kill_until = time.monotonic() + 5
            while broker_pid(cfg) is not None and time.monotonic() < kill_until:
                time.sleep(_POLL)
            if broker_pid(cfg) is not None:
                log.error("qstored pid %s survived SIGKILL", pid)
                return Rc.ERR_GENERIC
        log.info("stopped qstored pid %s", pid)
    for name in ("pid", "promoted", "started"):
        (cfg.state_dir / name).unlink(missing_ok=True)
    set_score(cfg, None)
    return Rc.SUCCESS


def promote(cfg: Config) -> Rc:
    """`qstore-ha --cluster-manager promote` (the same request), then wait until it is primary."""
    if broker_pid(cfg) is None:
        log.error("promote: qstored is not running")
        return Rc.ERR_GENERIC
    st = probe(cfg)
    if _state(st) not in PRIMARY_STATES:
        deadline = _deadline(cfg, 30.0)
        try:
            with connect(cfg.login(), max(1.0, deadline - time.monotonic())) as client:
                client.call("PROMOTE", "ha")
        except (ToolError, UsageError) as exc:
            log.error("promote refused: %s", exc)
            return Rc.ERR_GENERIC
        while _state(st) not in PRIMARY_STATES:
            if time.monotonic() >= deadline:
                log.error("promote: the broker did not become primary in time")
                return Rc.ERR_GENERIC
            time.sleep(_POLL)
            st = probe(cfg)
    _write(cfg.state_dir / "promoted", str(os.getpid()))
    set_score(cfg, SCORE_PRIMARY)
    log.info("promoted qstored on %s (%s)", cfg.address, _state(st))
    return Rc.SUCCESS


def demote(cfg: Config) -> Rc:
    """A broker cannot step down in place: a primary is restarted as a backup.

    A failed primary is only killed (alive, silent), at once, or found dead: this demote is on the
    fail-over's critical path (with the Promoted monitor's on-fail=demote, Pacemaker promotes
    another instance right after it, and stops and starts the failed one afterwards), so the
    agent neither restarts it here nor waits on a SIGTERM that a hung process cannot act on (the
    journal is crash-safe)."""
    running = broker_pid(cfg) is not None
    state = _state(probe(cfg)) if running else None
    rc = monitor_rc(running, state, (cfg.state_dir / "promoted").exists())
    (cfg.state_dir / "promoted").unlink(missing_ok=True)
    if rc in (Rc.NOT_RUNNING, Rc.SUCCESS):
        return Rc.SUCCESS  # nothing to demote (a dead primary is demoted, then stopped)
    if rc == Rc.FAILED_PROMOTED:
        return stop(cfg, grace=False)
    if stop(cfg) != Rc.SUCCESS:
        return Rc.ERR_GENERIC
    return start(cfg)


def notify(cfg: Config, env: Mapping[str, str]) -> Rc:
    kind = env.get("OCF_RESKEY_CRM_meta_notify_type", "")
    op = env.get("OCF_RESKEY_CRM_meta_notify_operation", "")
    log.debug("notify %s-%s", kind, op)
    return Rc.SUCCESS


USAGE = f"usage: {AGENT} {{start|stop|monitor|promote|demote|notify|meta-data|validate-all}}"


def run(action: str, env: Mapping[str, str]) -> Rc:
    if action == "meta-data":
        sys.stdout.write(meta_data())
        return Rc.SUCCESS
    if action in ("usage", "help"):
        print(USAGE)
        return Rc.SUCCESS
    actions = {
        "start": start,
        "stop": stop,
        "monitor": monitor,
        "promote": promote,
        "demote": demote,
        "validate-all": lambda cfg: Rc.SUCCESS,
        "notify": lambda cfg: notify(cfg, env),
    }
    if action not in actions:
        print(USAGE, file=sys.stderr)
        return Rc.ERR_UNIMPLEMENTED
    try:
        cfg = load_config(env)
    except Invalid as exc:
        log.error("%s", exc)
        return exc.rc
    return actions[action](cfg)


def main() -> None:
    instance = os.environ.get("OCF_RESOURCE_INSTANCE", AGENT)
    action = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("__OCF_ACTION", "")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"{AGENT}({instance}) {action}: %(levelname)s %(message)s",
    )
    logging.getLogger("proton").setLevel(logging.WARNING)  # a line per connect is noise here
    sys.exit(int(run(action, os.environ)))


if __name__ == "__main__":
    main()
