"""What the benchmarks need to run with authentication on (`--auth yes|both`), shared by
broker_bench.py and ha_bench.py: a user database, an ACL of 50 rules, the brokers' options and
the credentials the stock proton clients log in with.

The ACL is the point of the exercise: it is written as a broker shared by several applications
would have it (groups, allow-log/deny-log, denies for other users and other queues, prefix and
topic wildcards, `${user}` substitutions, a host rule, a limit), and the grants the benchmark's
user needs come last but one (rules 44-49 of 50), so that every check the benchmark causes scans
the other tenants' rules first, as a real deployment's late-listed application would. The file
parses without warnings (no rule is shadowed), which `write_acl` checks.

The workers (separate processes) get the credentials through the environment (`BENCH_USER`,
`BENCH_PASSWORD`), never on a command line; the HA password goes to the brokers in a file
(`--ha-password-file`). Passwords are random per run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AUTH_LABELS = {"no": "none", "yes": "sasl+acl50"}  # --auth value -> the JSON lines' "auth"
ACL_RULES = 50  # without the HA user's rule
BENCH_USER = "bench"
HA_USER = "qstore-ha"
QUEUE_PREFIX = "bench."  # every benchmark queue's name starts so (the ACL grants these only)
SUBJECT_PREFIX = "bench."  # and every subject sent to an exchange
DEFAULT_EXCHANGE = "amq.topic"
ENV_USER = "BENCH_USER"
ENV_PASSWORD = "BENCH_PASSWORD"


def acl_text(user: str, exchange: str, ha_user: str | None = None) -> str:
    """The benchmark's ACL (see the module's docstring); with `ha_user`, its `allow all all`
    comes first, as the seed's HA guide has it, making 51 rules."""
    ha = f"acl allow {ha_user} all all\n" if ha_user else ""
    bind = (
        f"acl allow bench-users bind exchange name={exchange} queuename={QUEUE_PREFIX}*"
        f" routingkey={SUBJECT_PREFIX}#"
    )
    return f"""\
# The benchmark's ACL (bench/bench_auth.py): 50 rules in the seed's (qpidd's) syntax, as on a
# broker several applications share. The benchmark's own grants come late (44-49).
group admins admin ops-alice ops-bob
group ops-oncall ops-carol ops-dave
group orders-writers svc-orders svc-billing \\
    svc-shipping
group orders-readers svc-reports svc-audit svc-search
group monitors nagios prometheus
group legacy svc-legacy svc-batch
group tenants orders-writers orders-readers legacy
group bench-users {user}
{ha}
acl allow-log admins all all
acl allow-log ops-oncall access broker
acl allow-log ops-oncall purge queue name=dlq.*
acl allow ops-oncall access connection
acl deny-log ops-oncall all all
acl deny-log all access connection host=10.99.*
acl deny-log all create queue name=amq.*
acl deny-log all create exchange name=amq.*
acl deny-log all delete exchange name=amq.*
acl deny all consume queue name=audit.*
acl deny all publish exchange name=amq.topic routingkey=audit.#
acl deny all purge queue name=orders.*
acl deny all delete queue name=orders.*
acl allow monitors access connection
acl allow monitors access broker
acl allow monitors access query
acl allow monitors consume queue name=qmf.*
acl deny-log monitors all all
acl allow orders-writers access connection
acl allow orders-writers publish exchange name=orders routingkey=orders.#
acl allow orders-writers publish exchange name=amq.default routingkey=orders.*
acl allow orders-writers create queue name=orders.* durable=true
acl deny-log orders-writers consume queue name=orders.*
acl deny-log orders-writers all all
acl allow orders-readers access connection
acl allow orders-readers consume queue name=orders.*
acl allow orders-readers create queue name=reports.${{user}}.*
acl allow orders-readers bind exchange name=orders queuename=reports.* routingkey=orders.#
acl deny-log orders-readers publish all
acl deny-log orders-readers all all
acl allow legacy access connection
acl allow legacy publish exchange name=amq.direct routingkey=legacy.*
acl allow legacy consume queue name=legacy.*
acl allow legacy create queue name=legacy.* queuemaxsizeupperlimit=104857600
acl deny-log legacy all all
acl allow all create queue name=tmp.${{user}}.* autodelete=true
acl allow all consume queue name=tmp.${{user}}.*
acl allow all delete queue name=tmp.${{user}}.*
acl deny-log all publish exchange name=amq.fanout
acl deny-log all bind exchange name=amq.fanout
acl deny all create exchange durable=false
acl deny-log all update broker
acl deny-log tenants access broker
acl allow bench-users access connection
acl allow bench-users create queue name={QUEUE_PREFIX}*
acl allow bench-users consume queue name={QUEUE_PREFIX}*
acl allow bench-users publish exchange name=amq.default routingkey={QUEUE_PREFIX}#
acl allow bench-users publish exchange name={exchange} routingkey={SUBJECT_PREFIX}#
{bind}
acl deny-log all all
"""


def write_acl(path: Path, user: str, exchange: str, ha_user: str | None = None) -> int:
    """Write the ACL to `path`; the line of the first rule granting `user` anything (checked:
    50 rules, plus the HA user's; no warnings)."""
    from broker.acl import Acl, identity

    text = acl_text(user, exchange, ha_user)
    path.write_text(text)
    acl = Acl.parse(text, str(path))
    want = ACL_RULES + (1 if ha_user else 0)
    if len(acl.rules) != want or acl.warnings:
        raise RuntimeError(f"bench ACL: {len(acl.rules)} rules (want {want}), {acl.warnings}")
    uid = identity(user)
    return next(
        i
        for i, r in enumerate(acl.rules, start=1)
        if r.allowed and r.subjects is not None and uid in r.subjects
    )


@dataclass
class Security:
    """One mode's broker options and client credentials. `Security.none()` is `--auth no`."""

    auth: str  # "no" | "yes"
    broker_args: list[str]
    user: str | None = None
    password: str | None = None
    ha_user: str | None = None
    ha_password: str | None = None
    acl_first_grant: int | None = None  # the rule number of the bench user's first grant
    env: dict[str, str] = field(default_factory=dict)  # for the workers

    @property
    def label(self) -> str:
        return AUTH_LABELS[self.auth]

    @classmethod
    def none(cls) -> Security:
        return cls("no", ["--auth", "no"])

    @classmethod
    def make(cls, base: Path, *, exchange: str = DEFAULT_EXCHANGE, ha: bool = False) -> Security:
        """`--auth yes` with a fresh sasl-db (the bench user; with `ha`, the HA user too), the
        ACL, and with `ha` the HA password file; all under `base`."""
        from qstore.sasl.userdb import UserDb, write_private_file

        base.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(18)
        db = UserDb()
        db.set_password(BENCH_USER, password)
        args = ["--auth", "yes", "--sasl-db", str(base / "sasl-db"), "--acl-file"]
        args.append(str(base / "bench.acl"))
        ha_password = None
        if ha:
            ha_password = secrets.token_urlsafe(18)
            db.set_password(HA_USER, ha_password)
            write_private_file(base / "ha.password", f"{ha_password}\n".encode())
            args += ["--ha-username", HA_USER, "--ha-password-file", str(base / "ha.password")]
        db.save(base / "sasl-db")
        first = write_acl(base / "bench.acl", BENCH_USER, exchange, HA_USER if ha else None)
        return cls(
            "yes",
            args,
            BENCH_USER,
            password,
            HA_USER if ha else None,
            ha_password,
            first,
            {ENV_USER: BENCH_USER, ENV_PASSWORD: password},
        )

    def info(self) -> dict[str, Any]:
        """What the JSON lines say about this mode."""
        out: dict[str, Any] = {"auth": self.label}
        if self.acl_first_grant is not None:
            out["acl_first_grant_rule"] = self.acl_first_grant
        return out


def client_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A worker's `Container.connect` options: PLAIN with the bench user's credentials when the
    environment holds them (auth on), else nothing (the broker's ANONYMOUS)."""
    env = os.environ if environ is None else environ
    user = env.get(ENV_USER)
    if not user:
        return {}
    return {
        "user": user,
        "password": env.get(ENV_PASSWORD, ""),
        "allowed_mechs": "PLAIN",
        "allow_insecure_mechs": True,  # PLAIN over TCP on 127.0.0.1, as the seed's clients allow
    }
