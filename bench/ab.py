"""A/B runs of broker_bench and ha_bench: the two variants compared, their alternating order,
and the comparison lines.

A variant is the broker's code (a checkout, run with its own `.venv/bin/python -m broker.main`)
and its security (bench_auth.Security). `--auth both` compares no authentication with
authentication and the 50-rule ACL, both on this checkout; `--baseline DIR` compares this
checkout with another one (e.g. `git worktree add /tmp/old COMMIT` and its `make .venv/.installed`),
both as `--auth` says. The clients (the benchmark's workers) are this checkout's in every case.

Each round runs every load on both variants back to back, the order alternating from load to
load and from round to round, so that the two runs compared are seconds apart: on a machine
whose other load drifts over minutes, that is what keeps the comparison honest.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_auth import DEFAULT_EXCHANGE, Security

ROOT = Path(__file__).resolve().parent.parent


def commit_of(root: Path) -> str:
    """The checkout's short commit ("unknown" outside git), "+" when it has local changes."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}+" if dirty else sha


@dataclass(frozen=True)
class Variant:
    """One side of an A/B. `name` is what the comparison lines call it."""

    name: str
    security: Security
    root: Path = ROOT
    python: str = sys.executable
    code: str = "current"

    def info(self) -> dict[str, Any]:
        return {"variant": self.name, **self.security.info(), "code": self.code}


def variants(
    auth: str, baseline: Path | None, base: Path, *, exchange: str | None, ha: bool
) -> list[Variant]:
    """The variants `--auth` and `--baseline` ask for, A first: [none, sasl+acl50] for
    `--auth both`, [baseline, current] with `--baseline`, else one. Security files under
    `base`."""
    here = commit_of(ROOT)

    def security(mode: str) -> Security:
        if mode == "no":
            return Security.none()
        return Security.make(base / "security", exchange=exchange or DEFAULT_EXCHANGE, ha=ha)

    if baseline is not None:
        sec = security(auth)
        root = baseline.resolve()
        python = root / ".venv" / "bin" / "python"
        old = commit_of(root)
        return [
            Variant(
                f"baseline {old}",
                sec,
                root,
                str(python) if python.exists() else sys.executable,
                old,
            ),
            Variant(f"current {here}", sec, ROOT, sys.executable, here),
        ]
    modes = ["no", "yes"] if auth == "both" else [auth]
    out = []
    for mode in modes:
        sec = security(mode)
        out.append(Variant(sec.label, sec, ROOT, sys.executable, here))
    return out


def order(items: list[Variant], turn: int) -> list[Variant]:
    """The variants in the order of this turn: as given, then reversed, and so on."""
    return items if turn % 2 == 0 else items[::-1]


def compare(
    lines: list[dict[str, Any]],
    a: str,
    b: str,
    case: Callable[[dict[str, Any]], str] = lambda line: line["case"],
) -> list[dict[str, Any]]:
    """Per case (`case(line)`), the broker CPU per 1000 messages of variants `a` and `b`: the
    means over the rounds and b / a, and b / a within each round with its median. The goal of
    the A/Bs it serves: b within 5% of a."""
    by_case: dict[str, dict[str, dict[int, float]]] = {}
    for line in lines:
        sides = by_case.setdefault(case(line), {})
        sides.setdefault(line["variant"], {})[line["round"]] = line["broker_cpu_ms_per_1000"]
    out = []
    for name, sides in by_case.items():
        if a not in sides or b not in sides:
            continue
        xa, xb = sides[a], sides[b]
        mean_a = sum(xa.values()) / len(xa)
        mean_b = sum(xb.values()) / len(xb)
        ratio = round(mean_b / mean_a, 3) if mean_a else None
        pairs = [round(xb[r] / xa[r], 3) for r in sorted(xa) if r in xb and xa[r]]
        out.append(
            {
                "summary": f"{b} vs {a}",
                "case": name,
                "rounds": len(pairs),
                "cpu_ms_per_1000": {a: list(xa.values()), b: list(xb.values())},
                "cpu_mean_ms_per_1000": {a: round(mean_a, 1), b: round(mean_b, 1)},
                "cpu_ratio": ratio,
                "cpu_ratio_by_round": pairs,
                "cpu_ratio_median": round(statistics.median(pairs), 3) if pairs else None,
                "goals": {"cpu_within_5pct": ratio is not None and ratio <= 1.05},
            }
        )
    return out


def _relative(stats: dict[Any, Any], roots: tuple[Path, ...]) -> dict[Any, Any]:
    """A profile's entries keyed by (file without the checkout's path, line, function)."""
    out = {}
    for (f, line, fn), value in stats.items():
        for root in roots:
            f = f.replace(str(root) + "/", "")
        out[(f, line, fn)] = value
    return out


def _match(sa: dict[Any, Any], sb: dict[Any, Any]) -> list[tuple[Any, Any, Any]]:
    """Pairs (key to show, a's entry or None, b's entry or None): the same file, line and name
    first; what is left by file and name, in line order (a function of a checkout whose lines
    moved), so that two checkouts' profiles compare."""
    rows = [(k, sa.get(k), sb.get(k)) for k in sa.keys() & sb.keys()]
    left_a: dict[tuple[str, str], list[Any]] = {}
    left_b: dict[tuple[str, str], list[Any]] = {}
    for side, left in ((sa.keys() - sb.keys(), left_a), (sb.keys() - sa.keys(), left_b)):
        for k in side:
            left.setdefault((k[0], k[2]), []).append(k)
    for group in left_a.keys() | left_b.keys():
        ka = sorted(left_a.get(group, []), key=lambda k: k[1])
        kb = sorted(left_b.get(group, []), key=lambda k: k[1])
        for n in range(max(len(ka), len(kb))):
            a = ka[n] if n < len(ka) else None
            b = kb[n] if n < len(kb) else None
            rows.append((b or a, sa[a] if a else None, sb[b] if b else None))
    return rows


def profile_diff(
    b: Path, a: Path, n: int, top: int, title: str, roots: tuple[Path, ...] = (ROOT,)
) -> None:
    """Print where profile `b` spends more than profile `a` (both cProfile stats files of the
    same load of `n` messages): per function, own time (tottime) and cumulative time in us per
    message, and calls per message in each, the top `top` by each time. A function one side
    calls per message and the other does not shows at once in the calls. Functions are matched
    by file, line and name, then by file and name (`_match`), so two checkouts compare.
    cProfile keys functions by file, line and name, so the `__init__`s dataclasses generate
    (`<string>:2`) share one entry, which holds only one of them: ignore those rows."""
    import pstats

    if not (a.exists() and b.exists()):
        print(f"a profile is missing ({a}, {b}): no comparison", file=sys.stderr)
        return
    sa = _relative(pstats.Stats(str(a)).stats, roots)  # type: ignore[attr-defined]
    sb = _relative(pstats.Stats(str(b)).stats, roots)  # type: ignore[attr-defined]
    rows = []
    for key, ea, eb in _match(sa, sb):
        na, ta, ca = (ea[1], ea[2], ea[3]) if ea else (0, 0.0, 0.0)
        nb, tb, cb = (eb[1], eb[2], eb[3]) if eb else (0, 0.0, 0.0)
        rows.append((tb - ta, cb - ca, tb, ta, nb, na, key))
    total = sum(r[2] for r in rows) - sum(r[3] for r in rows)
    own_a = sum(r[3] for r in rows)
    print(
        f"--- {title}, us per message; own time {own_a / n * 1e6:.1f} -> "
        f"{(own_a + total) / n * 1e6:.1f} ({total / n * 1e6:+.1f}) ---",
        file=sys.stderr,
    )
    for label, col in (("own time", 0), ("cumulative", 1)):
        print(f"  top {top} by {label} (calls per message: before -> after):", file=sys.stderr)
        for r in sorted(rows, key=lambda r: r[col], reverse=True)[:top]:
            f, line, fn = r[6]
            print(
                f"  {r[0] / n * 1e6:+8.2f} own {r[1] / n * 1e6:+8.2f} cum"
                f"  {r[5] / n:7.3f} -> {r[4] / n:7.3f}  {f}:{line}({fn})",
                file=sys.stderr,
            )
    new = sorted(
        (
            r
            for r in rows
            if r[4] / n >= 0.5
            and (r[5] == 0 or r[4] / r[5] > 1.1)
            and not r[6][0].startswith("<")  # see the docstring
        ),
        key=lambda r: -r[4],
    )
    if new:
        print("  called per message more often (>10%) or only after:", file=sys.stderr)
        for r in new[:top]:
            f, line, fn = r[6]
            print(
                f"    {r[5] / n:7.3f} -> {r[4] / n:7.3f} calls, {r[0] / n * 1e6:+8.2f} us own"
                f"  {f}:{line}({fn})",
                file=sys.stderr,
            )


def add_options(ap: argparse.ArgumentParser, what: str) -> None:
    """The A/B options both benchmarks take: --auth, --rounds, --exchange, --subjects,
    --baseline (`what`: "broker" or "brokers", for the help)."""
    ap.add_argument(
        "--auth",
        choices=("no", "yes", "both"),
        default="no",
        help="brokers without authentication, with it and the 50-rule ACL, or both (an A/B)",
    )
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat everything; with --auth both, alternating"
    )
    ap.add_argument(
        "--exchange",
        nargs="?",
        const=DEFAULT_EXCHANGE,
        default=None,
        metavar="NAME",
        help=f"also publish to this topic exchange, varying subjects (default {DEFAULT_EXCHANGE})",
    )
    ap.add_argument("--subjects", type=int, default=100, help="subjects cycled with --exchange")
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"A/B against the {what} of another checkout (its .venv/bin/python), same --auth",
    )
