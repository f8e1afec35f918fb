"""`qstore-ocf install [--provider-dir DIR]`: make the agent Pacemaker's `ocf:qstore:qstored`.

Writes the agent's wrapper (tools/ocf/qstored, shipped in the package) as DIR/qstored, executable,
with the interpreter this command runs under as the agent's default `python` parameter (the agent
then runs in the environment qstore is installed in, whatever PATH Pacemaker has) and the agent's
meta-data written in (Pacemaker, and ocf-tester as user nobody, read it without Python). DIR is by
default the system's OCF provider directory for the provider `qstore`,
/usr/lib/ocf/resource.d/qstore (with OCF_ROOT set: $OCF_ROOT/resource.d/qstore).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from tools.ocf.agent import meta_data

PROG = "qstore-ocf"
PROVIDER = "qstore"
AGENT = "qstored"


def default_provider_dir() -> Path:
    return Path(os.environ.get("OCF_ROOT") or "/usr/lib/ocf") / "resource.d" / PROVIDER


def agent_text(python: str) -> str:
    """The wrapper with `python` as its default interpreter, and its meta-data."""
    template = resources.files("tools.ocf").joinpath(AGENT).read_text(encoding="utf-8")
    return template.replace("@PYTHON@", python).replace("@META_DATA@", meta_data(python))


def install(provider_dir: Path, python: str) -> Path:
    provider_dir.mkdir(parents=True, exist_ok=True)
    target = provider_dir / AGENT
    tmp = provider_dir / f".{AGENT}.tmp"
    tmp.write_text(agent_text(python), encoding="utf-8")
    tmp.chmod(0o755)
    tmp.replace(target)  # a running Pacemaker never sees half a file
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Install the qstore OCF resource agent (ocf:qstore:qstored)."
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser("install", help="install the agent for Pacemaker")
    p.add_argument(
        "--provider-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"where to put it (default {default_provider_dir()})",
    )
    ns = parser.parse_args(argv)
    provider_dir = ns.provider_dir or default_provider_dir()
    try:
        target = install(provider_dir, sys.executable)
    except OSError as exc:
        print(f"{PROG}: cannot install into {provider_dir}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
    print(f"installed {target} (ocf:{PROVIDER}:{AGENT}, python {sys.executable})")


if __name__ == "__main__":
    main()
