"""What the SASL server and client share: buffers, the state, the bounded frame loop.

Sans-I/O: `feed` takes bytes read from the socket, `take_output` gives bytes to write. The
caller owns the socket and the timing; nothing here blocks or sleeps.
"""

from __future__ import annotations

from typing import Literal

from qstore.sasl.frames import (
    HEADER_SIZE,
    MAX_SASL_FRAME,
    SaslFrame,
    SaslProtocolError,
    decode_frame,
    split_frame,
)

State = Literal["pending", "ok", "failed"]

# A peer may make us hold at most this many bytes before the exchange ends: one maximal frame
# plus a header. Anything beyond is a peer that does not follow the protocol.
MAX_BUFFERED = HEADER_SIZE + MAX_SASL_FRAME


class SaslEndpoint:
    """One side of one connection's SASL exchange."""

    MAX_FRAMES = 4  # frames the peer may send in one exchange (empty frames count)

    def __init__(self) -> None:
        self.state: State = "pending"
        self.failure: str | None = None
        self.mechanism: str | None = None
        self.rest: bytes = b""
        self._in = bytearray()
        self._out = bytearray()
        self._frames = 0
        self._header_done = False
        self._paused = False  # a subclass waits for something other than bytes

    # --- the caller's side --------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes read from the peer. Once ok, further bytes are appended to `rest` (they belong
        to the AMQP layer); once failed, they are dropped (the caller is closing)."""
        if self.state == "ok":
            self.rest += bytes(data)
            return
        if self.state == "failed":
            return
        self._in += data
        self._run()

    def peer_closed(self) -> None:
        """The peer closed its side (EOF). If the exchange was still pending it fails with a
        line saying how far it got; `take_output()` is then empty (there is no one to tell)."""
        if self.state == "pending":
            self._fail(self._closed_failure())
            self._out.clear()

    def take_output(self) -> bytes:
        """Bytes to write to the peer now (possibly empty). Drain after every call that may
        produce some: feed, start, check_done."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- for subclasses -----------------------------------------------------------------------

    def _run(self) -> None:
        """Consume the header and then whole frames while the exchange is pending."""
        try:
            while self.state == "pending" and not self._paused:
                if not self._header_done:
                    if not self._on_header_bytes():
                        break
                    self._header_done = True
                    continue
                size = split_frame(self._in)
                if size == 0:
                    break
                frame = decode_frame(self._in[:size])
                del self._in[:size]
                self._frames += 1
                if self._frames > self.MAX_FRAMES:
                    raise SaslProtocolError(f"more than {self.MAX_FRAMES} SASL frames")
                if frame is not None:
                    self._on_frame(frame)
        except SaslProtocolError as exc:
            self._protocol_error(str(exc))
            return
        if self.state == "pending" and len(self._in) > MAX_BUFFERED:
            self._protocol_error(
                f"peer sent more than {MAX_BUFFERED} bytes before authentication completed"
            )

    def _send(self, data: bytes) -> None:
        self._out += data

    def _succeed(self) -> None:
        """The exchange is over: what is left of the input belongs to the AMQP layer."""
        self.state = "ok"
        self.rest = bytes(self._in)
        self._in.clear()
        self._paused = False

    def _fail(self, failure: str) -> None:
        self.state = "failed"
        self.failure = failure
        self._in.clear()
        self._paused = False

    def _closed_failure(self) -> str:
        return "SASL: the peer closed the connection during authentication"

    def _on_header_bytes(self) -> bool:
        """Look at the peer's protocol header in `_in`; True once it is accepted and consumed."""
        raise NotImplementedError

    def _on_frame(self, frame: SaslFrame) -> None:
        raise NotImplementedError

    def _protocol_error(self, message: str) -> None:
        raise NotImplementedError
