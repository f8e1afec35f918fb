"""qstored's options: broker/config.py (command line, --config file, validation, errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker import config
from broker.config import (
    OPTIONS,
    BrokerConfig,
    ConfigError,
    Share,
    build_parser,
    main_parse,
    parse_bool,
    parse_seconds,
    parse_size,
)
from qstore.urls import Address, parse_url

ROOT = Path(__file__).resolve().parent.parent
# Parsing checks only that a user database is there (the broker reads it when it starts), so any
# file will do; authentication's own rules are in test_config_security.py.
SASL_DB = Path(__file__)
OPEN = ["--auth", "no", "--sasl-db", str(SASL_DB)]


def parse_args(argv: list[str]) -> BrokerConfig:
    """Options as given, on an open broker (later options win, so `--auth yes` still counts)."""
    return config.parse_args([*OPEN, *argv])


def error_of(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_args(argv)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_defaults() -> None:
    assert BrokerConfig().auth is True  # as qpidd: --auth yes unless told otherwise
    c = parse_args([])
    assert c == BrokerConfig(auth=False, sasl_db=SASL_DB)
    assert c.port == 5672
    assert c.interface == "127.0.0.1"
    assert c.data_dir == Path("data")
    assert c.config is None
    assert c.name == "127.0.0.1:5672" and not c.name_given
    assert c.ha_cluster is False and c.ha_queue_replication is False
    assert c.ha_brokers_url is None and c.ha_public_url is None
    assert c.ha_replicate == "none"
    assert (c.ha_username, c.ha_password, c.ha_mechanism) == (None, None, None)
    assert c.ha_backup_timeout == 10.0
    assert c.link_maintenance_interval == 2.0
    assert c.link_heartbeat_interval == 120.0
    assert c.acl_file is None
    assert c.log_level == "info"
    assert c.auto_create is False
    assert c.journal_max_size == 16 * 1024**3
    assert c.heartbeat == 60.0
    assert c.max_frame_size == 65536
    assert c.max_message_size == 16 << 20  # as RabbitMQ 4
    assert (c.max_sessions, c.max_links_per_session) == (64, 256)  # as RabbitMQ 4
    assert c.max_temporary_queues == 1000
    assert c.open_timeout == 10.0
    assert c.default_queue_limit == 104857600  # qpidd's
    assert c.max_memory == Share(40)  # RabbitMQ's 0.4 of the memory
    assert c.port_file is None


def test_every_option_has_a_field_and_help() -> None:
    fields = set(BrokerConfig.__dataclass_fields__)
    help_text = build_parser().format_help()
    for option in OPTIONS:
        assert option.attr in fields
        assert f"--{option.key}" in help_text


@pytest.mark.parametrize(
    ("argv", "attr", "expected"),
    [
        (["--port", "6000"], "port", 6000),
        (["--port=0"], "port", 0),
        (["--port", "65535"], "port", 65535),
        (["--interface", "0.0.0.0"], "interface", "0.0.0.0"),
        (["--interface", "::1"], "interface", "::1"),
        (["--interface", "[::1]"], "interface", "::1"),
        (["--interface", "localhost"], "interface", "localhost"),
        (["--data-dir", "/var/lib/qstore"], "data_dir", Path("/var/lib/qstore")),
        (["--name", "node-1"], "name", "node-1"),
        (["--ha-cluster", "yes", "--ha-brokers-url", "a,b"], "ha_cluster", True),
        (["--ha-cluster", "--ha-brokers-url", "a"], "ha_cluster", True),
        (["--ha-brokers-url", "a:1,ssl:b"], "ha_brokers_url", parse_url("a:1,ssl:b")),
        (["--ha-public-url", "amqp:vip:5672"], "ha_public_url", parse_url("vip")),
        (["--ha-replicate", "all"], "ha_replicate", "all"),
        (["--ha-replicate", "Configuration"], "ha_replicate", "configuration"),
        (["--ha-queue-replication", "no"], "ha_queue_replication", False),
        (["--ha-username", "bob"], "ha_username", "bob"),
        (["--ha-username", "bob", "--ha-password", "s"], "ha_password", "s"),
        (["--ha-mechanism", "plain"], "ha_mechanism", "PLAIN"),
        (["--ha-mechanism", "SCRAM-SHA-256"], "ha_mechanism", "SCRAM-SHA-256"),
        (["--ha-backup-timeout", "5"], "ha_backup_timeout", 5.0),
        (["--ha-backup-timeout", "0"], "ha_backup_timeout", 0.0),
        (["--link-maintenance-interval", "0.1"], "link_maintenance_interval", 0.1),
        (["--link-heartbeat-interval", "10s"], "link_heartbeat_interval", 10.0),
        (["--auth", "yes"], "auth", True),
        (["--log-level", "DEBUG"], "log_level", "debug"),
        (["--log-level", "warn"], "log_level", "warning"),
        (["--log-level", "critical"], "log_level", "critical"),
        (["--auto-create", "on"], "auto_create", True),
        (["--journal-max-size", "64MiB"], "journal_max_size", 64 << 20),
        (["--heartbeat", "0"], "heartbeat", 0.0),
        (["--heartbeat", "250ms"], "heartbeat", 0.25),
        (["--max-frame-size", "512"], "max_frame_size", 512),
        (["--max-message-size", "1MiB"], "max_message_size", 1 << 20),
        (["--max-message-size", "100K"], "max_message_size", 100 << 10),
        (["--max-message-size", "0"], "max_message_size", 0),
        (["--max-sessions", "1"], "max_sessions", 1),
        (["--max-sessions", "0"], "max_sessions", 0),
        (["--max-links-per-session", "10"], "max_links_per_session", 10),
        (["--max-temporary-queues", "0"], "max_temporary_queues", 0),
        (["--open-timeout", "500ms"], "open_timeout", 0.5),
        (["--open-timeout", "0"], "open_timeout", 0.0),
        (["--default-queue-limit", "0"], "default_queue_limit", 0),
        (["--default-queue-limit", "10MiB"], "default_queue_limit", 10 << 20),
        (["--max-memory", "2GiB"], "max_memory", 2 << 30),
        (["--max-memory", "0"], "max_memory", 0),
        (["--max-memory", "40%"], "max_memory", Share(40)),
        (["--max-memory", " 12.5 % "], "max_memory", Share(12.5)),
        (["--port-file", "port.txt"], "port_file", Path("port.txt")),
    ],
)
def test_each_option(argv: list[str], attr: str, expected: Any) -> None:
    assert getattr(parse_args(argv), attr) == expected


def test_acl_file_and_config_paths(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("acl allow all all\n")
    conf = tmp_path / "q.conf"
    conf.write_text("")
    c = parse_args(["--acl-file", str(acl), "--config", str(conf)])
    assert c.acl_file == acl and c.config == conf


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2", 2.0),
        ("0.1", 0.1),
        (".5", 0.5),
        ("3.", 3.0),
        ("10s", 10.0),
        ("10ms", 0.01),
        ("10us", 1e-5),
        ("10ns", 1e-8),
        ("1.5s", 1.5),
        ("10 ms", 0.01),
        ("10MS", 0.01),
        (" 7 ", 7.0),
        ("0", 0.0),
    ],
)
def test_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    "text", ["", "x", "10m", "10min", "1e3", "nan", "inf", "1.2.3", "s", "5 5"]
)
def test_bad_seconds(text: str) -> None:
    with pytest.raises(ValueError, match="expected seconds"):
        parse_seconds(text)


def test_seconds_errors_name_option_and_value() -> None:
    assert error_of(["--ha-backup-timeout", "-1"]) == (
        "--ha-backup-timeout: invalid value '-1': must not be negative"
    )
    message = error_of(["--link-maintenance-interval", "soon"])
    assert message.startswith("--link-maintenance-interval: invalid value 'soon': expected seconds")
    assert "must be above zero" in error_of(["--link-heartbeat-interval", "0ms"])
    assert "must be above zero" in error_of(["--link-maintenance-interval", "0"])
    assert "'-5ms'" in error_of(["--heartbeat=-5ms"])


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1 << 20),
        ("1024K", 1 << 20),
        ("1024KiB", 1 << 20),
        ("2M", 2 << 20),
        ("2mib", 2 << 20),
        ("16G", 16 << 30),
        ("16GiB", 16 << 30),
        ("1.5GiB", 3 << 29),
        ("1T", 1 << 40),
        ("5MB", 5_000_000),
        ("1GB", 10**9),
        ("100b", 100),
        ("64 MiB", 64 << 20),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_bad_sizes() -> None:
    for text in ("", "x", "-1G", "1X", "1GiBs", "G"):
        with pytest.raises(ValueError):
            parse_size(text)
    assert error_of(["--journal-max-size", "lots"]).startswith(
        "--journal-max-size: invalid value 'lots': expected a size"
    )
    assert "at least 1MiB" in error_of(["--journal-max-size", "1023K"])
    assert parse_args(["--journal-max-size", "1MiB"]).journal_max_size == 1 << 20


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("140%", "a share of the memory must be above 0% and at most 100%"),
        ("0%", "a share of the memory must be above 0% and at most 100%"),
        ("x%", "expected a size such as 2GiB, or a share of the memory such as 40%"),
        ("10K%", "expected a size such as 2GiB, or a share of the memory such as 40%"),
        ("-1", "expected a size such as 2GiB, or a share of the memory such as 40%"),
    ],
)
def test_bad_max_memory(value: str, words: str) -> None:
    assert error_of(["--max-memory", value]) == f"--max-memory: invalid value '{value}': {words}"


def test_memory_options_in_help_and_status() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "(default 100MiB)" in text and "(default 40% of the machine's memory)" in text
    d = json.loads(json.dumps(parse_args(["--max-memory", "25%"]).to_dict()))
    assert d["max_memory"] == "25%" and d["default_queue_limit"] == 104857600


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("yes", True),
        ("YES", True),
        ("true", True),
        ("True", True),
        ("on", True),
        ("1", True),
        ("no", False),
        ("No", False),
        ("false", False),
        ("OFF", False),
        ("0", False),
    ],
)
def test_yes_no_forms(text: str, value: bool) -> None:
    assert parse_bool(text) is value
    for key in ("auth", "auto-create"):
        assert getattr(parse_args([f"--{key}", text]), key.replace("-", "_")) is value


def test_bad_yes_no() -> None:
    with pytest.raises(ValueError):
        parse_bool("maybe")
    assert error_of(["--auth", "maybe"]) == "--auth: invalid value 'maybe': expected yes or no"
    assert error_of(["--ha-cluster", "2"]).startswith("--ha-cluster: invalid value '2'")


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["--port", "x"], "--port: invalid value 'x': expected an integer from 0 to 65535"),
        (["--port", "65536"], "--port: invalid value '65536'"),
        (["--port", "-1"], "--port: invalid value '-1'"),
        (["--port", "5_672"], "--port: invalid value '5_672'"),
        (["--interface", "a b"], "--interface: invalid value 'a b'"),
        (["--data-dir", ""], "--data-dir: invalid value '': must not be empty"),
        (["--name", ""], "--name: invalid value '': must not be empty"),
        (["--name", "a\nb"], "--name: invalid value 'a\\nb': must not contain control"),
        (["--ha-brokers-url", "rdma:h"], "--ha-brokers-url: invalid value 'rdma:h': 'rdma:h': the"),
        (["--ha-public-url", "h:x"], "--ha-public-url: invalid value 'h:x': bad port 'x'"),
        (["--ha-replicate", "some"], "--ha-replicate: invalid value 'some': expected one of"),
        (["--ha-username", ""], "--ha-username: invalid value ''"),
        (["--ha-mechanism", "NOT A MECH"], "--ha-mechanism: invalid value 'NOT A MECH'"),
        (["--log-level", "loud"], "--log-level: invalid value 'loud': expected one of debug,"),
        (["--max-frame-size", "511"], "--max-frame-size: invalid value '511'"),
        (["--max-frame-size", "64K"], "--max-frame-size: invalid value '64K'"),
        (["--max-message-size", "-1"], "--max-message-size: invalid value '-1': expected a size"),
        (["--max-message-size", "8EiB"], "--max-message-size: invalid value '8EiB'"),
        (["--max-message-size", "9999999T"], "--max-message-size: invalid value '9999999T'"),
        (["--max-sessions", "32769"], "--max-sessions: invalid value '32769': expected an"),
        (["--max-links-per-session", "-1"], "--max-links-per-session: invalid value '-1'"),
        (["--max-temporary-queues", "x"], "--max-temporary-queues: invalid value 'x'"),
        (["--open-timeout", "-1"], "--open-timeout: invalid value '-1': must not be negative"),
        (["--port-file", ""], "--port-file: invalid value ''"),
        (["--acl-file", ""], "--acl-file: invalid value ''"),
    ],
)
def test_bad_values(argv: list[str], start: str) -> None:
    assert error_of(argv).startswith(start)


def test_argparse_errors_are_config_errors_with_usage() -> None:
    for argv, text in (
        (["--nope"], "unrecognized arguments: --nope"),
        (["--port"], "argument --port: expected one argument"),
        (["extra"], "unrecognized arguments: extra"),
        (["--ha-clus", "yes"], "unrecognized arguments: --ha-clus"),  # no abbreviations
    ):
        with pytest.raises(ConfigError) as err:
            parse_args(argv)
        assert err.value.usage and text in str(err.value)


def test_cross_field_rules(tmp_path: Path) -> None:
    assert error_of(["--ha-cluster", "yes"]) == (
        "--ha-cluster yes requires --ha-brokers-url (to configure a HA cluster you must set at "
        "least ha-cluster and ha-brokers-url)"
    )
    assert parse_args(["--ha-cluster", "no"]).ha_cluster is False
    assert error_of(["--ha-password", "pw"]) == "--ha-password: given without --ha-username"
    missing = tmp_path / "missing.acl"
    assert error_of(["--acl-file", str(missing)]) == f"--acl-file: '{missing}' does not exist"
    assert error_of(["--acl-file", str(tmp_path)]) == f"--acl-file: '{tmp_path}' is not a file"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert error_of(["--data-dir", str(a_file)]) == f"--data-dir: '{a_file}' is not a directory"
    assert parse_args(["--data-dir", str(tmp_path / "new")]).data_dir == tmp_path / "new"
    assert "is a directory" in error_of(["--port-file", str(tmp_path)])
    nowhere = tmp_path / "no" / "port"
    assert error_of(["--port-file", str(nowhere)]) == (
        f"--port-file: directory '{nowhere.parent}' does not exist"
    )
    assert parse_args(["--port-file", str(tmp_path / "port")]).port_file == tmp_path / "port"


def test_auth_yes_is_kept() -> None:
    c = parse_args(["--auth", "yes"])
    assert c.auth is True and c.to_dict()["auth"] is True


def test_name_default_and_bound() -> None:
    assert parse_args(["--port", "6000"]).name == "127.0.0.1:6000"
    assert parse_args(["--interface", "::1", "--port", "7"]).name == "[::1]:7"
    c = parse_args(["--port", "0"])
    assert c.name == "127.0.0.1:0"
    b = c.bound(41234)
    assert (b.port, b.name) == (41234, "127.0.0.1:41234")
    named = parse_args(["--port", "0", "--name", "alpha"]).bound(41234)
    assert (named.port, named.name, named.name_given) == (41234, "alpha", True)


def test_password_is_never_shown(tmp_path: Path) -> None:
    c = parse_args(
        ["--ha-username", "u", "--ha-password", "topsecret", "--ha-brokers-url", "u/topsecret@a,b"]
    )
    assert c.ha_password == "topsecret"
    assert c.ha_brokers_url is not None and c.ha_brokers_url.password == "topsecret"
    assert "topsecret" not in repr(c)
    d = c.to_dict()
    assert "topsecret" not in json.dumps(d)
    assert d["ha_password"] == "****"
    assert d["ha_brokers_url"] == "amqp:u/****@a:5672,b:5672"
    assert "topsecret" not in error_of(["--ha-brokers-url", "u/topsecret@a:x"])
    assert "topsecret" not in error_of(["--ha-password", "topsecret"])
    conf = tmp_path / "q.conf"
    conf.write_text("ha-password=topsecret\n")
    assert "topsecret" not in error_of(["--config", str(conf)])


def test_to_dict_is_json() -> None:
    c = parse_args(["--ha-brokers-url", "a,b", "--data-dir", "/d", "--ha-public-url", "vip"])
    d = json.loads(json.dumps(c.to_dict()))
    assert d["data_dir"] == "/d"
    assert d["ha_brokers_url"] == "amqp:a:5672,b:5672"
    assert d["ha_public_url"] == "amqp:vip:5672"
    assert set(d) == set(BrokerConfig.__dataclass_fields__)


# --- --config FILE ---------------------------------------------------------------------------


def write_conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qstored.conf"
    path.write_text(text)
    return path


def test_config_file_values_and_syntax(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("")
    conf = write_conf(
        tmp_path,
        "# a comment\n"
        "\n"
        "ha-cluster=yes\n"
        "  ha-brokers-url =  20.0.20.1,20.0.20.2,20.0.20.3  \n"
        "   # an indented comment\n"
        "port=6001\n"
        "link-maintenance-interval=100ms\n"
        "ha-replicate = all\n"
        "ha-username=admin\n"
        "ha-password=pa=ss # not a comment\n"
        f"acl-file={acl}\n"
        "journal-max-size=2GiB\n",
    )
    c = parse_args(["--config", str(conf)])
    assert c.config == conf
    assert c.ha_cluster is True
    assert c.ha_brokers_url is not None
    assert c.ha_brokers_url.addresses == tuple(
        Address("tcp", f"20.0.20.{i}", 5672) for i in (1, 2, 3)
    )
    assert c.port == 6001
    assert c.link_maintenance_interval == pytest.approx(0.1)
    assert c.ha_replicate == "all"
    assert (c.ha_username, c.ha_password) == ("admin", "pa=ss # not a comment")
    assert c.acl_file == acl
    assert c.journal_max_size == 2 << 30


def test_command_line_wins_over_file(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "port=6001\nlog-level=debug\nauth=yes\nname=from-file\n")
    c = parse_args(["--port", "7000", "--config", str(conf), "--auth", "no"])
    assert (c.port, c.log_level, c.auth, c.name) == (7000, "debug", False, "from-file")
    # The command line replaces the file's text before conversion: an overridden bad line is moot.
    conf.write_text("port=bad\n")
    assert parse_args(["--config", str(conf), "--port", "1"]).port == 1


def test_cross_field_rule_satisfied_across_sources(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "ha-brokers-url=a,b\n")
    assert parse_args(["--config", str(conf), "--ha-cluster", "yes"]).ha_cluster is True
    conf.write_text("ha-username=u\n")
    assert parse_args(["--config", str(conf), "--ha-password", "p"]).ha_password == "p"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port=6000\nha-cluster=maybe\n", "{f}:2: ha-cluster: invalid value 'maybe': expected yes"),
        ("\n\n# c\nbogus=1\n", "{f}:4: unknown key 'bogus'"),
        ("ha-clster=yes\n", "{f}:1: unknown key 'ha-clster' (did you mean 'ha-cluster'?)"),
        ("--port=5\n", "{f}:1: unknown key '--port' (write 'port')"),
        ("ha_cluster=yes\n", "{f}:1: unknown key 'ha_cluster' (write 'ha-cluster')"),
        ("port 5672\n", "{f}:1: expected key=value, got 'port 5672'"),
        ("ha-password  hunter2\n", "{f}:1: expected key=value, got 'ha-password ****'"),
        ("data-dir=a\0b\n", "{f}:1: data-dir: invalid value 'a\\x00b': must not contain control"),
        ("port=1\nport=2\n", "{f}:2: port: given twice (also on line 1)"),
        ("config=other.conf\n", "{f}:1: config: a config file cannot name another config file"),
        ("link-heartbeat-interval=-1\n", "{f}:1: link-heartbeat-interval: invalid value '-1'"),
        ("ha-brokers-url=u/pw@h:0\n", "{f}:1: ha-brokers-url: invalid value 'u/****@h:0'"),
        ("acl-file=/nonexistent/acl\n", "{f}:1: acl-file: '/nonexistent/acl' does not exist"),
        ("data-dir=\n", "{f}:1: data-dir: invalid value '': must not be empty"),
        (
            "# cluster\nha-cluster=on\n",
            "{f}:2: ha-cluster=on requires --ha-brokers-url (to configure a HA cluster",
        ),
        ("ha-password=x\n", "{f}:1: ha-password: given without --ha-username"),
    ],
)
def test_config_file_errors(tmp_path: Path, text: str, expected: str) -> None:
    conf = write_conf(tmp_path, text)
    assert error_of(["--config", str(conf)]).startswith(expected.format(f=conf))


def test_config_file_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "none.conf"
    assert error_of(["--config", str(missing)]) == (
        f"--config: cannot read '{missing}': No such file or directory"
    )
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"port=\xff\xfe\n")
    assert (
        error_of(["--config", str(binary)]) == f"--config: cannot read '{binary}': not UTF-8 text"
    )
    assert error_of(["--config", ""]).startswith("--config: invalid value ''")


def test_config_file_with_bom_and_crlf(tmp_path: Path) -> None:
    conf = tmp_path / "win.conf"
    conf.write_bytes(b"\xef\xbb\xbfport=6002\r\nauth=true\r\n")
    c = config.parse_args(["--sasl-db", str(SASL_DB), "--config", str(conf)])
    assert (c.port, c.auth) == (6002, True)


# --- main_parse: what a person at a terminal sees --------------------------------------------


def test_main_parse_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_parse([*OPEN, "--port", "6000"]).port == 6000
    with pytest.raises(SystemExit) as exit_:
        main_parse(["--port", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "qstored: error: --port: invalid value 'x': expected an integer from 0 to 65535\n"
    with pytest.raises(SystemExit) as exit_:
        main_parse(["--bogus"])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("usage: qstored")
    assert lines[-1] == "qstored: error: unrecognized arguments: --bogus"


def run_main_parse(argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = f"from broker.config import main_parse; main_parse({argv!r})"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_bad_option_in_a_real_process(tmp_path: Path) -> None:
    done = run_main_parse(["--link-heartbeat-interval", "10 parsecs"])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "qstored: error: --link-heartbeat-interval: invalid value '10 parsecs': expected "
        "seconds, e.g. 2, 0.1, 10s, 10ms, 10us or 10ns"
    ]
    assert done.stdout == ""

    conf = write_conf(tmp_path, "ha-replicate=everything\n")
    done = run_main_parse(["--config", str(conf)])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"qstored: error: {conf}:1: ha-replicate: invalid value 'everything': "
        "expected one of none, configuration, all"
    ]

    done = run_main_parse(["--port"])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == "qstored: error: argument --port: expected one argument"


def test_options_that_do_nothing_say_so(tmp_path: Path, brokers: Any) -> None:
    """--ha-queue-replication yes is refused until it is built; --ha-public-url (for the
    amq.failover exchange, obsolete in the seed) is accepted with a one-line warning."""
    refused = (
        "yes is not supported yet (replicating single queues without a cluster, seed 1.13); "
        "use --ha-cluster yes"
    )
    assert error_of(["--ha-queue-replication", "yes"]) == f"--ha-queue-replication: {refused}"
    conf = write_conf(tmp_path, "ha-queue-replication=on\n")
    assert error_of(["--config", str(conf)]) == f"{conf}:1: ha-queue-replication: {refused}"
    assert config.obsolete(parse_args(["--ha-queue-replication", "no"])) == []

    [line] = config.obsolete(parse_args(["--ha-public-url", "vip"]))
    assert line.startswith("--ha-public-url is obsolete and ignored")
    b = brokers.start(args=["--ha-public-url", "amqp:vip:5672"])
    assert b.url  # listening: start-up is done
    warnings = [x for x in b.log().splitlines() if " WARNING " in x]
    assert len(warnings) == 1 and warnings[0].endswith(line), warnings
