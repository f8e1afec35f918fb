"""The connection driver, fuzzed: nothing a peer sends may make the broker answer
`amqp:internal-error`, log a traceback, or die.

Hypothesis draws what a peer sends; each example speaks on its own socket to one of two real
broker processes shared by the module (one `--auth no`, one `--auth yes` with a user database, so
that the SASL layer in front of proton is fuzzed too). What is sent:

- random bytes after a valid protocol header (AMQP or SASL);
- well-framed frames with random bodies (random bytes, or a performative whose fields are random
  AMQP values), after a valid `open`;
- a valid conversation (open, begin, two attaches, flow, transfer, disposition, two detaches,
  end, close; hand-made with amqp_raw, every field present) with one thing wrong: one frame
  shortened (its size still right), the stream cut off mid-frame, a frame duplicated, two frames
  swapped, another protocol header, or one field (or a field of a source, target or outcome)
  replaced by an AMQP value of another type. The conversation goes in stages, as a client's
  does: the transfer waits for the broker's flow (credit), the disposition for its transfer;
- well-typed performatives in any order, with handles, ids and credit that collide or wrap;
  flows whose numbers are anything, followed by transfers; attaches whose source and target
  hold anything, followed by credit 1 or a message;
- SASL exchanges with random or truncated frames, and a PLAIN login (good or not) followed by a
  damaged conversation, pipelined as stock clients do.

Values are sometimes ill-formed as no encoder writes them (`Raw`): a string that is not UTF-8, a
symbol that is not ASCII, a char past Unicode, descriptors or lists nested thousands deep.

After sending, the peer sometimes half-closes (the broker then sees EOF wherever it was), reads
until the broker closes the socket or a short deadline passes, and hangs up. Each example then
asserts: everything the broker sent decodes, no close, end or detach carries amqp:internal-error,
the broker closed the connection (its log says so, within its close timeout), that connection's
log lines hold no traceback and no "driver failed" / "handler failed" / "internal error", and the
process is alive. After the tests a stock proton client still sends and receives on each broker
and the whole log is clean. Examples are derandomized (the same inputs on every run) and bounded
in number, so that the file runs in well under a minute (see `fuzz` for a longer hunt).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp_raw import (
    AMQP_HEADER,
    ATTACH,
    BEGIN,
    CLOSE,
    DETACH,
    DISPOSITION,
    END,
    FLOW,
    OPEN,
    RECEIVER,
    SENDER,
    TRANSFER,
    Frame,
    Raw,
    enc,
)
from broker_harness import BrokerProcess, Brokers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from proton import (
    Array,
    Data,
    Described,
    Message,
    byte,
    char,
    float32,
    int32,
    short,
    symbol,
    timestamp,
    ubyte,
    uint,
    ulong,
    ushort,
)
from proton.utils import BlockingConnection
from security_support import PASSWORDS, connect, secure_args

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
Stages = list[tuple[bytes, int | None]]  # bytes to send, then the performative to wait for
SASL_INIT, SASL_RESPONSE = 0x41, 0x43
ACCEPTED, SOURCE, TARGET = 0x24, 0x28, 0x29
QUEUE = "fuzz-q"
READ_DEADLINE = 0.4  # seconds an example waits for the broker to close the socket
STAGE_WAIT = 0.25  # seconds a stage waits for the broker's answer before the next is sent
CLOSE_WAIT = 5.0  # the broker drops a connection at once when we hang up; bounded anyway
BAD_LOG = re.compile(r"Traceback|driver failed|handler failed|internal error|internal-error|"
                     r"task failed|on_closed failed|cannot set up")  # fmt: skip


def fuzz(examples: int) -> settings:
    """`examples` per test. For a longer hunt: QSTORE_FUZZ_SCALE=20 runs twenty times as many,
    QSTORE_FUZZ_RANDOM=1 other ones on each run (hypothesis prints how to reproduce a failure)."""
    return settings(
        max_examples=examples * int(os.environ.get("QSTORE_FUZZ_SCALE", "1")),
        deadline=None,
        derandomize=not os.environ.get("QSTORE_FUZZ_RANDOM"),  # else CI is reproducible
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# -- the brokers --------------------------------------------------------------------------------


class Watched:
    """A broker, and the part of its log the examples have not looked at yet."""

    def __init__(self, proc: BrokerProcess, user: str | None = None) -> None:
        self.proc = proc
        self.user = user  # who a stock client logs in as (None: anonymous)
        self._offset = 0
        self._unread = ""

    def _read_log(self) -> None:
        with open(self.proc.log_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        self._unread += data.decode(errors="replace")

    def log_of(self, peer: str) -> str:
        """The log lines of our connection: from the broker's accept of it to its close (the
        driver's last line, written once the socket is gone; we wait for it, bounded: the broker
        drops a connection within its close timeout once we hang up), and the handler's lines
        that follow at once. What other connections left before the accept is skipped (it was
        theirs; the whole log is checked again at the end)."""
        deadline = time.monotonic() + CLOSE_WAIT
        mark = f" peer={peer}"
        while True:
            self._read_log()
            lines = self._unread.splitlines(keepends=True)
            start = next((i for i, x in enumerate(lines) if "accept conn=" in x and mark in x), 0)
            for i in range(start, len(lines)):
                if "close conn=" in lines[i] and f"{mark}: " in lines[i]:
                    conn = lines[i].split("close conn=", 1)[1].split()[0]
                    end = i + 1
                    while end < len(lines) and f" conn={conn} " in lines[end]:
                        end += 1
                    self._unread = "".join(lines[end:])
                    return "".join(lines[start:end])
            assert time.monotonic() < deadline, f"no close of {peer} in:\n{self._unread[-2000:]}"
            assert self.proc.alive(), self._unread[-3000:]
            time.sleep(0.005)

    def check(self, said: bytes, peer: str, sent: bytes) -> None:
        """What each example asserts once the broker has answered and closed (or we did)."""
        problems = _problems(said)
        assert not problems, f"broker said {problems} to {sent[:300]!r}"
        log = self.log_of(peer)
        bad = [line for line in log.splitlines() if BAD_LOG.search(line)]
        assert not bad, f"after {sent[:300]!r} the log says:\n" + "\n".join(bad)
        assert self.proc.alive(), self.proc.log()[-3000:]

    def converse(self, data: bytes | Stages, half_close: bool) -> None:
        """One example: `data` sent on its own socket, the broker's answer checked."""
        stages = [(data, None)] if isinstance(data, bytes) else data
        said, peer = converse(self, stages, half_close)
        self.check(said, peer, b"".join(part for part, _ in stages))

    def healthy(self) -> None:
        """A fresh stock proton client sends a message and receives it back."""
        assert self.proc.alive(), self.proc.log()[-3000:]
        body = f"after-fuzz-{uuid.uuid4()}"
        conn = (
            connect(self.proc.url, self.user)
            if self.user
            else BlockingConnection(self.proc.url, timeout=10)
        )
        try:
            address = f"fuzz-health-{uuid.uuid4()}"
            conn.create_sender(address).send(Message(body=body, durable=True))
            receiver = conn.create_receiver(address)
            assert receiver.receive(timeout=10).body == body
            receiver.accept()
        finally:
            conn.close()
        log = self.proc.log()
        bad = [line for line in log.splitlines() if BAD_LOG.search(line)]
        assert not bad, f"{len(bad)} bad log lines, the first:\n" + "\n".join(bad[:10])


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """`--auth no`: the peer may skip SASL, or log in with ANONYMOUS or PLAIN (unchecked)."""
    bs = Brokers(tmp_path_factory.mktemp("fuzz-plain"))
    try:
        yield Watched(bs.start(args=["--auto-create", "yes"]))
    finally:
        bs.stop_all()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """`--auth yes` with the test users: every byte goes through our SASL layer first."""
    tmp: Path = tmp_path_factory.mktemp("fuzz-secure")
    bs = Brokers(tmp)
    try:
        yield Watched(bs.start(args=secure_args(tmp, "--auto-create", "yes")), user="alice")
    finally:
        bs.stop_all()


# -- talking and listening ----------------------------------------------------------------------


def converse(broker: Watched, stages: Stages, half_close: bool) -> tuple[bytes, str]:
    """Send each stage on a new socket, waiting (up to STAGE_WAIT) for the performative it
    names before sending the next (as a real client waits for credit before it sends), then
    read until the broker closes the socket or READ_DEADLINE. What the broker said, and our
    address as it names its peer."""
    said = b""
    with socket.create_connection(("127.0.0.1", broker.proc.port), timeout=5) as s:
        peer = "{}:{}".format(*s.getsockname())
        for i, (data, wait_for) in enumerate(stages):
            last = i == len(stages) - 1
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(data)
                if last and half_close:
                    s.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + (READ_DEADLINE if last else STAGE_WAIT)
            closed = False
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    break
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                said += chunk
                if not last and wait_for in _codes(said):
                    break
            if closed:
                break
    return said, peer


def _codes(said: bytes) -> set[int]:
    """The performatives among the broker's whole frames so far (proton writes every
    descriptor as a small ulong)."""
    codes, buf = set(), said
    while len(buf) >= 8:
        if buf.startswith(b"AMQP"):
            buf = buf[8:]
            continue
        size, doff = struct.unpack_from(">IB", buf)
        if size < 8 or size > len(buf):
            break
        body, buf = buf[doff * 4 : size], buf[size:]
        if body[:2] == b"\x00\x53" and len(body) > 2:
            codes.add(body[2])
    return codes


def _problems(said: bytes) -> list[str]:
    """What is wrong with the broker's bytes: frames that do not decode, and amqp:internal-error
    anywhere (a close, end or detach's error, a rejected delivery's error)."""
    out = []
    if b"internal-error" in said:
        out.append(f"amqp:internal-error in {said[:500]!r}")
    buf = said
    while len(buf) >= 8:
        if buf.startswith(b"AMQP"):
            buf = buf[8:]
            continue
        size, doff, _kind, channel = struct.unpack_from(">IBBH", buf)
        if size < 8 or doff < 2 or doff * 4 > size:
            out.append(f"a bad frame header {buf[:8]!r}")
            break
        if size > len(buf):
            break  # cut off by our deadline
        body, buf = buf[doff * 4 : size], buf[size:]
        if not body:
            continue
        # An attach echoes the peer's own source and target, ill-formed as they came: proton's
        # Python may not read them back, and a described value whose descriptor is described
        # (reserved by AMQP 1.0) comes out of proton's encoder as what its decoder refuses.
        # That is the peer's own garbage, sent back to it alone. Any other frame is ours.
        echo = body[:3] == b"\x00\x53" + bytes([ATTACH])
        d = Data()
        try:
            d.decode(body)
            d.rewind()
            d.next()
            value = d.get_object()
        except Exception as exc:
            if not echo:
                out.append(f"a frame we cannot read {body[:100]!r}: {exc!r}")
            continue
        frame = Frame(channel, int(value.descriptor), list(value.value or []))
        err = frame.error()
        if err is not None and err[0] == "amqp:internal-error":
            out.append(f"{frame!r}")
    return out


# -- AMQP values ----------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_ascii = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=12)
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(0, 2**8 - 1).map(ubyte),
    st.integers(0, 2**16 - 1).map(ushort),
    st.integers(0, 2**32 - 1).map(uint),
    st.integers(0, 2**64 - 1).map(ulong),
    st.integers(-(2**7), 2**7 - 1).map(byte),
    st.integers(-(2**15), 2**15 - 1).map(short),
    st.integers(-(2**31), 2**31 - 1).map(int32),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(width=32).map(float32),
    st.floats(),
    st.characters(blacklist_categories=("Cs",)).map(char),
    st.integers(-(2**63), 2**63 - 1).map(timestamp),
    st.uuids(),
    st.binary(max_size=16),
    _text,
    _ascii.map(symbol),
)


def _sized(code: int, data: bytes) -> Raw:
    return Raw(bytes([code, len(data)]) + data)


def _nested(depth: int) -> Raw:
    """A list in a list ... `depth` deep."""
    out = b"\x45"
    for _ in range(depth):
        out = b"\xd0" + struct.pack(">II", len(out) + 4, 1) + out
    return Raw(out)


_ill_formed = st.one_of(
    st.binary(max_size=8).map(lambda b: _sized(0xA1, b + b"\xff")),  # str8, not UTF-8
    st.binary(max_size=8).map(lambda b: _sized(0xA1, b + b"\xed\xa0\x80")),  # a surrogate
    st.binary(max_size=4).map(lambda b: _sized(0xA1, b"\x00" + b + b"\xff")),  # cut at the NUL
    st.binary(max_size=8).map(lambda b: _sized(0xA3, b + b"\xc3\xa9")),  # sym8, not ASCII
    st.one_of(st.integers(0x110000, 2**32 - 1), st.integers(0xD800, 0xDFFF)).map(
        lambda n: Raw(b"\x73" + struct.pack(">I", n))  # a char that is no character
    ),
    st.integers(1, 3000).map(lambda n: Raw(b"\x00" * n + b"\x40" * (n + 1))),  # descriptors
    st.integers(1, 3000).map(_nested),
    st.sampled_from([(0x74, 4), (0x84, 8), (0x94, 16)]).flatmap(  # decimals, any bits
        lambda c: st.binary(min_size=c[1], max_size=c[1]).map(lambda b: Raw(bytes([c[0]]) + b))
    ),
)
_descriptor = st.one_of(st.integers(0, 0x80).map(ulong), _ascii.map(symbol))
_value = st.recursive(  # mostly well-formed, sometimes not
    st.one_of(_scalar, _scalar, _ill_formed),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(_text, _ascii.map(symbol), st.integers(0, 9).map(uint)), inner, max_size=3
        ),
        st.builds(Described, _descriptor, inner),
        st.lists(st.integers(0, 2**32 - 1).map(uint), max_size=4).map(
            lambda xs: Array(None, Data.UINT, *xs)
        ),
    ),
    max_leaves=6,
)
_field = st.one_of(_value, _ill_formed)  # a field's value: ill-formed half of the time


def _kind(value: Any) -> Any:
    """What tells two AMQP values' types apart (a described value by its descriptor)."""
    if isinstance(value, Described):
        return ("described", value.descriptor)
    if isinstance(value, Raw):
        return ("raw", value[:1])
    return type(value)


def amqp_frame(channel: int, code: int, fields: list[Any], payload: bytes = b"") -> bytes:
    body = enc(Described(ulong(code), fields)) + payload
    return struct.pack(">IBBH", 8 + len(body), 2, 0, channel) + body


def raw_frame(body: bytes, kind: int = 0, channel: int = 0, doff: int = 2) -> bytes:
    """A frame header that fits `body` (extended header bytes made up if doff > 2)."""
    pad = b"\x00" * (doff * 4 - 8)
    return struct.pack(">IBBH", 8 + len(pad) + len(body), doff, kind, channel) + pad + body


# -- a valid conversation, as lists of fields that can be damaged before encoding ----------------

MESSAGE = bytes(Message(body="fuzz", durable=True).encode())
HELLO = ["fuzz-peer", None, uint(65536), ushort(255)]


STAGE_OF = [0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2]  # of each frame of `conversation()`
WAIT_FOR = [FLOW, TRANSFER, None]  # what each stage waits for before the next is sent


def _padded(fields: list[Any], length: int) -> list[Any]:
    """All `length` fields of a performative or terminus, the absent ones null (so that each
    can be damaged)."""
    return [*fields, *[None] * (length - len(fields))]


def conversation() -> list[tuple[int, int, list[Any], bytes]]:
    """(channel, performative, fields, payload) of a whole good conversation, every field
    present: send one message, receive it, accept it, and end everything."""
    accepted = Described(ulong(ACCEPTED), [])

    def attach(name: str, handle: int, role: bool) -> list[Any]:
        source = _padded([None if role == SENDER else QUEUE], 11)
        target = _padded([QUEUE if role == SENDER else None], 7)
        fields = [name, uint(handle), role, ubyte(0), ubyte(0)]
        fields += [Described(ulong(SOURCE), source), Described(ulong(TARGET), target)]
        fields += [None, None, uint(0) if role == SENDER else None]
        return _padded(fields, 14)

    flow = [uint(0), uint(2048), uint(0), uint(2048), uint(1), uint(0), uint(10)]
    return [
        (0, OPEN, _padded(HELLO, 10), b""),
        (0, BEGIN, _padded([None, uint(0), uint(2048), uint(2048)], 8), b""),
        (0, ATTACH, attach("fuzz-s", 0, SENDER), b""),
        (0, ATTACH, attach("fuzz-r", 1, RECEIVER), b""),
        (0, FLOW, _padded(flow, 11), b""),
        # STAGES: the broker's flow (credit for the sender) comes before the transfer ...
        (0, TRANSFER, _padded([uint(0), uint(0), b"d0", uint(0), False], 11), MESSAGE),
        # ... and its transfer to the receiver before the disposition
        (0, DISPOSITION, _padded([RECEIVER, uint(0), uint(0), True, accepted], 6), b""),
        (0, DETACH, [uint(0), True, None], b""),
        (0, DETACH, [uint(1), True, None], b""),
        (0, END, [None], b""),
        (0, CLOSE, [None], b""),
    ]


def _paths(fields: list[Any]) -> list[tuple[int, ...]]:
    """Where a value can be replaced: each field, and each field of a described list inside
    (a source, a target, an outcome)."""
    out: list[tuple[int, ...]] = []
    for i, f in enumerate(fields):
        out.append((i,))
        if isinstance(f, Described) and isinstance(f.value, list):
            out += [(i, j) for j in range(len(f.value))]
    return out


def _replaced(fields: list[Any], path: tuple[int, ...], value: Any) -> list[Any]:
    fields = list(fields)
    if len(path) == 1:
        fields[path[0]] = value
    else:
        outer = fields[path[0]]
        inner = list(outer.value)
        inner[path[1]] = value
        fields[path[0]] = Described(outer.descriptor, inner)
    return fields


def _at(fields: list[Any], path: tuple[int, ...]) -> Any:
    value = fields[path[0]]
    return value if len(path) == 1 else value.value[path[1]]


@st.composite
def damaged_conversation(draw: st.DrawFn) -> Stages:
    """A valid conversation with one thing wrong, in its stages."""
    frames = conversation()
    how = draw(st.sampled_from(["field", "field", "shorten", "cut", "duplicate", "swap", "header"]))
    if how == "field":
        i = draw(st.integers(0, len(frames) - 1))
        channel, code, fields, payload = frames[i]
        paths = [*_paths(fields), (len(fields),)]  # or one field more than it had
        path = draw(st.sampled_from(paths))
        if path == (len(fields),):
            fields = [*fields, None]
        value = draw(_field)
        assume(_kind(value) != _kind(_at(fields, path)))
        frames[i] = (channel, code, _replaced(fields, path, value), payload)
    # [stage, bytes] of the header and each frame
    slots = [[0, AMQP_HEADER]] + [
        [stage, amqp_frame(*f)] for stage, f in zip(STAGE_OF, frames, strict=True)
    ]
    if how == "shorten":  # the body loses bytes at its end; the header says the new size
        i = draw(st.integers(1, len(slots) - 1))
        body = slots[i][1][8:]
        slots[i][1] = raw_frame(body[: draw(st.integers(0, len(body) - 1))])
    elif how == "duplicate":
        i = draw(st.integers(1, len(slots) - 1))
        slots.insert(i, list(slots[i]))
    elif how == "swap":  # the frames trade places; each place keeps its stage
        i = draw(st.integers(1, len(slots) - 2))
        j = draw(st.integers(i + 1, len(slots) - 1))
        slots[i][1], slots[j][1] = slots[j][1], slots[i][1]
    elif how == "header":  # another protocol, version or revision, or none
        headers = [SASL_HEADER, b"AMQP\x00\x01\x00\x01", b"AMQP\x02\x01\x00\x00", b"AMQP\x00\x00"]
        slots[0][1] = draw(st.sampled_from(headers) | st.binary(min_size=8, max_size=8))
    elif how == "cut":  # the stream ends mid-frame
        left = draw(st.integers(1, sum(len(data) for _, data in slots) - 1))
        for slot in slots:
            slot[1], left = slot[1][:left], max(0, left - len(slot[1]))
    stages = [b"".join(data for s, data in slots if s == stage) for stage in range(3)]
    return [(data, WAIT_FOR[i]) for i, data in enumerate(stages) if data]


_number = st.one_of(  # mostly small (what is open), sometimes at an edge (where ids wrap)
    *[st.integers(0, 3)] * 6, st.sampled_from([2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1])
).map(uint)
_handle = st.one_of(*[st.integers(0, 1).map(uint)] * 4, _number)  # mostly the attached ones
_outcome = st.sampled_from([0x23, 0x24, 0x25, 0x26, 0x27]).map(  # received .. modified
    lambda code: Described(ulong(code), [])
)
_error = st.builds(lambda c: Described(ulong(0x1D), [symbol(c), "fuzz"]), _ascii)


@st.composite
def performative(draw: st.DrawFn) -> bytes:
    """One well-typed performative with numbers, handles and channels a peer might get wrong:
    small ones (that collide with what is open) and edge ones (that wrap)."""
    channel = draw(st.sampled_from([0] * 8 + [1, 2]))
    maybe = st.none() | _number
    kind = draw(st.sampled_from([BEGIN, ATTACH, ATTACH, TRANSFER, TRANSFER, TRANSFER, FLOW,
                                 FLOW, DISPOSITION, DISPOSITION, DETACH, END]))  # fmt: skip
    if kind == BEGIN:
        remote = draw(st.none() | st.integers(0, 2).map(ushort))
        fields = [remote, draw(_number), draw(_number), draw(_number), draw(maybe)]
    elif kind == ATTACH:
        role = draw(st.booleans())
        address = draw(st.sampled_from([QUEUE, "$management", "fuzz-other", None]))
        dynamic = draw(st.booleans())
        source = Described(ulong(SOURCE), [None if role == SENDER else address, *[None] * 3,
                                           dynamic and role == RECEIVER])  # fmt: skip
        target = Described(ulong(TARGET), [address if role == SENDER else None, *[None] * 3,
                                           dynamic and role == SENDER])  # fmt: skip
        fields = [draw(st.sampled_from(["a", "b"])), draw(_handle), role]
        fields += [ubyte(draw(st.integers(0, 2))), ubyte(draw(st.integers(0, 1))), source, target]
        fields += [None, None, draw(maybe), draw(st.none() | st.integers(0, 2**64 - 1).map(ulong))]
    elif kind == TRANSFER:
        more = draw(st.booleans())
        fields = [draw(_handle), draw(maybe), draw(st.none() | st.binary(max_size=3)), uint(0)]
        fields += [draw(st.none() | st.booleans()), more, None, draw(st.none() | _outcome)]
        fields += [draw(st.booleans()), draw(st.booleans())]  # resume, aborted
        payload = draw(st.sampled_from([MESSAGE, MESSAGE[:5], b""]) | st.binary(max_size=20))
        return amqp_frame(channel, kind, fields, payload)
    elif kind == FLOW:
        fields = [draw(maybe), draw(_number), draw(_number), draw(_number)]
        fields += [
            draw(st.none() | _handle),
            draw(maybe),
            draw(maybe),
            draw(maybe),
            draw(st.booleans()),
            draw(st.booleans()),
        ]
    elif kind == DISPOSITION:
        fields = [draw(st.booleans()), draw(_number), draw(maybe), draw(st.booleans())]
        fields.append(draw(st.none() | _outcome))
    elif kind == DETACH:
        fields = [draw(_handle), draw(st.booleans()), draw(st.none() | _error)]
    else:
        fields = [draw(st.none() | _error)]
    return amqp_frame(channel, kind, fields)


# -- the tests: AMQP ----------------------------------------------------------------------------


@fuzz(40)
@given(data=st.binary(max_size=600), half_close=st.booleans())
def test_random_bytes_after_the_amqp_header(plain: Watched, data: bytes, half_close: bool) -> None:
    sent = AMQP_HEADER + data
    plain.converse(sent, half_close)


@fuzz(60)
@given(
    frames=st.lists(
        st.one_of(
            st.tuples(
                st.binary(max_size=64), st.integers(0, 3), st.integers(0, 300), st.integers(2, 5)
            ).map(lambda t: raw_frame(*t)),
            st.tuples(
                st.integers(0, 300),
                st.integers(0x10, 0x18),
                st.lists(_field, max_size=12),
                st.binary(max_size=32),
            ).map(lambda t: amqp_frame(*t)),
        ),
        min_size=1,
        max_size=4,
    ),
    begun=st.booleans(),
    half_close=st.booleans(),
)
def test_well_framed_frames_with_random_bodies(
    plain: Watched, frames: list[bytes], begun: bool, half_close: bool
) -> None:
    """After a good open (and begin): frames whose size is right and whose body is random bytes
    (any frame type, channel, data offset), or a performative with random fields."""
    sent = AMQP_HEADER + amqp_frame(0, OPEN, HELLO)
    if begun:
        sent += amqp_frame(0, BEGIN, [None, uint(0), uint(2048), uint(2048)])
    sent += b"".join(frames)
    plain.converse(sent, half_close)


@fuzz(150)
@given(data=damaged_conversation(), half_close=st.booleans())
def test_a_conversation_with_one_thing_wrong(
    plain: Watched, data: Stages, half_close: bool
) -> None:
    plain.converse(data, half_close)


@fuzz(120)
@given(
    frames=st.lists(performative(), min_size=1, max_size=25),
    begun=st.booleans(),
    half_close=st.booleans(),
)
def test_well_typed_performatives_in_any_order(
    plain: Watched, frames: list[bytes], begun: bool, half_close: bool
) -> None:
    """After a good open (and perhaps a session with a sender and a receiver that has credit),
    performatives whose every field has the right type but whose handles, channels, ids,
    credit and flags are whatever they happen to be."""
    prelude = conversation()[: 5 if begun else 1]
    hello = AMQP_HEADER + b"".join(amqp_frame(*f) for f in prelude)
    plain.converse([(hello, FLOW if begun else OPEN), (b"".join(frames), None)], half_close)


_count = st.one_of(_number, st.integers(0, 2**32 - 1).map(uint))


@fuzz(60)
@given(
    flow=st.tuples(
        st.none() | _count,
        _count,
        _count,
        _count,
        st.sampled_from([0, 0, 0, 1]).map(uint),  # mostly the link the peer sends on
        _count,  # delivery-count
        st.none() | _count,
        st.none() | _count,
        st.booleans(),
        st.booleans(),
    ),
    transfers=st.integers(0, 3),
)
def test_a_flow_of_any_numbers_then_transfers(
    plain: Watched, flow: tuple[Any, ...], transfers: int
) -> None:
    """Once the sender (handle 0) and the receiver (handle 1) are attached, a flow whose ids,
    windows, delivery-count and credit are anything (the peer's own accounting gone wrong),
    then transfers on the sender: the broker's credit arithmetic meets what the peer says."""
    prelude = AMQP_HEADER + b"".join(amqp_frame(*f) for f in conversation()[:5])
    then = amqp_frame(0, FLOW, list(flow))
    for i in range(transfers):
        then += amqp_frame(0, TRANSFER, [uint(0), uint(i), str(i).encode(), uint(0)], MESSAGE)
    plain.converse([(prelude, FLOW), (then, None)], half_close=True)  # EOF: no waiting


@fuzz(60)
@given(
    role=st.sampled_from([RECEIVER, SENDER]),
    address=st.sampled_from([QUEUE, "$management", None]) | _field,
    source=st.lists(_ill_formed | st.none() | _field, min_size=10, max_size=10),
    target=st.lists(_ill_formed | st.none() | _field, min_size=6, max_size=6),
)
def test_an_attach_with_any_terminus(
    plain: Watched, role: bool, address: Any, source: list[Any], target: list[Any]
) -> None:
    """An attach whose source and target fields are anything (the broker reads some, and
    echoes them all in its own attach), then credit 1 for a receiver or a message from a
    sender: what nodes are made of, and what is read back out of our own frames."""
    sender = role == SENDER
    src = Described(ulong(SOURCE), [None if sender else address, *source])
    tgt = Described(ulong(TARGET), [address if sender else None, *target])
    attach = ["t", uint(0), role, ubyte(0), ubyte(0), src, tgt]
    attach += [None, None, uint(0) if sender else None]
    hello = AMQP_HEADER + b"".join(amqp_frame(*f) for f in conversation()[:2])
    hello += amqp_frame(0, ATTACH, attach)
    if sender:
        then = amqp_frame(0, TRANSFER, [uint(0), uint(0), b"t", uint(0)], MESSAGE)
    else:
        then = amqp_frame(
            0, FLOW, [uint(0), uint(2048), uint(0), uint(2048), uint(0), None, uint(1)]
        )
    plain.converse([(hello, ATTACH), (then, None)], half_close=True)


def test_plain_broker_still_serves(plain: Watched) -> None:
    """Runs after the fuzzing above (pytest keeps the file's order)."""
    plain.healthy()


# -- the tests: SASL ----------------------------------------------------------------------------


def sasl_frame(code: int, fields: list[Any]) -> bytes:
    return raw_frame(enc(Described(ulong(code), fields)), kind=1)


def plain_login(user: str = "alice", password: str | None = None) -> bytes:
    """A SASL header and a PLAIN sasl-init (what a stock client pipelines)."""
    secret = PASSWORDS.get(user, "") if password is None else password
    response = b"\0" + user.encode() + b"\0" + secret.encode()
    return SASL_HEADER + sasl_frame(SASL_INIT, [symbol("PLAIN"), response])


_mechanism = st.one_of(
    st.sampled_from(["PLAIN", "ANONYMOUS", "EXTERNAL", "SCRAM-SHA-256", "SCRAM-SHA-512"]).map(
        symbol
    ),
    _ascii.map(symbol),
    _field,
)
_sasl_init = st.tuples(
    _mechanism,
    st.one_of(st.none(), st.binary(max_size=40), _field),
    st.one_of(st.none(), _text, _field),
).map(lambda t: sasl_frame(SASL_INIT, list(t)))
_sasl_frames = st.one_of(
    st.tuples(st.binary(max_size=64), st.integers(0, 2), st.integers(0, 3), st.integers(2, 4)).map(
        lambda t: raw_frame(*t)
    ),
    st.tuples(st.integers(0x40, 0x44), st.lists(_field, max_size=4)).map(lambda t: sasl_frame(*t)),
    _sasl_init,
    st.one_of(st.binary(max_size=80), _field).map(lambda r: sasl_frame(SASL_RESPONSE, [r])),
)


@fuzz(80)
@given(
    first=st.one_of(_sasl_init, _sasl_frames),
    frames=st.lists(_sasl_frames, max_size=3),
    cut=st.none() | st.integers(1, 400),
    half_close=st.booleans(),
)
def test_sasl_frames_with_random_bodies(
    secure: Watched, first: bytes, frames: list[bytes], cut: int | None, half_close: bool
) -> None:
    """A SASL header, then SASL frames with random bodies or fields (or cut short)."""
    sent = SASL_HEADER + first + b"".join(frames)
    if cut is not None:
        sent = sent[: 8 + cut]
    secure.converse(sent, half_close)


@fuzz(30)
@given(data=st.binary(max_size=400), sasl=st.booleans(), half_close=st.booleans())
def test_random_bytes_after_the_sasl_header(
    secure: Watched, data: bytes, sasl: bool, half_close: bool
) -> None:
    sent = (SASL_HEADER if sasl else AMQP_HEADER) + data
    secure.converse(sent, half_close)


@fuzz(40)
@given(
    login=st.sampled_from(["good", "good", "bad-password", "unknown-user"]),
    data=damaged_conversation(),
    cut=st.none() | st.integers(0, 120),
    half_close=st.booleans(),
)
def test_a_login_then_a_conversation_with_one_thing_wrong(
    secure: Watched, login: str, data: Stages, cut: int | None, half_close: bool
) -> None:
    """PLAIN (pipelined with what follows, as stock clients do), perhaps cut short, then a
    damaged conversation: the handover from our SASL layer to proton."""
    hello = {
        "good": plain_login(),
        "bad-password": plain_login(password="wrong"),
        "unknown-user": plain_login("zed", "zed-secret"),
    }[login]
    if cut is not None:
        secure.converse(hello[: min(cut, len(hello) - 1)], half_close)
        return
    (first, wait_for), *rest = data
    secure.converse([(hello + first, wait_for), *rest], half_close)


@fuzz(30)
@given(
    mechanism=st.sampled_from(["ANONYMOUS", "PLAIN"]),
    response=st.none() | st.binary(max_size=40) | _field,
    data=st.binary(max_size=200).map(lambda b: [(b, None)]) | damaged_conversation(),
    half_close=st.booleans(),
)
def test_sasl_on_a_broker_without_auth(
    plain: Watched, mechanism: str, response: Any, data: Stages, half_close: bool
) -> None:
    """`--auth no` speaks SASL too (ANONYMOUS, PLAIN unchecked): a random initial response,
    then random bytes or a damaged conversation."""
    hello = SASL_HEADER + sasl_frame(SASL_INIT, [symbol(mechanism), response])
    (first, wait_for), *rest = data
    plain.converse([(hello + first, wait_for), *rest], half_close)


def test_brokers_still_serve(plain: Watched, secure: Watched) -> None:
    plain.healthy()
    secure.healthy()
