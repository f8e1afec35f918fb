"""A raw AMQP 1.0 peer for tests: hand-made frames (performatives encoded with proton's `Data`)
on a plain socket, and the peer's frames read back and decoded, so that a test can say things no
proton `Transport` would (a transfer on a handle never attached, a begin past channel-max) and see
exactly what the broker answers. Every read is bounded."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from proton import Data, Described, symbol, ubyte, uint, ulong, ushort

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
OPEN, BEGIN, ATTACH, FLOW, TRANSFER, DISPOSITION, DETACH, END, CLOSE = range(0x10, 0x19)
NAMES = {
    OPEN: "open", BEGIN: "begin", ATTACH: "attach", FLOW: "flow", TRANSFER: "transfer",
    DISPOSITION: "disposition", DETACH: "detach", END: "end", CLOSE: "close",
}  # fmt: skip
SOURCE, TARGET, ERROR, ACCEPTED = 0x28, 0x29, 0x1D, 0x24
SENDER, RECEIVER = False, True  # an attach's role


class Raw(bytes):
    """A value already encoded, possibly ill-formed in a way no AMQP encoder would write (a
    string that is not UTF-8, a char past Unicode): what a hostile peer can send."""


def enc(value: Any) -> bytes:
    """The AMQP encoding of `value`: proton's for scalars, ours for the compound types (so that
    they can hold `Raw` values)."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, Described):
        return b"\x00" + enc(value.descriptor) + enc(value.value)
    if isinstance(value, list):
        body = b"".join(enc(v) for v in value)
        return b"\xd0" + struct.pack(">II", len(body) + 4, len(value)) + body
    if isinstance(value, dict):
        body = b"".join(enc(k) + enc(v) for k, v in value.items())
        return b"\xd1" + struct.pack(">II", len(body) + 4, 2 * len(value)) + body
    d = Data()
    d.put_object(value)
    return bytes(d.encode())


def encode(code: int, fields: list[Any]) -> bytes:
    return enc(Described(ulong(code), fields))


def frame(channel: int, code: int, fields: list[Any], payload: bytes = b"") -> bytes:
    body = encode(code, fields) + payload
    return struct.pack(">IBBH", 8 + len(body), 2, 0, channel) + body


def terminus(code: int, address: str | None) -> Described:
    return Described(ulong(code), [address])


def attach_frame(
    name: str, handle: int, role: bool, address: str | None, channel: int = 0
) -> bytes:
    src, tgt = (None, address) if role == SENDER else (address, None)
    fields = [name, uint(handle), role, ubyte(0), ubyte(0)]
    fields += [terminus(SOURCE, src), terminus(TARGET, tgt), None, None, uint(0)]
    return frame(channel, ATTACH, fields)


def transfer_frame(handle: int, delivery_id: int, payload: bytes, channel: int = 0) -> bytes:
    """The one transfer of a whole, unsettled message."""
    fields = [uint(handle), uint(delivery_id), str(delivery_id).encode(), uint(0), False]
    return frame(channel, TRANSFER, fields, payload)


@dataclass
class Frame:
    channel: int
    code: int
    fields: list[Any]

    @property
    def name(self) -> str:
        return NAMES.get(self.code, hex(self.code))

    def error(self) -> tuple[str, str] | None:
        """(condition, description) of a detach, end or close that carries an error."""
        index = {DETACH: 2, END: 0, CLOSE: 0}.get(self.code)
        if index is None or len(self.fields) <= index:
            return None
        err = self.fields[index]
        if not isinstance(err, Described):
            return None
        value = [*err.value, None, None]
        return str(value[0]), str(value[1] or "")

    def __repr__(self) -> str:
        return f"{self.name}@{self.channel}{self.fields!r}"


class RawPeer:
    """One connection, spoken frame by frame. `frames` keeps all the broker said, in order."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.addr = "{}:{}".format(*self.sock.getsockname())
        self.timeout = timeout
        self.frames: list[Frame] = []
        self._buf = b""
        self.eof = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, *frames: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(b"".join(frames))

    @staticmethod
    def hello(channel_max: int = 65535) -> bytes:
        """Our `open` frame (what `open` sends after the protocol header)."""
        return frame(0, OPEN, ["raw-peer", None, uint(65536), ushort(channel_max)])

    def open(self, channel_max: int = 65535) -> Frame:
        """The protocol header and an `open`; returns the broker's `open`."""
        self.send(AMQP_HEADER, self.hello(channel_max))
        return self.expect(OPEN)

    @staticmethod
    def begin_frame(channel: int = 0) -> bytes:
        return frame(channel, BEGIN, [None, uint(0), uint(2048), uint(2048)])

    def begin(self, channel: int = 0) -> Frame:
        self.send(self.begin_frame(channel))
        return self.expect(BEGIN, channel)

    def attach(
        self, name: str, handle: int, role: bool, address: str | None, channel: int = 0
    ) -> None:
        self.send(attach_frame(name, handle, role, address, channel))

    def transfer(
        self,
        handle: int,
        delivery_id: int | None,
        payload: bytes,
        channel: int = 0,
        *,
        more: bool = False,
        aborted: bool = False,
    ) -> None:
        """One transfer frame. `delivery_id` None: a continuation of the delivery in progress
        (no id, no tag); `more`: further frames of this delivery follow."""
        if not more and not aborted and delivery_id is not None:
            self.send(transfer_frame(handle, delivery_id, payload, channel))
            return
        if delivery_id is None:
            fields: list[Any] = [uint(handle), None, None, None, None, more]
        else:
            fields = [uint(handle), uint(delivery_id), str(delivery_id).encode(), uint(0), False]
            fields.append(more)
        if aborted:
            fields += [None, None, None, True]
        self.send(frame(channel, TRANSFER, fields, payload))

    def flow(self, handle: int | None, credit: int, channel: int = 0, count: int = 0) -> None:
        link = [] if handle is None else [uint(handle), uint(count), uint(credit)]
        self.send(frame(channel, FLOW, [uint(0), uint(2048), uint(0), uint(2048), *link]))

    @staticmethod
    def decode(data: bytes) -> Frame:
        """One whole frame (as `frame` makes it) back into a `Frame`."""
        _size, doff, _kind, channel = struct.unpack_from(">IBBH", data)
        d = Data()
        d.decode(data[doff * 4 :])
        d.rewind()
        d.next()
        value = d.get_object()
        return Frame(channel, int(value.descriptor), list(value.value or []))

    def _read_frame(self, deadline: float) -> Frame | None:
        while True:
            if len(self._buf) >= 8:
                if self._buf.startswith(b"AMQP"):
                    self._buf = self._buf[8:]
                    continue
                size, doff, _kind, channel = struct.unpack_from(">IBBH", self._buf)
                if len(self._buf) >= size:
                    body, self._buf = self._buf[doff * 4 : size], self._buf[size:]
                    if not body:
                        continue  # an empty frame: a heartbeat
                    d = Data()
                    d.decode(body)
                    d.rewind()
                    d.next()
                    try:
                        value = d.get_object()
                        f = Frame(channel, int(value.descriptor), list(value.value or []))
                    except (UnicodeDecodeError, ValueError, OverflowError, RecursionError):
                        # an attach echoing our ill-formed terminus: its kind, fields unread
                        f = Frame(channel, body[2] if body[:2] == b"\x00\x53" else -1, [])
                    self.frames.append(f)
                    return f
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            self._buf += chunk

    def expect(self, code: int, channel: int | None = None, timeout: float | None = None) -> Frame:
        """The next frame of that kind (others are kept in `frames`), or AssertionError."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            f = self._read_frame(deadline)
            assert f is not None, f"no {NAMES[code]} came; the broker said: {self.frames}"
            if f.code == code and (channel is None or f.channel == channel):
                return f

    def wait_eof(self, timeout: float = 15.0) -> None:
        """Read (and keep) frames until the broker closes the socket."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            assert time.monotonic() < deadline, f"the broker kept the socket open: {self.frames}"
            self._read_frame(deadline)


__all__ = [
    "ACCEPTED",
    "RECEIVER",
    "SENDER",
    "Frame",
    "Raw",
    "RawPeer",
    "attach_frame",
    "enc",
    "frame",
    "symbol",
    "transfer_frame",
]
