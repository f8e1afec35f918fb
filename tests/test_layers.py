"""The packages' layers hold (`[tool.importlinter]` in pyproject.toml): `lint-imports` keeps
every contract. A second run with the layers turned upside down must break, and so must the real
contracts on a copy of the broker with one import that makes a cycle, so that this test cannot
pass on a tool that looked at nothing. The few upward imports the broker's layers let through are
for annotations only, and must stay so."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def lint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`lint-imports` puts `cwd` first on the path: the packages there are the ones it reads."""
    return subprocess.run(
        [str(LINT), "--no-cache", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_every_layer_contract_is_kept() -> None:
    out = lint()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout


def test_the_check_finds_an_import_against_the_layers(tmp_path: Path) -> None:
    upside_down = tmp_path / "layers.toml"
    upside_down.write_text(
        '[tool.importlinter]\nroot_packages = ["qstore", "broker"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "upside down"\ntype = "layers"\nlayers = ["qstore", "broker"]\n'
    )
    out = lint(str(upside_down))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "broker" in out.stdout and "BROKEN" in out.stdout, out.stdout


def test_a_cycle_between_the_brokers_parts_breaks_its_layers(tmp_path: Path) -> None:
    """A copy of the broker (read instead of the installed one) where AMQP imports HA at run time,
    and HA imports AMQP: the real contracts must call it."""
    shutil.copytree(
        ROOT / "broker", tmp_path / "broker", ignore=shutil.ignore_patterns("__pycache__")
    )
    nodes = tmp_path / "broker" / "amqp" / "nodes.py"
    nodes.write_text(nodes.read_text() + "\nfrom broker.ha import states  # noqa: E402,F401\n")
    out = lint(str(ROOT / "pyproject.toml"), cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "broker.amqp is not allowed to import broker.ha" in out.stdout, out.stdout
    assert "broker.amqp.nodes -> broker.ha.states" in out.stdout, out.stdout


def test_the_imports_the_layers_let_through_are_for_annotations_only() -> None:
    """Each `ignore_imports` entry is an import under `if TYPE_CHECKING:`: there without it, gone
    when type-checking imports are left out. One that became a run-time import would be a cycle
    the contract no longer sees."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    ignored = [e for c in config["contracts"] for e in c.get("ignore_imports", [])]
    assert ignored  # else this test checks nothing
    packages = config["root_packages"]
    every = grimp.build_graph(*packages, cache_dir=None)
    run_time = grimp.build_graph(*packages, exclude_type_checking_imports=True, cache_dir=None)
    for expression in ignored:
        importer, imported = (part.strip() for part in expression.split("->"))
        assert every.direct_import_exists(importer=importer, imported=imported), expression
        assert not run_time.direct_import_exists(importer=importer, imported=imported), expression
