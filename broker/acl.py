"""The access control list, in the file syntax of the seed's broker (qpidd's ACL module).

A file holds `group` lines, `acl` rules, comments and blank lines:

    # admins may do everything, the rest may only read the orders
    group admins alice bob@QPID \\
                 carol
    acl allow-log admins all all
    acl allow all access connection
    acl allow all consume queue name=orders.*
    acl allow all publish exchange name=amq.topic routingkey=orders.#
    acl deny-log all all

`group NAME MEMBER...`: a member is a user (`bob` or `bob@QPID`, kept as the identity `bob@QPID`)
or a group defined on an earlier line, whose members it adds. A group line may go on over the
next lines with a trailing `\\`. `acl PERMISSION SUBJECT ACTION [OBJECT [PROPERTY=VALUE ...]]`:
PERMISSION is `allow`, `deny`, `allow-log` or `deny-log`; SUBJECT one user, one group or `all`
(qpidd takes exactly one name there: a list of users is written as a group); ACTION one of
`ACTIONS` or `all`; OBJECT one of `OBJECTS` or `all`, and no object means all objects, as in
qpidd. Properties: see `PROPERTIES`.

How a request is decided (qpidd's semantics, from its AclReader/AclData; deviations are marked):
- Rules are tried top to bottom and the first rule that matches decides; when none matches the
  request is denied (qpidd's default mode is deny; a last `acl allow all all` makes it allow).
- A rule matches when its subject holds the user, its action and object are the request's (or
  `all`), and every property it names matches the request's value for that property. A property
  the rule names but the request does not carry makes the rule NOT match: qpidd's
  `AclData::lookupMatchRule` does the same ("the rule has a specified property that does not
  exist in the caller's lookup params list. This rule does not match"), so `acl allow all publish
  all durable=false` never admits a publish, whose lookup carries only `name` and `routingkey`.
  (qpidd skips that test when a lookup has no property map at all; here a lookup without
  properties is an empty map, so such a rule never matches it.)
- Text properties (`name`, `queuename`, `alternate`, ...) match exactly, or by prefix when the
  rule's value ends in `*` (`name=tmp.*`, `name=*`). `routingkey` is a topic pattern (`*` one
  word, `#` zero or more), matched with the broker's own topic matcher. `${user}`, `${domain}`
  and `${userdomain}` in `name`, `alternate`, `queuename` and `routingkey` become the requesting
  user's name, realm, and both, with `@` and `.` written as `_` (qpidd's substitution).
- On an exchange, the rule value `name=amq.default` matches the default exchange, named `''`
  (qpidd: ACL_KEYWORD_DEFAULT_EXCHANGE; a rule cannot write an empty value).
- The numeric limits (`queuemaxsizeupperlimit=N`, ... ; `maxqueuesize`/`maxqueuecount` are
  qpidd's aliases of the upper limits) compare with the request's `maxqueuesize`,
  `maxqueuecount`, ...; a rule whose limit is exceeded still matches, but an allow becomes a deny
  (allow-log a deny-log), as in qpidd. A limit of 0 means no limit.
- Deviations: a bare user name (`bob`) is the identity `bob@QPID`, where qpidd takes a bare
  member as a group and a bare subject as a realm-less name that never matches; so a name used
  as a user and then defined as a group is an error ("define groups before using them"). A `#`
  after white space starts a comment (qpidd knows only whole-line comments, but no valid qpidd
  line holds a token starting with `#`, so no qpidd file reads differently). Booleans must be
  `true` or `false`. `quota` lines, a `\\` ending an `acl` line and a property given twice are
  errors, where qpidd ignores them or misreads the next line. User names may hold any printable
  character but `=` (our user database's names), not only qpidd's `[A-Za-z0-9._/@-]`. qpidd
  turns its last `acl X all all` into its default mode, so a rule after it can still decide
  there, against qpidd's own documentation; here it never does, and `Acl.warnings` names every
  rule that an earlier rule without properties always decides first.

A bad file raises `AclError` with one line, `FILE:LINE: problem`. `Acl` is immutable: reloading
builds a new one (`load_or_keep`), so its publish cache never goes stale.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from broker.model import topic
from qstore.sasl.names import identity

DEFAULT_EXCHANGE_NAME = "amq.default"  # a rule's name for the default exchange ''
PUBLISH_CACHE_MAX = 10_000
NO_RULE = "no rule matched"

PERMISSIONS: dict[str, tuple[bool, bool]] = {  # word -> (allowed, log)
    "allow": (True, False),
    "allow-log": (True, True),
    "deny": (False, False),
    "deny-log": (False, True),
}
ACTIONS = frozenset(
    {
        "access", "bind", "consume", "create", "delete", "move",
        "publish", "purge", "redirect", "reroute", "unbind", "update",
    }
)  # fmt: skip
OBJECTS = frozenset({"broker", "connection", "exchange", "link", "method", "query", "queue"})

_TEXT_PROPS = (
    "name", "owner", "type", "alternate", "queuename", "exchangename",
    "schemapackage", "schemaclass", "host",
)  # fmt: skip
_TEXT = "text"
_TOPIC = "topic"
_BOOL = "bool"
_ENUM = "enum"
_LIMIT = "limit"

# rule property -> (kind, the request property it is compared with, upper limit?)
PROPERTIES: dict[str, tuple[str, str, bool]] = {
    **{p: (_TEXT, p, False) for p in _TEXT_PROPS},
    "routingkey": (_TOPIC, "routingkey", False),
    **{p: (_BOOL, p, False) for p in ("durable", "autodelete", "exclusive", "paging")},
    "policytype": (_ENUM, "policytype", False),
    **{
        f"{rule}{end}limit": (_LIMIT, request, end == "upper")
        for rule, request in (
            ("queuemaxsize", "maxqueuesize"),
            ("queuemaxcount", "maxqueuecount"),
            ("filemaxsize", "maxfilesize"),
            ("filemaxcount", "maxfilecount"),
            ("pages", "maxpages"),
            ("pagefactor", "maxpagefactor"),
        )
        for end in ("lower", "upper")
    },
}
PROPERTY_ALIASES = {  # qpidd's old names, still read
    "maxqueuesize": "queuemaxsizeupperlimit",
    "maxqueuecount": "queuemaxcountupperlimit",
}
POLICY_TYPES = ("ring", "self-destruct", "reject")
# What a request may carry (`check`'s props): the compared-with names above.
REQUEST_PROPERTIES = frozenset(request for _, request, _ in PROPERTIES.values())
_SUBSTITUTED = frozenset({"name", "alternate", "queuename", "routingkey"})
_SUBSTITUTIONS = ("${userdomain}", "${user}", "${domain}")
_LIMIT_MAX = (1 << 63) - 1

_GROUP_NAME = re.compile(r"[A-Za-z0-9_-]+")
_WHITESPACE = re.compile(r"[ \t\f\v\r]+")
_COMMENT = re.compile(r"(?:^|[ \t\f\v\r])#.*")
_KEYWORDS = ("acl", "group", "quota")

log = logging.getLogger(__name__)


class AclError(Exception):
    """A bad ACL file: one line, `FILE:LINE: problem` (`FILE: problem` when no line applies)."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source, self.line, self.problem = source, line, problem
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Decision:
    """An answer. `rule` says which rule gave it ("FILE:LINE"), or `NO_RULE` for the default;
    `log` is set by allow-log/deny-log rules, which ask for the decision to be logged."""

    allowed: bool
    log: bool
    rule: str


_DENY_BY_DEFAULT = Decision(False, False, NO_RULE)


_Test = Callable[[str, str, str], bool]  # (user identity, request object, request value)


@dataclass(frozen=True, slots=True)
class _Prop:
    """One `PROPERTY=VALUE` of a rule, with its test compiled once (`_compile`)."""

    key: str  # the rule's property (after aliases)
    request: str  # the request property it compares with
    value: str
    limit: bool  # a limit: failing it demotes the rule's allow, it does not skip the rule
    test: _Test


def _text_test(key: str, want: str) -> _Test:
    if key == "name" and want == DEFAULT_EXCHANGE_NAME:
        return lambda uid, obj, got: got == want or (got == "" and obj == "exchange")
    if key == "host" and want == "all":
        return lambda uid, obj, got: True
    if want.endswith("*"):
        prefix = want[:-1]
        return lambda uid, obj, got: got.startswith(prefix)
    return lambda uid, obj, got: got == want


def _compile(key: str, kind: str, value: str, upper: bool) -> _Test:
    """The test for one rule property; the common cases cost one comparison."""
    substituted = key in _SUBSTITUTED and any(s in value for s in _SUBSTITUTIONS)
    if kind == _TOPIC:
        if substituted:
            return lambda uid, obj, got: topic.match(
                topic.words(_substitute(value, uid)), topic.words(got)
            )
        pattern = topic.words(value)
        if pattern == ("#",):
            return lambda uid, obj, got: True
        return lambda uid, obj, got: topic.match(pattern, topic.words(got))
    if kind == _TEXT:
        if substituted:
            return lambda uid, obj, got: _text_test(key, _substitute(value, uid))(uid, obj, got)
        return _text_test(key, value)
    if kind == _LIMIT:
        limit = int(value)
        if limit == 0:  # qpidd: a limit of 0 is no limit
            return lambda uid, obj, got: True
        if upper:
            return lambda uid, obj, got: got.isdigit() and int(got) <= limit
        return lambda uid, obj, got: got.isdigit() and int(got) >= limit
    return lambda uid, obj, got: got == value  # booleans, policytype


@dataclass(frozen=True, slots=True)
class Rule:
    """One `acl` line. None in subjects/action/obj means `all`."""

    line: int
    where: str  # "FILE:LINE", the Decision's `rule`
    allowed: bool
    log: bool
    subjects: frozenset[str] | None
    action: str | None
    obj: str | None
    props: tuple[_Prop, ...]
    decision: Decision = field(init=False, repr=False, compare=False)
    demoted: Decision = field(init=False, repr=False, compare=False)  # a limit exceeded

    def __post_init__(self) -> None:
        object.__setattr__(self, "decision", Decision(self.allowed, self.log, self.where))
        object.__setattr__(self, "demoted", Decision(False, self.log, self.where))

    def applies_to(self, uid: str, action: str, obj: str) -> bool:
        return (
            (self.subjects is None or uid in self.subjects)
            and (self.action is None or self.action == action)
            and (self.obj is None or self.obj == obj)
        )

    def decide(self, uid: str, obj: str, request: Mapping[str, str]) -> Decision | None:
        """This rule's decision for a request it applies to, or None when a property differs."""
        inside = True
        for p in self.props:
            got = request.get(p.request)
            if got is None:
                return None  # qpidd: a property the request does not carry does not match
            if p.limit:
                inside = inside and p.test(uid, obj, got)
            elif not p.test(uid, obj, got):
                return None
        return self.decision if inside else self.demoted  # qpidd demotes allow to deny


class Acl:
    """The rules of one ACL file. Immutable; `check` scans, `allows_publish` caches."""

    def __init__(
        self,
        source: str,
        rules: Iterable[Rule],
        groups: Mapping[str, frozenset[str]],
        warnings: Iterable[str] = (),
    ) -> None:
        self.source = source
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.groups: Mapping[str, frozenset[str]] = dict(groups)
        self.warnings: tuple[str, ...] = tuple(warnings)
        self._publish: dict[tuple[str, str, str], Decision] = {}
        self._publish_rules: dict[str, tuple[Rule, ...]] = {}

    def __repr__(self) -> str:
        return f"<Acl {self.source}: {len(self.rules)} rules, {len(self.groups)} groups>"

    @classmethod
    def load(cls, path: Path) -> Acl:
        """Read and parse an ACL file; AclError (one line) when it cannot be read or is bad."""
        path = Path(path)
        source = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AclError(source, None, f"cannot read the ACL file: {exc.strerror}") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise AclError(source, line, "not UTF-8 text") from None
        return cls.parse(text, source)

    @classmethod
    def parse(cls, text: str, source: str = "<acl>") -> Acl:
        return _Parser(source).parse(text)

    # --- decisions -------------------------------------------------------------------------

    def check(
        self, user: str, action: str, obj: str, props: Mapping[str, object] | None = None
    ) -> Decision:
        """The decision on `user` doing `action` on `obj` with `props` (qpidd's property names:
        `REQUEST_PROPERTIES`; booleans may be given as bool). A linear scan: for attach-time
        checks. ValueError for an action, object or property this module does not know, which
        is a programming error, not a denial."""
        if action not in ACTIONS:
            raise ValueError(f"unknown ACL action {action!r}")
        if obj not in OBJECTS:
            raise ValueError(f"unknown ACL object {obj!r}")
        request = _request(props)
        uid = identity(user)
        for rule in self.rules:
            if rule.applies_to(uid, action, obj):
                decision = rule.decide(uid, obj, request)
                if decision is not None:
                    return decision
        return _DENY_BY_DEFAULT

    def publish_decision(self, user: str, exchange: str, routing_key: str) -> Decision:
        """`check(user, "publish", "exchange", {"name": exchange, "routingkey": routing_key})`,
        cached: for the per-message path. The default exchange is `''`."""
        decision = self._publish.get((user, exchange, routing_key))
        if decision is None:
            decision = self._publish_miss(user, exchange, routing_key)
        return decision

    def allows_publish(self, user: str, exchange: str, routing_key: str) -> bool:
        """May `user` publish to `exchange` with `routing_key`? One dict lookup once seen."""
        decision = self._publish.get((user, exchange, routing_key))
        if decision is None:
            decision = self._publish_miss(user, exchange, routing_key)
        return decision.allowed

    def _publish_miss(self, user: str, exchange: str, routing_key: str) -> Decision:
        """Decide from the user's publish rules only, and remember. The cache is cleared when
        full (a working set of subjects refills it at once; an LRU would cost on every hit)."""
        uid = identity(user)
        rules = self._publish_rules.get(uid)
        if rules is None:
            if len(self._publish_rules) >= PUBLISH_CACHE_MAX:
                self._publish_rules.clear()
            rules = tuple(r for r in self.rules if r.applies_to(uid, "publish", "exchange"))
            self._publish_rules[uid] = rules
        request = {"name": exchange, "routingkey": routing_key}
        decision = _DENY_BY_DEFAULT
        for rule in rules:
            found = rule.decide(uid, "exchange", request)
            if found is not None:
                decision = found
                break
        if len(self._publish) >= PUBLISH_CACHE_MAX:
            self._publish.clear()
        self._publish[(user, exchange, routing_key)] = decision
        return decision

    # --- words for people ------------------------------------------------------------------

    def denial(
        self, user: str, action: str, obj: str, props: Mapping[str, object] | None = None
    ) -> str:
        """The refusal's description: `ACL denied bob@QPID consume queue name=orders`."""
        return f"ACL denied {_describe(user, action, obj, props)}"

    def log_line(
        self,
        decision: Decision,
        user: str,
        action: str,
        obj: str,
        props: Mapping[str, object] | None = None,
    ) -> str:
        """The line an allow-log/deny-log decision is logged with (qpidd: `ACL Allow id:...`),
        naming the rule that decided."""
        request = _request(props)
        verdict = "Allow" if decision.allowed else "Deny"
        text = (
            f"ACL {verdict} id:{_shown(identity(user))} action:{action} ObjectType:{obj}"
            f" Name:{_shown(request.pop('name', ''))}"
        )
        rest = "".join(f" {k}={_shown(v)}" for k, v in request.items())
        return f"{text}{rest} ({_shown(decision.rule)})"


def load_or_keep(
    path: Path, old: Acl | None, logger: logging.Logger = log
) -> tuple[Acl | None, str | None]:
    """Reload (SIGHUP, `reload-acl`): (the new rules, None), or on a bad file (the old ones,
    the problem), with one log line naming the file, line and problem and saying which rules
    stay in force."""
    try:
        new = Acl.load(path)
    except AclError as exc:
        if old is None:
            logger.error("ACL: %s; no ACL was loaded before, so none is in force", exc)
        else:
            logger.error("ACL: %s; the rules read before from %s stay in force", exc, old.source)
        return old, str(exc)
    logger.info(
        "ACL: read %d rules and %d groups from %s", len(new.rules), len(new.groups), new.source
    )
    for warning in new.warnings:
        logger.warning("ACL: %s", warning)
    return new, None


# --- helpers ---------------------------------------------------------------------------------


def _request(props: Mapping[str, object] | None) -> dict[str, str]:
    """A request's properties as text: bools as true/false, numbers as digits."""
    request: dict[str, str] = {}
    for key, value in (props or {}).items():
        if key not in REQUEST_PROPERTIES:
            raise ValueError(f"unknown ACL request property {key!r}")
        if isinstance(value, bool):
            request[key] = "true" if value else "false"
        else:
            request[key] = str(value)
    return request


def _substitute(text: str, uid: str) -> str:
    """qpidd's ${user}/${domain}/${userdomain}, with `@` and `.` as `_`."""
    user, _, domain = uid.partition("@")

    def norm(s: str) -> str:
        return s.replace("@", "_").replace(".", "_")

    text = text.replace("${userdomain}", norm(uid))
    return text.replace("${user}", norm(user)).replace("${domain}", norm(domain))


def _shown(text: str) -> str:
    """A name as a log line or error may show it: bare when plain, else quoted and escaped (a
    newline in a queue name must not forge a log line)."""
    if text and text.isprintable() and not any(c.isspace() or c in "\"'\\" for c in text):
        return text
    body = "".join(
        c if c.isprintable() and c not in '"\\' else ("\\" + c if c in '"\\' else repr(c)[1:-1])
        for c in text
    )
    return f'"{body}"'


def _describe(user: str, action: str, obj: str, props: Mapping[str, object] | None) -> str:
    request = _request(props)
    parts = [_shown(identity(user)), _shown(action), _shown(obj)]
    if "name" in request:
        parts.append(f"name={_shown(request.pop('name'))}")
    parts.extend(f"{k}={_shown(v)}" for k, v in request.items())
    return " ".join(parts)


# --- the parser ------------------------------------------------------------------------------


class _Parser:
    """Reads the file line by line, as qpidd's AclReader does, and stops at the first error."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.groups: dict[str, set[str]] = {}
        self.group_lines: dict[str, int] = {}
        self.bare_names: dict[str, int] = {}  # a group-like name taken as a user, first line
        self.rules: list[Rule] = []
        self.line = 0

    def fail(self, problem: str, line: int | None = None) -> AclError:
        return AclError(self.source, self.line if line is None else line, problem)

    def parse(self, text: str) -> Acl:
        continuing: str | None = None  # the group a trailing '\' continues
        continued_at = 0
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the newline that ends the last line starts no line
        for self.line, raw in enumerate(lines, start=1):
            body = _COMMENT.sub("", raw.rstrip("\r"))
            tokens = [t for t in _WHITESPACE.split(body) if t]
            if not tokens:
                if _COMMENT.search(raw) and continuing is not None:
                    continue  # a comment line inside a group's list, as in qpidd
                if continuing is not None:
                    raise self.fail(
                        f"blank line where line {continued_at} ('\\' at its end) continues"
                        f" group {continuing}"
                    )
                continue
            more = tokens[-1] == "\\"
            if more:
                tokens.pop()
            elif tokens[-1].endswith("\\"):
                tokens[-1] = tokens[-1][:-1]
                more = True
            if not tokens:
                raise self.fail("a line holds nothing but '\\'")
            if continuing is not None:
                if tokens[0] in _KEYWORDS:
                    raise self.fail(
                        f"line {continued_at} ends in '\\', so this line continues group"
                        f" {continuing}, but it starts with '{tokens[0]}'"
                    )
                self.add_members(continuing, tokens)
                group = continuing
            elif tokens[0] == "group":
                group = self.group_line(tokens, more)
            elif tokens[0] == "acl":
                if more:
                    raise self.fail("'\\' continues only group lines; an acl rule is one line")
                self.acl_line(tokens)
                group = None
            elif tokens[0] == "quota":
                raise self.fail("'quota' rules are not supported (qstore has no per-user quotas)")
            else:
                raise self.fail(f"a line must start with 'group' or 'acl', not {_shown(tokens[0])}")
            continuing = group if more else None
            if more:
                continued_at = self.line
        if continuing is not None:
            raise self.fail(
                f"the file ends where a '\\' says group {continuing} continues", continued_at
            )
        groups = {name: frozenset(members) for name, members in self.groups.items()}
        return Acl(self.source, self.rules, groups, self.dead_rules())

    # --- group lines ---

    def group_line(self, tokens: list[str], more: bool) -> str:
        if len(tokens) < 2:
            raise self.fail("'group' needs a name and members: group NAME MEMBER...")
        name = tokens[1]
        if name == "all":
            raise self.fail("'all' is a keyword, not a group name")
        if not _GROUP_NAME.fullmatch(name):
            raise self.fail(f"group name {_shown(name)} may hold only letters, digits, '-' and '_'")
        if name in self.groups:
            raise self.fail(
                f"duplicate group {name} (first defined on line {self.group_lines[name]})"
            )
        if name in self.bare_names:
            raise self.fail(
                f"group {name} is defined after line {self.bare_names[name]} used the name"
                " (there it meant the user"
                f" {identity(name)}); define groups before using them"
            )
        if len(tokens) < 3 and not more:
            raise self.fail(f"group {name} has no members")
        self.groups[name] = set()
        self.group_lines[name] = self.line
        self.add_members(name, tokens[2:])
        return name

    def add_members(self, group: str, members: list[str]) -> None:
        into = self.groups[group]
        for member in members:
            if member == group:
                continue  # qpidd ignores a group naming itself
            if member in self.groups:
                into.update(self.groups[member])
            elif member == "all":
                raise self.fail("'all' cannot be a group member")
            else:
                into.add(self.user(member))

    def user(self, name: str) -> str:
        """A user name in a group or a rule, as its identity."""
        if "=" in name or not name.isprintable():
            raise self.fail(f"{_shown(name)} is not a user name")
        if name.startswith("@") or name.endswith("@"):
            raise self.fail(f"user name {_shown(name)} needs a name and a realm around '@'")
        if _GROUP_NAME.fullmatch(name):
            self.bare_names.setdefault(name, self.line)
        return identity(name)

    # --- acl lines ---

    def acl_line(self, tokens: list[str]) -> None:
        if len(tokens) < 4:
            raise self.fail(
                "an acl rule needs a permission, a subject and an action:"
                " acl PERMISSION SUBJECT ACTION [OBJECT [PROPERTY=VALUE ...]]"
            )
        _, permission, subject, action = tokens[:4]
        if permission not in PERMISSIONS:
            raise self.fail(
                f"unknown permission {_shown(permission)} (allow, allow-log, deny or deny-log)"
            )
        allowed, log_it = PERMISSIONS[permission]
        subjects = self.subjects(subject)
        if action != "all" and action not in ACTIONS:
            raise self.fail(f"unknown action {_shown(action)} (all, {', '.join(sorted(ACTIONS))})")
        if subject == "all" and action == "all" and len(tokens) > 4:
            raise self.fail(
                f"nothing may follow 'acl {permission} all all': it decides every request"
            )
        obj: str | None = None
        if len(tokens) > 4:
            obj = tokens[4]
            if "=" in obj:
                raise self.fail(f"property {_shown(obj)} needs an object before it")
            if obj != "all" and obj not in OBJECTS:
                raise self.fail(f"unknown object {_shown(obj)} (all, {', '.join(sorted(OBJECTS))})")
        props = self.properties(tokens[5:])
        self.rules.append(
            Rule(
                line=self.line,
                where=f"{self.source}:{self.line}",
                allowed=allowed,
                log=log_it,
                subjects=subjects,
                action=None if action == "all" else action,
                obj=None if obj in (None, "all") else obj,
                props=props,
            )
        )

    def subjects(self, subject: str) -> frozenset[str] | None:
        if subject == "all":
            return None
        if subject in self.groups:
            return frozenset(self.groups[subject])
        return frozenset({self.user(subject)})

    def properties(self, tokens: list[str]) -> tuple[_Prop, ...]:
        props: dict[str, _Prop] = {}
        for token in tokens:
            key, eq, value = token.partition("=")
            if not eq or not key or not value:
                raise self.fail(f"bad property {_shown(token)}: it must be NAME=VALUE")
            key = PROPERTY_ALIASES.get(key, key)
            if key not in PROPERTIES:
                raise self.fail(f"unknown property {_shown(key)}")
            if key in props:
                raise self.fail(f"property {key} is given twice")
            kind, request, upper = PROPERTIES[key]
            self.check_value(key, kind, value)
            props[key] = _Prop(
                key=key,
                request=request,
                value=value,
                limit=kind == _LIMIT,
                test=_compile(key, kind, value, upper),
            )
        return tuple(props.values())

    def check_value(self, key: str, kind: str, value: str) -> None:
        if kind == _BOOL and value not in ("true", "false"):
            raise self.fail(f"{key}={_shown(value)}: {key} is true or false")
        if kind == _ENUM and value not in POLICY_TYPES:
            raise self.fail(f"{key}={_shown(value)}: {key} is one of {', '.join(POLICY_TYPES)}")
        if kind == _LIMIT and not (value.isdigit() and int(value) <= _LIMIT_MAX):
            raise self.fail(f"{key}={_shown(value)}: {key} is a number from 0 to {_LIMIT_MAX}")
        if key == "host" and "," in value:
            raise self.fail(
                f"host={_shown(value)}: host ranges are not supported;"
                " give one host, a prefix ending in '*', or all"
            )

    # --- warnings ---

    def dead_rules(self) -> list[str]:
        """Rules an earlier property-less rule decides for every request they could match."""
        found = []
        for i, later in enumerate(self.rules):
            for earlier in self.rules[:i]:
                if earlier.props or not _covers(earlier, later):
                    continue
                found.append(
                    f"{later.where}: this rule never decides anything: line {earlier.line}"
                    " decides every request it could match"
                )
                break
        return found


def _covers(earlier: Rule, later: Rule) -> bool:
    return (
        (earlier.action is None or earlier.action == later.action)
        and (earlier.obj is None or earlier.obj == later.obj)
        and (
            earlier.subjects is None
            or (later.subjects is not None and later.subjects <= earlier.subjects)
        )
    )
