"""The address grammar of qpid.messaging, and what an address means for an AMQP 1.0 terminus.

    address = name ["/" subject] [";" options]
    options = map, in the qpid address syntax: {key: value, ...}; keys are bare words or quoted
              strings; values are maps, lists [a, b], quoted strings, numbers, True/False, or bare
              words (taken as strings: `{arguments: {'qpid.replicate': all}}`)

Supported options (anything else is refused, so that a typo is not silently ignored):

    create:  always | sender | receiver | never     (default never)
    assert, delete: never                            (other values are not supported)
    mode:    browse | consume                        (receivers; browse reads without consuming)
    node:    {type: queue | topic, durable: B,
              x-declare: {auto-delete: B, exclusive: B, type: EXCHANGE-TYPE, arguments: {...}}}
    link:    {name: S, reliability: unreliable | at-most-once | reliable | at-least-once |
              exactly-once, durable: B}

`create` that applies to the link's role becomes the terminus capability `create-on-demand` plus
node properties (durable, type, auto-delete, exclusive, exchange-type, arguments); the broker
creates the node from them. Unlike qpid.messaging, a node created without `durable` is durable:
that is the broker's default (broker/amqp/nodes.py); say `durable: False` for a transient one.
The name `#` on a receiver asks for a dynamic (broker-named) queue.
A subject is the default message subject of a sender, and a receiver's binding key on an exchange.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import AddressError

CREATE_VALUES = ("always", "sender", "receiver", "never")
RELIABILITY = ("unreliable", "at-most-once", "reliable", "at-least-once", "exactly-once")
UNRELIABLE = ("unreliable", "at-most-once")

_TOP_KEYS = {"create", "assert", "delete", "mode", "node", "link"}
_NODE_KEYS = {"type", "durable", "x-declare"}
_DECLARE_KEYS = {"auto-delete", "exclusive", "type", "arguments"}
_LINK_KEYS = {"name", "reliability", "durable"}

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<punct>[{}\[\]:,=])
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![\w.$-]))
      | (?P<word>[A-Za-z0-9_$#*.+/-]+)
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Address:
    """A parsed address: `name`, optional `subject`, and the options map as plain Python."""

    name: str
    subject: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name + (f"/{self.subject}" if self.subject else "")

    @property
    def create(self) -> str:
        return str(self.options.get("create", "never"))

    @property
    def browse(self) -> bool:
        return self.options.get("mode") == "browse"

    @property
    def node(self) -> dict[str, Any]:
        return self.options.get("node") or {}

    @property
    def link(self) -> dict[str, Any]:
        return self.options.get("link") or {}

    @property
    def link_name(self) -> str | None:
        name = self.link.get("name")
        return None if name is None else str(name)

    @property
    def unreliable(self) -> bool:
        return self.link.get("reliability") in UNRELIABLE

    @property
    def dynamic(self) -> bool:
        return self.name == "#"

    def creates_for(self, role: str) -> bool:
        """Whether a `role` ("sender" | "receiver") link asks the broker to create the node."""
        return self.create in ("always", role)

    def node_properties(self) -> dict[str, Any]:
        """The terminus node properties that shape a node the broker creates."""
        node = self.node
        declare = node.get("x-declare") or {}
        props: dict[str, Any] = {}
        if "type" in node:
            props["type"] = node["type"]
        if "durable" in node:
            props["durable"] = node["durable"]
        for key in ("auto-delete", "exclusive"):
            if key in declare:
                props[key] = declare[key]
        if "type" in declare:
            props["exchange-type"] = declare["type"]
        if declare.get("arguments"):
            props["arguments"] = dict(declare["arguments"])
        return props


def parse(text: str) -> Address:
    """Parse and validate an address; raise AddressError with a one-line reason."""
    if not isinstance(text, str):
        raise AddressError(f"an address is a string, not {type(text).__name__}")
    head, semi, rest = text.partition(";")
    name, slash, subject = head.strip().partition("/")
    name = _unquote(name.strip())
    subject = _unquote(subject.strip()) if slash else ""
    if not name:
        raise AddressError(f"address {text!r} has no name")
    options: dict[str, Any] = {}
    if semi:
        value = _Parser(rest, text).parse()
        if not isinstance(value, dict):
            raise AddressError(f"address {text!r}: the options after ';' must be a map {{...}}")
        options = value
    _validate(options, text)
    return Address(name, subject or None, options)


def _unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return _ESCAPE.sub(r"\1", s[1:-1])
    return s


class _Parser:
    """A recursive-descent parser over the tokens of an options map."""

    def __init__(self, text: str, whole: str) -> None:
        self.whole = whole
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            m = _TOKEN.match(text, pos)
            if m is None:
                self.fail(f"unexpected {text[pos : pos + 10]!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def fail(self, why: str) -> Any:
        raise AddressError(f"address {self.whole!r}: {why}")

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self, expected: str | None = None) -> tuple[str, str]:
        kind, text = self.peek()
        if kind == "end":
            wanted = f", expected {expected!r}" if expected else ""
            self.fail(f"unexpected end of options{wanted}")
        if expected is not None and text != expected:
            self.fail(f"expected {expected!r}, found {text!r}")
        self.i += 1
        return kind, text

    def parse(self) -> Any:
        value = self.value()
        if self.peek()[0] != "end":
            self.fail(f"unexpected {self.peek()[1]!r} after the options")
        return value

    def value(self) -> Any:
        kind, text = self.take()
        if text == "{" and kind == "punct":
            return self.map()
        if text == "[" and kind == "punct":
            return self.list()
        if kind == "string":
            return _unquote(text)
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "word":
            return {"True": True, "true": True, "False": False, "false": False}.get(text, text)
        return self.fail(f"unexpected {text!r}")

    def map(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.peek() == ("punct", "}"):
            self.take()
            return out
        while True:
            kind, key = self.take()
            if kind not in ("word", "string"):
                self.fail(f"expected a key, found {key!r}")
            kind, sep = self.take()
            if sep not in (":", "="):
                self.fail(f"expected ':' after key {key!r}, found {sep!r}")
            out[_unquote(key)] = self.value()
            _, text = self.take("}" if self.peek()[1] != "," else ",")
            if text == "}":
                return out

    def list(self) -> list[Any]:
        out: list[Any] = []
        if self.peek() == ("punct", "]"):
            self.take()
            return out
        while True:
            out.append(self.value())
            _, text = self.take("]" if self.peek()[1] != "," else ",")
            if text == "]":
                return out


def _validate(options: dict[str, Any], whole: str) -> None:
    def fail(why: str) -> None:
        raise AddressError(f"address {whole!r}: {why}")

    def check_keys(m: Any, allowed: set[str], where: str) -> dict[str, Any]:
        if not isinstance(m, dict):
            fail(f"{where or 'options'} must be a map")
        unknown = sorted(set(m) - allowed)
        if unknown:
            key = f"{where}.{unknown[0]}" if where else unknown[0]
            fail(f"unsupported option {key} (supported: {', '.join(sorted(allowed))})")
        return m

    def check_bool(m: dict[str, Any], key: str, where: str) -> None:
        if key in m and not isinstance(m[key], bool):
            fail(f"{where}.{key} must be True or False, not {m[key]!r}")

    check_keys(options, _TOP_KEYS, "")
    create = options.get("create", "never")
    if create not in CREATE_VALUES:
        fail(f"create must be one of {', '.join(CREATE_VALUES)}, not {create!r}")
    for key in ("assert", "delete"):
        if options.get(key, "never") != "never":
            fail(f"{key}: {options[key]} is not supported (only never)")
    if options.get("mode", "consume") not in ("browse", "consume"):
        fail(f"mode must be browse or consume, not {options['mode']!r}")
    node = check_keys(options.get("node", {}), _NODE_KEYS, "node")
    if node.get("type", "queue") not in ("queue", "topic"):
        fail(f"node.type must be queue or topic, not {node['type']!r}")
    check_bool(node, "durable", "node")
    declare = check_keys(node.get("x-declare", {}), _DECLARE_KEYS, "node.x-declare")
    check_bool(declare, "auto-delete", "node.x-declare")
    check_bool(declare, "exclusive", "node.x-declare")
    if not isinstance(declare.get("arguments", {}), dict):
        fail("node.x-declare.arguments must be a map")
    link = check_keys(options.get("link", {}), _LINK_KEYS, "link")
    if link.get("reliability", "reliable") not in RELIABILITY:
        fail(f"link.reliability must be one of {', '.join(RELIABILITY)}")
    check_bool(link, "durable", "link")
