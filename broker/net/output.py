"""Encoded output taken out of proton, held until the socket takes it.

proton frames everything its sessions hold in one go, into an internal buffer it does not
measure (`pending()` never shows more than one frame's worth), so the only exact measure of a
slow peer's backlog is to hold the encoded bytes ourselves. Memory is the same: the bytes move,
they are not copied twice (the writer joins small chunks only).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from proton import Transport, TransportException

WRITE_CHUNK = 256 * 1024  # at most this much per socket send, unless one frame is bigger


class OutputHook(Protocol):
    """Sees (and may add to) proton's output before it is queued; set only while needed, as it
    costs a join of what each pull takes out of proton."""

    def inspect(self, data: bytes) -> bool:
        """`data`: whole frames proton has just written. True to have proton's next output
        (written after this call changed the engine) passed to `rewrite`."""
        ...

    def rewrite(self, data: bytes) -> bytes:
        """The frames to queue instead of `data`."""
        ...


class OutputBuffer:
    """Frames from one transport, oldest first; `size` counts them until `sent()`."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._chunks: deque[bytes | bytearray] = deque()
        self.size = 0  # includes the chunk being sent
        self.head_closed = False  # proton has nothing more to say, ever
        self.hold = False  # proton's output waits (the SASL layer speaks first)
        self.hook: OutputHook | None = None

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def pull(self) -> None:
        """Move everything proton has encoded so far into this buffer."""
        if self.hook is not None:
            self._pull_hooked(self.hook)
            return
        self.size += self._move(self._chunks)

    def _pull_hooked(self, hook: OutputHook) -> None:
        got: list[bytes | bytearray] = []
        self._move(got)
        data = b"".join(got)
        if hook.inspect(data):
            more: list[bytes | bytearray] = []
            self._move(more)
            data += hook.rewrite(b"".join(more))
        if data:
            self._chunks.append(data)
            self.size += len(data)

    def _move(self, into: deque[bytes | bytearray] | list[bytes | bytearray]) -> int:
        """Take proton's output into `into`; the bytes taken. When it returns, proton's buffer
        is empty, so what it took ends with a whole frame."""
        t = self._transport
        moved = 0
        while not (self.head_closed or self.hold):
            try:
                n = t.pending()
            except TransportException:
                n = -1
            if n < 0:
                self.head_closed = True
            elif n == 0:
                break
            else:
                into.append(t.peek(n) or b"")
                t.pop(n)
                moved += n
        return moved

    def push(self, data: bytes) -> None:
        """Bytes of our own (the SASL layer's) to send before anything proton encodes next."""
        if data:
            self._chunks.append(data)
            self.size += len(data)

    def take(self) -> bytes | bytearray:
        """The next chunk to send (small chunks joined); call `sent` once the socket took it."""
        chunks = self._chunks
        if len(chunks) == 1 or len(chunks[0]) >= WRITE_CHUNK:
            return chunks.popleft()
        parts: list[bytes | bytearray] = []
        size = 0
        while chunks and size < WRITE_CHUNK:
            size += len(chunks[0])
            parts.append(chunks.popleft())
        return b"".join(parts)

    def sent(self, n: int) -> None:
        self.size -= n
