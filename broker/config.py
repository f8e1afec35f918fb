"""The options of `qstored`: command line, `--config FILE`, validation, the frozen `BrokerConfig`.

Names and meanings follow the seed's broker (section 1.12.3). A value is taken from, in rising
order of precedence: the built-in default, the `--config` file, the command line. The file holds
`key=value` lines whose keys are the long option names without the dashes (`ha-cluster=yes`);
lines starting with `#` and blank lines are ignored; a key may appear once. Relative paths, in the
file as on the command line, are relative to the working directory (as with the seed's broker).

Every bad input becomes a `ConfigError` with one line naming the option (or the file, line and
key) and the value; `main_parse` prints it as `qstored: error: ...` and exits 2. Passwords are never
echoed: not in errors, not in `repr`, not in `to_dict`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from qstore.urls import MASK, BrokerUrl, UrlError, mask_password, parse_host, parse_url

PROG = "qstored"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
REPLICATE_LEVELS = ("none", "configuration", "all")
MIN_FRAME_SIZE = 512  # AMQP 1.0 MIN-MAX-FRAME-SIZE
MIN_JOURNAL_SIZE = 1 << 20
MAX_SESSIONS = 32768  # proton's most channels (PN_IMPL_CHANNEL_MAX + 1)
DEFAULT_SSL_PORT = 5671
DEFAULT_QUEUE_LIMIT = 100 << 20  # qpidd's --default-queue-limit (104857600 bytes)


class ConfigError(Exception):
    """A bad option, value or config file line. `usage`: argparse's usage line helps the reader."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(" ".join(message.splitlines()))
        self.usage = usage


@dataclass(frozen=True)
class Share:
    """A share of the machine's memory (`--max-memory 40%`), turned into bytes at start-up
    (`broker.sysmem.max_memory`), where the machine is known."""

    percent: float

    def __str__(self) -> str:
        return f"{self.percent:g}%"


DEFAULT_MAX_MEMORY = Share(40)  # RabbitMQ's vm_memory_high_watermark 0.4


def default_name(interface: str, port: int) -> str:
    """The broker name used when --name is not given: where it listens."""
    return f"[{interface}]:{port}" if ":" in interface else f"{interface}:{port}"


@dataclass(frozen=True)
class BrokerConfig:
    """Everything `qstored` was told, typed and checked. Durations are float seconds."""

    port: int = 5672  # 0: the OS chooses; see port_file and bound()
    interface: str = "127.0.0.1"
    data_dir: Path = Path("data")
    config: Path | None = None
    name: str = ""  # "" here means default_name(interface, port)
    name_given: bool = False
    ha_cluster: bool = False
    ha_brokers_url: BrokerUrl | None = None
    ha_public_url: BrokerUrl | None = None
    ha_replicate: str = "none"
    ha_queue_replication: bool = False
    ha_username: str | None = None
    ha_password: str | None = field(default=None, repr=False)
    ha_mechanism: str | None = None
    ha_password_file: Path | None = None
    ha_backup_timeout: float = 10.0
    link_maintenance_interval: float = 2.0
    link_heartbeat_interval: float = 120.0
    auth: bool = True
    sasl_db: Path | None = None
    acl_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_key_password_file: Path | None = None
    ssl_port: int | None = None  # None: 5671 when a certificate is given, else no TLS listener
    ssl_ca_file: Path | None = None
    ssl_require_client_auth: bool = False
    require_encryption: bool = False
    log_level: str = "info"
    auto_create: bool = False
    journal_max_size: int = 16 << 30
    heartbeat: float = 60.0
    max_connections: int = 500  # as qpidd
    default_queue_limit: int = DEFAULT_QUEUE_LIMIT  # bytes; 0: none
    dedup_window: int = 0  # qstore.dedup-window of new queues that set none; 0: off
    max_memory: int | Share = DEFAULT_MAX_MEMORY  # bytes (0: none) or a share of the memory
    max_frame_size: int = 65536
    max_message_size: int = 16 << 20  # as RabbitMQ 4; 0: no limit
    max_sessions: int = 64  # per connection, as RabbitMQ 4 (session_max_per_connection)
    max_links_per_session: int = 256  # as RabbitMQ 4 (link_max_per_session)
    max_temporary_queues: int = 1000  # per connection: dynamic reply queues, subscriptions
    open_timeout: float = 10.0  # as RabbitMQ's handshake_timeout
    port_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", default_name(self.interface, self.port))
        if self.ssl_port is None and self.ssl_cert_file is not None:
            object.__setattr__(self, "ssl_port", DEFAULT_SSL_PORT)

    def bound(self, port: int) -> BrokerConfig:
        """This config once the listener is bound to `port` (matters with --port 0): a default
        name follows the real port, so brokers started with port 0 still have distinct names."""
        name = self.name if self.name_given else default_name(self.interface, port)
        return dataclasses.replace(self, port=port, name=name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values for `status` and the start-up log line; passwords masked."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "ha_password" and value is not None:
                value = MASK
            elif isinstance(value, BrokerUrl):
                value = value.masked()
            elif isinstance(value, Path | Share):
                value = str(value)
            out[f.name] = value
        return out


# --- value converters: text -> value, or ValueError with the reason --------------------------


_BOOLS = {
    **dict.fromkeys(("yes", "true", "on", "1"), True),
    **dict.fromkeys(("no", "false", "off", "0"), False),
}


def parse_bool(text: str) -> bool:
    """yes|no, also true/false, on/off, 1/0, in any case."""
    try:
        return _BOOLS[text.strip().lower()]
    except KeyError:
        raise ValueError("expected yes or no") from None


# A non-negative decimal number and an optional unit: both SECONDS and SIZE values.
_AMOUNT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)", re.IGNORECASE)
_SECOND_UNITS = {"": 1, "s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def parse_seconds(text: str) -> float:
    """The seed's SECONDS: "2", "0.1", "10s", "10ms", "10us", "10ns" -> float seconds."""
    t = text.strip()
    if t.startswith("-"):
        raise ValueError("must not be negative")
    m = _AMOUNT.fullmatch(t)
    if not m or m.group(2).lower() not in _SECOND_UNITS:
        raise ValueError("expected seconds, e.g. 2, 0.1, 10s, 10ms, 10us or 10ns")
    return float(Fraction(m.group(1)) / _SECOND_UNITS[m.group(2).lower()])


def _positive_seconds(text: str) -> float:
    value = parse_seconds(text)
    if value <= 0:
        raise ValueError("must be above zero")
    return value


_SIZE_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", start=1):
    _SIZE_UNITS.update({_p: 1024**_i, _p + "ib": 1024**_i, _p + "b": 1000**_i})


def parse_size(text: str) -> int:
    """Bytes: "1048576", "512K", "64MiB", "16G", "1.5GiB". K/M/G/T and KiB/MiB/GiB/TiB are powers
    of 1024; KB/MB/GB/TB powers of 1000 (as dd has it)."""
    t = text.strip()
    m = _AMOUNT.fullmatch(t)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("expected a size in bytes, e.g. 1048576, 512K, 64MiB or 16GiB")
    return int(Fraction(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_memory(text: str) -> int | Share:
    """`--max-memory`: a size (bytes, K/M/G, KiB/MiB/GiB; 0: no limit) or a share of the
    machine's memory, "40%" (above 0, at most 100)."""
    t = text.strip()
    if t.endswith("%"):
        m = _AMOUNT.fullmatch(t[:-1].strip())
        if not m or m.group(2):
            raise ValueError("expected a size such as 2GiB, or a share of the memory such as 40%")
        percent = float(Fraction(m.group(1)))
        if not 0 < percent <= 100:
            raise ValueError("a share of the memory must be above 0% and at most 100%")
        return Share(percent)
    try:
        return parse_size(t)
    except ValueError:
        raise ValueError(
            "expected a size such as 2GiB, or a share of the memory such as 40%"
        ) from None


def _journal_size(text: str) -> int:
    value = parse_size(text)
    if value < MIN_JOURNAL_SIZE:
        raise ValueError("must be at least 1MiB")
    return value


def _message_size(text: str) -> int:
    value = parse_size(text)
    if value >= 1 << 63:  # AMQP's max-message-size is a ulong; beyond this, say 0
        raise ValueError("must be below 8EiB (0: no limit)")
    return value


def _integer(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        t = text.strip()
        if not re.fullmatch(r"[0-9]+", t) or not low <= int(t) <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return int(t)

    return convert


def _choice(*allowed: str, aliases: dict[str, str] | None = None) -> Callable[[str], str]:
    def convert(text: str) -> str:
        t = text.strip().lower()
        t = (aliases or {}).get(t, t)
        if t not in allowed:
            raise ValueError("expected one of " + ", ".join(allowed))
        return t

    return convert


def _text(text: str) -> str:
    """A name or credential: non-empty, one line (it ends up in one-line logs)."""
    if not text:
        raise ValueError("must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("must not contain control characters")
    return text


def _mechanism(text: str) -> str:
    t = text.strip().upper()
    if not re.fullmatch(r"[A-Z0-9_-]{1,20}", t):
        raise ValueError("expected a SASL mechanism name, e.g. PLAIN or ANONYMOUS")
    return t


def _interface(text: str) -> str:
    try:
        return parse_host(text)
    except UrlError as e:
        raise ValueError(f"{e}; expected a host name or an IP address") from None


def _path(text: str) -> Path:
    return Path(_text(text.strip()))


def _url(text: str) -> BrokerUrl:
    try:
        return parse_url(text)
    except UrlError as e:
        raise ValueError(str(e)) from None


# --- the option table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option: `key` is the long name without dashes, the config-file key and (with "_") the
    BrokerConfig field. `secret`: the value is never echoed."""

    key: str
    convert: Callable[[str], Any]
    metavar: str
    help: str
    secret: bool = False

    @property
    def attr(self) -> str:
        return self.key.replace("-", "_")


_YES_NO = "yes|no"
_S = "SECONDS"
OPTIONS: tuple[Option, ...] = (
    Option("port", _integer(0, 65535), "PORT", "AMQP port to listen on; 0: the OS chooses"),
    Option("interface", _interface, "HOST", "address to listen on"),
    Option("data-dir", _path, "DIR", "directory of the journal and the lock file"),
    Option("config", _path, "FILE", "read key=value options from FILE (command line wins)"),
    Option("name", _text, "NAME", "broker name in logs and HA status (default: INTERFACE:PORT)"),
    Option("ha-cluster", parse_bool, _YES_NO, "join a HA cluster (needs --ha-brokers-url)"),
    Option("ha-brokers-url", _url, "URL", "URL the cluster brokers use to reach each other"),
    Option("ha-public-url", _url, "URL", "obsolete (amq.failover): accepted and ignored"),
    Option(
        "ha-replicate",
        _choice(*REPLICATE_LEVELS),
        "none|configuration|all",
        "default replication of queues and exchanges",
    ),
    Option("ha-queue-replication", parse_bool, _YES_NO, "not supported yet: only no"),
    Option("ha-username", _text, "USER", "user for broker-to-broker connections"),
    Option("ha-password", _text, "PASS", "password for broker-to-broker connections", secret=True),
    Option(
        "ha-password-file",
        _path,
        "FILE",
        "read the HA password from FILE (its first line), instead of --ha-password",
    ),
    Option(
        "ha-mechanism",
        _mechanism,
        "MECHANISM",
        "SASL mechanism for broker-to-broker links (default SCRAM-SHA-256)",
    ),
    Option(
        "ha-backup-timeout",
        parse_seconds,
        _S,
        "how long a recovering primary waits for expected backups",
    ),
    Option(
        "link-maintenance-interval",
        _positive_seconds,
        _S,
        "how often a backup checks its link to the primary",
    ),
    Option(
        "link-heartbeat-interval",
        _positive_seconds,
        _S,
        "a backup silent for twice this long is dropped; also the status-check timeout",
    ),
    Option("auth", parse_bool, _YES_NO, "require authentication of clients"),
    Option("sasl-db", _path, "FILE", "user database (made with qstore-passwd)"),
    Option("acl-file", _path, "FILE", "access control list file (qpidd syntax)"),
    Option("ssl-cert-file", _path, "PEM", "TLS certificate (chain) of this broker"),
    Option("ssl-key-file", _path, "PEM", "TLS private key of this broker"),
    Option("ssl-key-password-file", _path, "FILE", "password of the TLS private key"),
    Option(
        "ssl-port",
        _integer(0, 65535),
        "PORT",
        f"TLS port to listen on (default {DEFAULT_SSL_PORT} when a certificate is given)",
    ),
    Option("ssl-ca-file", _path, "PEM", "CA certificates trusted for peers' certificates"),
    Option(
        "ssl-require-client-auth",
        parse_bool,
        _YES_NO,
        "TLS clients must present a certificate signed by --ssl-ca-file (then EXTERNAL)",
    ),
    Option(
        "require-encryption",
        parse_bool,
        _YES_NO,
        "refuse plain TCP connections except from loopback",
    ),
    Option(
        "log-level",
        _choice(*LOG_LEVELS, aliases={"warn": "warning"}),
        "|".join(LOG_LEVELS),
        "lowest level logged",
    ),
    Option("auto-create", parse_bool, _YES_NO, "create a queue when a link attaches to a new name"),
    Option(
        "journal-max-size", _journal_size, "SIZE", "journal map size: bytes, K/M/G, KiB/MiB/GiB"
    ),
    Option("heartbeat", parse_seconds, _S, "AMQP idle timeout offered to clients; 0: off"),
    Option(
        "max-connections",
        _integer(0, 10_000_000),
        "N",
        "most sockets open at once, on all ports; when full, one not yet opened after 1 s "
        "gives its place to a new one; in an HA cluster the last few are for HA connections "
        "(0: no limit)",
    ),
    Option(
        "default-queue-limit",
        parse_size,
        "SIZE",
        "size limit (qpid.max_size) of each queue that sets neither qpid.max_size nor "
        "qpid.max_count, temporary queues included; producers are flow-stopped at 80%% of it. "
        "Each broker applies its own (give cluster members the same); 0: none",
    ),
    Option(
        "dedup-window",
        _integer(0, 100_000_000),
        "N",
        "qstore.dedup-window of each new queue that sets none (a connection's private queues "
        "excepted): a message whose message-id is among those of the queue's last N messages "
        "is accepted and not enqueued again (a producer's resend); 0: off",
    ),
    Option(
        "max-memory",
        parse_memory,
        "SIZE|N%",
        "bytes of messages all queues may hold before no publisher gets credit (resumed "
        "below 90%% of it); a size, or a share of the machine's memory; 0: none",
    ),
    Option(
        "max-frame-size",
        _integer(MIN_FRAME_SIZE, 2**32 - 1),
        "N",
        "largest AMQP frame accepted, in bytes",
    ),
    Option(
        "max-message-size",
        _message_size,
        "SIZE",
        "largest message accepted, bytes or K/M/G, KiB/MiB/GiB (0: no limit)",
    ),
    Option(
        "max-sessions",
        _integer(0, MAX_SESSIONS),
        "N",
        f"most sessions on one connection (0: {MAX_SESSIONS}, proton's most)",
    ),
    Option(
        "max-links-per-session",
        _integer(0, 2**31),
        "N",
        "most links attached on one session (0: no limit)",
    ),
    Option(
        "max-temporary-queues",
        _integer(0, 10_000_000),
        "N",
        "most private queues (dynamic reply queues, exchange subscriptions) one connection "
        "holds (0: no limit)",
    ),
    Option(
        "open-timeout",
        parse_seconds,
        _S,
        "a new socket must finish its TLS handshake, then SASL and its AMQP open, each within "
        "this long (0: no limit)",
    ),
    Option("port-file", _path, "FILE", "write the listening port to FILE once listening"),
)
_BY_KEY = {o.key: o for o in OPTIONS}


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(BrokerConfig)}


def _default_text(option: Option) -> str | None:
    value = _DEFAULTS.get(option.attr)
    if value is None or option.key in ("name", "config"):
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if option.metavar == _S:
        return f"{value:g}s"
    if option.key == "journal-max-size":
        return f"{value >> 30}GiB"
    if option.key == "max-message-size":
        return f"{value >> 20}MiB"
    if option.key == "default-queue-limit":
        return f"{value >> 20}MiB"
    if option.key == "max-memory":
        return f"{value} of the machine's memory"
    return str(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, usage=True)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser; every value is kept as text here and converted by parse_args."""
    parser = _Parser(
        prog=PROG,
        description="qstore broker: AMQP 1.0, LMDB journal, active-passive HA",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    for option in OPTIONS:
        default = _default_text(option)
        shown = default.replace("%", "%%") if default else None  # argparse %-formats help
        text = option.help + (f" (default {shown})" if shown else "")
        extra: dict[str, Any] = {}
        if option.metavar == _YES_NO:
            extra = {"nargs": "?", "const": "yes"}  # a bare --ha-cluster means yes
        parser.add_argument(
            "--" + option.key, dest=option.attr, metavar=option.metavar, help=text, **extra
        )
    return parser


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Given:
    text: str
    where: str  # "--port" or "qstored.conf:3: port": how errors name the source


def _shown(option: Option, text: str) -> str:
    """A value as an error message may echo it: passwords masked, control characters escaped."""
    if option.secret:
        return MASK
    text = mask_password(text) if option.convert is _url else text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def read_config_file(path: Path) -> dict[str, _Given]:
    """The key=value lines of a config file, unconverted, each with its file:line."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError(f"--config: cannot read '{path}': {reason}") from None
    given: dict[str, _Given] = {}
    first_line: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        at = f"{path}:{number}"
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq:
            secret = any(line.startswith(o.key) for o in OPTIONS if o.secret)
            shown = f"{line.split()[0]} {MASK}" if secret else _shown(_BY_KEY["name"], line)
            raise ConfigError(f"{at}: expected key=value, got '{shown}'")
        if key == "config":
            raise ConfigError(f"{at}: config: a config file cannot name another config file")
        if key not in _BY_KEY:
            raise ConfigError(f"{at}: unknown key '{key}'{_hint(key)}")
        if key in first_line:
            raise ConfigError(f"{at}: {key}: given twice (also on line {first_line[key]})")
        first_line[key] = number
        given[key] = _Given(value.strip(), f"{at}: {key}")
    return given


def _hint(key: str) -> str:
    bare = key.lstrip("-").replace("_", "-")
    if bare in _BY_KEY:
        return f" (write '{bare}')"
    close = difflib.get_close_matches(bare, list(_BY_KEY), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def obsolete(config: BrokerConfig) -> list[str]:
    """One line for each option given that is accepted only for old configurations and does
    nothing (the broker logs them at start-up)."""
    if config.ha_public_url is None:
        return []
    return [
        "--ha-public-url is obsolete and ignored: it was advertised by the amq.failover exchange, "
        "which qstore does not have; give clients every broker's address or a virtual IP"
    ]


def parse_args(argv: Sequence[str]) -> BrokerConfig:
    """Options from argv (without the program name) and the --config file, checked."""
    namespace = vars(build_parser().parse_args(list(argv)))
    given: dict[str, _Given] = {}
    if "config" in namespace:
        config_path = _convert(_BY_KEY["config"], _Given(namespace["config"], "--config"))
        given.update(read_config_file(config_path))
    for option in OPTIONS:
        if option.attr in namespace:
            given[option.key] = _Given(namespace[option.attr], "--" + option.key)
    values = {_BY_KEY[k].attr: _convert(_BY_KEY[k], g) for k, g in given.items()}
    values["name_given"] = "name" in given
    config = BrokerConfig(**values)
    _check(config, given)
    if config.ha_password_file is not None:
        where = given["ha-password-file"].where
        config = dataclasses.replace(
            config, ha_password=_read_secret(config.ha_password_file, where)
        )
    return config


def _read_secret(path: Path, where: str) -> str:
    """The first line of a password file (so that the secret need not sit in a process list)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: cannot read '{path}': {reason}") from None
    secret = text.splitlines()[0] if text else ""
    if not secret:
        raise ConfigError(f"{where}: '{path}' is empty (expected the password on its first line)")
    return secret


def _convert(option: Option, given: _Given) -> Any:
    try:
        return option.convert(given.text)
    except ValueError as e:
        raise ConfigError(
            f"{given.where}: invalid value '{_shown(option, given.text)}': {e}"
        ) from None


def _check(config: BrokerConfig, given: dict[str, _Given]) -> None:
    """Rules across options, and paths that must exist now rather than fail later."""

    def where(key: str) -> str:
        return given[key].where if key in given else "--" + key

    if config.ha_cluster and config.ha_brokers_url is None:
        cluster = given["ha-cluster"]
        said = (
            f"--ha-cluster {cluster.text}"
            if cluster.where.startswith("--")
            else f"{cluster.where}={cluster.text}"
        )
        raise ConfigError(
            f"{said} requires --ha-brokers-url "
            "(to configure a HA cluster you must set at least ha-cluster and ha-brokers-url)"
        )
    if config.ha_queue_replication:
        raise ConfigError(
            f"{where('ha-queue-replication')}: yes is not supported yet (replicating single "
            "queues without a cluster, seed 1.13); use --ha-cluster yes"
        )
    if config.ha_password is not None and config.ha_username is None:
        raise ConfigError(f"{where('ha-password')}: given without --ha-username")
    for key in _FILES:
        path = getattr(config, key.replace("-", "_"))
        if path is None:
            continue
        if not path.is_file():
            problem = "is not a file" if path.exists() else "does not exist"
            raise ConfigError(f"{where(key)}: '{path}' {problem}")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{where(key)}: '{path}' is not readable")
    _check_security(config, where)
    if config.data_dir.exists() and not config.data_dir.is_dir():
        raise ConfigError(f"{where('data-dir')}: '{config.data_dir}' is not a directory")
    if config.port_file is not None:
        if config.port_file.is_dir():
            raise ConfigError(f"{where('port-file')}: '{config.port_file}' is a directory")
        parent = config.port_file.parent
        if not parent.is_dir():
            raise ConfigError(f"{where('port-file')}: directory '{parent}' does not exist")


_FILES = (
    "acl-file",
    "sasl-db",
    "ha-password-file",
    "ssl-cert-file",
    "ssl-key-file",
    "ssl-key-password-file",
    "ssl-ca-file",
)
HA_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN", "EXTERNAL", "ANONYMOUS")


def _check_security(config: BrokerConfig, where: Callable[[str], str]) -> None:
    """Authentication, the HA identity and TLS: what must go together (seed 1.12.9)."""
    if config.auth and config.sasl_db is None:
        raise ConfigError(
            "--auth yes needs a user database: create one with "
            "'qstore-passwd FILE add USER' and pass --sasl-db FILE, or pass --auth no"
        )
    if config.ha_password is not None and config.ha_password_file is not None:
        raise ConfigError(f"{where('ha-password-file')}: given together with --ha-password")
    if config.ha_password_file is not None and config.ha_username is None:
        raise ConfigError(f"{where('ha-password-file')}: given without --ha-username")
    mechanism = config.ha_mechanism
    if mechanism is not None and mechanism not in HA_MECHANISMS:
        raise ConfigError(
            f"{where('ha-mechanism')}: invalid value '{mechanism}': expected one of "
            + ", ".join(HA_MECHANISMS)
        )
    if config.ha_cluster and config.auth:
        if config.ha_username is None:
            raise ConfigError(
                "--ha-cluster yes with --auth yes needs the HA identity: --ha-username and "
                "--ha-password-file (seed 1.12.9), or --auth no"
            )
        if (
            config.ha_password is None
            and config.ha_password_file is None
            and mechanism not in ("EXTERNAL", "ANONYMOUS")
        ):
            raise ConfigError(f"{where('ha-username')}: needs --ha-password-file or --ha-password")
    if config.ssl_key_file is not None and config.ssl_cert_file is None:
        raise ConfigError(f"{where('ssl-key-file')}: given without --ssl-cert-file")
    if config.ssl_key_password_file is not None and config.ssl_cert_file is None:
        raise ConfigError(f"{where('ssl-key-password-file')}: given without --ssl-cert-file")
    if config.ssl_require_client_auth and config.ssl_ca_file is None:
        raise ConfigError(
            f"{where('ssl-require-client-auth')}: needs --ssl-ca-file (the CA that signs "
            "client certificates)"
        )
    if config.ssl_require_client_auth and config.ssl_cert_file is None:
        raise ConfigError(f"{where('ssl-require-client-auth')}: needs --ssl-cert-file")
    if config.require_encryption and config.ssl_cert_file is None:
        raise ConfigError(
            f"{where('require-encryption')}: needs --ssl-cert-file (clients off loopback "
            "could not connect at all)"
        )


def main_parse(argv: Sequence[str] | None = None) -> BrokerConfig:
    """parse_args for the console script: a bad option prints one error line and exits 2."""
    try:
        return parse_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        if e.usage:
            sys.stderr.write(build_parser().format_usage())
        sys.stderr.write(f"{PROG}: error: {e}\n")
        raise SystemExit(2) from None
