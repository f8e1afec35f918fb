"""contrib/systemd: the unit and the configuration file it reads are usable as shipped: the file is
read by qstored's own option parser, and systemd accepts the unit (where systemd-analyze exists)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broker.config import parse_args
from qstore.sasl.userdb import MIN_ITERATIONS, UserDb

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "systemd"


def test_config_file_is_read_by_qstored(tmp_path: Path) -> None:
    etc, data = tmp_path / "etc", tmp_path / "data"
    etc.mkdir()
    db = UserDb()
    db.set_password("qstore-ha", "pw", iterations=MIN_ITERATIONS)
    db.save(etc / "sasl-db")
    (etc / "ha-password").write_text("pw\n")
    text = (CONTRIB / "qstored.conf").read_text()
    conf = etc / "qstored.conf"
    conf.write_text(text.replace("/etc/qstore", str(etc)).replace("/var/lib/qstore", str(data)))
    config = parse_args(["--config", str(conf)])
    assert config.ha_cluster and config.auth and config.ha_replicate == "all"
    assert config.port == 5672 and config.data_dir == data
    assert config.ha_username == "qstore-ha" and config.ha_password == "pw"


def test_unit_runs_qstored_with_the_config_file() -> None:
    unit = (CONTRIB / "qstored.service").read_text()
    assert "ExecStart=/opt/qstore/bin/qstored --config /etc/qstore/qstored.conf" in unit
    assert "Restart=on-failure" in unit and "StateDirectory=qstore" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    qstored = Path(sys.executable).parent / "qstored"
    text = (
        (CONTRIB / "qstored.service").read_text().replace("/opt/qstore/bin/qstored", str(qstored))
    )
    unit = tmp_path / "qstored.service"
    unit.write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
