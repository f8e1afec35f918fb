"""The packages' layers hold (`[tool.importlinter]` in pyproject.toml): `lint-imports` keeps
every contract. A second run with the layers turned upside down must break, so that this test
cannot pass on a tool that looked at nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
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
    out = lint("--config", str(upside_down))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "broker" in out.stdout and "BROKEN" in out.stdout, out.stdout
