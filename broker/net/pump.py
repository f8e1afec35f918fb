"""One connection: a proton engine (Transport, Connection, Collector) driven over an anyio socket.

Three small tasks share the engine on the event loop thread (the engine is never touched across
an await, so no locking is needed):

- the reader pushes socket bytes into the transport (never more than `capacity()`) and pumps;
- the timer waits for the engine's next heartbeat deadline (`transport.tick`), for the open
  and close deadlines, and pumps; `wake()` pumps from a loop callback instead (cheaper than a
  task switch: every settlement the journal releases wakes its connection);
- the writer sends what the pumps moved out of proton (`OutputBuffer`). Only this task waits on
  a slow peer, so a slow reader stalls nobody else, and while it waits the reader still takes
  the peer's input (its acknowledgements are what lets it drain). While the socket keeps up, a
  pump hands its output to the event loop's transport itself (it never blocks: the transport
  sends or buffers), which spares a task switch per pump; the writer takes over as soon as
  anything is left over or being sent. The socket edge and its shortcuts: sockio.py.

A pump ticks the engine, hands every collected event to the handler, runs the handler's
`process()` hook once, takes proton's output and wakes the writer. When proton closes its head
(`pending() < 0`: it has said everything, e.g. a close frame carrying a framing error) the
writer half-closes the socket and lingers briefly for the peer's EOF, so the peer reads that
frame instead of a reset. Every connection that starts closing is gone within `close_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import weakref
from collections.abc import Callable

import anyio
from anyio.abc import SocketStream
from anyio.streams.tls import TLSAttribute
from cproton import pn_session_head, pn_session_next, pn_session_outgoing_bytes
from cproton_ffi import ffi, lib
from proton import (
    Collector,
    Condition,
    Connection,
    Data,
    Described,
    Endpoint,
    Event,
    Transport,
    TransportException,
    symbol,
    ulong,
)

from .handler import ConnectionHandler, HandlerFactory
from .limit import Slot
from .options import ConnectionOptions, anonymous_sasl, peer_of
from .output import OutputBuffer, OutputHook
from .sockio import SocketIO

log = logging.getLogger("qstore.net")

_MAX_EVENTS_PER_DISPATCH = 100_000  # a handler that makes an event per event must not spin forever
# EndOfStream too: a TLS stream raises it on a send once the peer has closed
_SOCKET_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)
_INTERNAL_ERROR = "amqp:internal-error"
_FRAMING_ERROR = "amqp:connection:framing-error"
_DECODE_ERROR = "amqp:decode-error"
_CLOSE, _ERROR = 0x18, 0x1D  # descriptors of the close performative and of an error
_MAX_REASON = 200  # characters of a condition's description in a log line

# The raw engine calls of the dispatch loop (no wrapper objects; see `_dispatch`).
_NULL = ffi.NULL
_PN_DELIVERY = lib.PN_DELIVERY
_peek = lib.pn_collector_peek
_pop = lib.pn_collector_pop
_event_type = lib.pn_event_type
_event_link = lib.pn_event_link
_event_delivery = lib.pn_event_delivery
_wrap = Event.wrap
_PASSWORD_CHECKS = 2  # at most this many password checks (PBKDF2) at once, per process


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _password_checks() -> anyio.CapacityLimiter:
    """The event loop's limiter of password checks (a limiter belongs to one loop)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(_PASSWORD_CHECKS)
    return limiter


class EnginePump:
    """Drives one accepted socket; `run()` returns when the socket is closed, never raises."""

    def __init__(
        self,
        stream: SocketStream,
        handler_factory: HandlerFactory,
        conn_id: int,
        options: ConnectionOptions,
    ) -> None:
        self.conn_id = conn_id
        self.peer = peer_of(stream)
        self.handler: ConnectionHandler | None = None
        self.slot: Slot | None = None  # its place in the server's --max-connections, if any
        self._io = SocketIO(stream)
        self._factory = handler_factory
        self._opts = options
        self._clock = options.clock

        self.transport = Transport(Transport.CLIENT if options.client else Transport.SERVER)
        if options.max_frame_size:
            self.transport.max_frame_size = options.max_frame_size
        if options.channel_max:
            self.transport.channel_max = options.channel_max
        if options.idle_timeout:
            self.transport.idle_timeout = options.idle_timeout
        self.user: str | None = None  # the SASL identity, once authenticated ("name@QPID")
        self.mechanism: str | None = None  # the SASL mechanism it logged in with
        self.peer_certificate = stream.extra(TLSAttribute.peer_certificate, None)
        ssl_object = stream.extra(TLSAttribute.ssl_object, None)
        self.encrypted = ssl_object is not None
        self._tls_version: str | None = ssl_object.version() if ssl_object is not None else None
        self._sasl = options.sasl(self) if options.sasl is not None else None
        if self._sasl is None:
            anonymous_sasl(self.transport)
        self.connection = Connection()
        self._collector = Collector()
        self.connection.collect(self._collector)
        self.transport.bind(self.connection)

        self._signal = anyio.Event()  # the timer: a wake was requested or a deadline moved
        self._output = anyio.Event()  # the writer: the engine may have output
        self._reader_done = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._wake_requested = False
        self._loop = asyncio.get_running_loop()
        self._ended = False  # run() has returned: no more pumps
        self._tick_deadline = 0.0  # 0: the engine wants no tick
        self._timer_until = math.inf  # the deadline the timer currently sleeps towards
        self._drop_deadline: float | None = None
        self._open_deadline = self._clock() + options.open_timeout if options.open_timeout else None
        self._tail_closed = False
        self._deaf = False  # input after our `close` was dropped (the peer's `close` with it)
        self._bytes_in = 0
        self._aborted: str | None = None
        self._dropped = False
        self._error: str | None = None  # the first failure the pump itself saw
        self._handler_failed = False
        self._said = False  # the reason was logged already (as a warning)
        self._backed_up = False  # output_backed_up said True and output has not drained since
        self._out = OutputBuffer(self.transport)
        if self._sasl is not None:
            self._out.hold = True  # nothing of proton's goes out before the SASL outcome
            self._out.push(self._sasl.take_output())  # a client's SASL header
        self.finished = anyio.Event()

    # --- what the handler (the layer above) may use -------------------------------------------

    def wake(self) -> None:
        """Ask for a pump soon: pending events, `process()`, then flush. Call it from the event
        loop thread (any task), e.g. when another connection's message is routed to this one."""
        if self._wake_requested:  # a pump is due already (the flag is cleared by it)
            return
        self._wake_requested = True
        self._loop.call_soon(self._woken)

    def _woken(self) -> None:
        if self._wake_requested and not self._ended:
            self._wake_requested = False
            try:
                self._pump()
            except Exception as exc:  # as in run(): our bug, kept in this connection
                log.exception("conn=%s peer=%s: pump failed", self.conn_id, self.peer)
                self._error = self._error or f"internal error: {exc!r}"
                if self._scope is not None:
                    self._scope.cancel()

    def abort(self, reason: str = "aborted") -> None:
        """Drop the socket now and write nothing more; no further event reaches the handler
        (not even the begin/attach that came in the same read as the `open` being refused)."""
        if self._aborted is not None:
            return
        self._aborted = reason
        if self._scope is not None:
            self._scope.cancel()

    def close(self, condition: str | None = None, description: str | None = None) -> None:
        """Graceful AMQP close, with an error condition if given (e.g. amqp:connection:forced);
        bounded: the socket is dropped `close_timeout` later if the peer does not go."""
        if self._aborted is not None:
            return
        if not self.connection.state & Endpoint.LOCAL_CLOSED:
            if condition:
                self.connection.condition = Condition(condition, description)
            self.connection.close()
        self._start_closing()
        self.wake()

    def set_output_hook(self, hook: OutputHook | None) -> None:
        """Have `hook` see (and add to) proton's output before it is queued, or stop (None).
        Set it only while it has work: each pull then costs a join of its output."""
        self._out.hook = hook

    @property
    def output_pending_bytes(self) -> int:
        """Bytes the socket has not yet taken: encoded frames waiting for the writer (including
        the chunk it is sending) plus message data the sessions hold but have not framed yet."""
        queued = self._out.size
        # cproton directly: one wrapper object per session per call would be waste here
        ssn = pn_session_head(self.connection._impl, 0)
        while ssn:
            queued += pn_session_outgoing_bytes(ssn)
            ssn = pn_session_next(ssn, 0)
        return queued

    @property
    def output_backed_up(self) -> bool:
        """True above the high-water mark: stop feeding this connection. Once it drains to
        half the mark, the pump wakes itself, so `process()` runs and can feed again."""
        if self.output_pending_bytes > self._opts.output_high_water:
            self._backed_up = True
        return self._backed_up

    # --- the connection task ----------------------------------------------------------------

    def _tls_note(self) -> str:
        """The " tls=TLSv1.3" of an encrypted connection's accept line, so that the log shows which
        connections were plain."""
        return f" tls={self._tls_version}" if self._tls_version else ""

    async def run(self) -> None:
        log.info("accept conn=%s peer=%s%s", self.conn_id, self.peer, self._tls_note())
        try:
            self.handler = self._factory(self)
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                if self._aborted is not None:
                    tg.cancel_scope.cancel()
                tg.start_soon(self._read_loop)
                tg.start_soon(self._timer_loop)
                await self._write_loop()
                tg.cancel_scope.cancel()
        except Exception as exc:  # our bug, never the peer's doing: keep it in this connection
            log.exception("conn=%s peer=%s: pump failed", self.conn_id, self.peer)
            self._error = self._error or f"internal error: {exc!r}"
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    await self._io.aclose()
            self._ended = True
            self._finish()

    async def _read_loop(self) -> None:
        t = self.transport
        try:
            while True:
                try:
                    cap = t.capacity()
                except TransportException:
                    cap = -1
                if cap < 0:  # proton wants no more input (closed or failed)
                    self._input_ended()
                    break
                if cap == 0:  # cannot happen with proton's growing buffer; do not spin if it does
                    await anyio.sleep(0.01)
                    continue
                try:
                    data = await self._io.receive(min(cap, self._opts.read_size))
                except anyio.EndOfStream:
                    self._close_tail()
                    return
                except _SOCKET_ERRORS as exc:
                    self._error = self._error or f"read failed: {exc!r}"
                    self._close_tail()
                    return
                self._bytes_in += len(data)
                if self._sasl is not None:
                    data = await self._authenticate(data)
                    if self._sasl is not None:  # still authenticating, or failed
                        if self._sasl.state == "failed":
                            break
                        continue
                # On failure the engine has recorded why; what follows is read and dropped.
                # So is what follows our own `close`: proton would still take the peer's
                # transfers (and hold their bytes) until the peer's `close` came.
                if data:
                    if self.connection.state & Endpoint.LOCAL_CLOSED:
                        self._deaf = True
                    else:
                        with contextlib.suppress(TransportException, OverflowError):
                            t.push(data)
                self._pump()
            # Read and drop what the peer still sends until it goes, so that closing our end
            # does not reset the connection before the peer has read our last frame.
            while True:
                await self._io.stream.receive()
        except (anyio.EndOfStream, *_SOCKET_ERRORS):
            pass
        finally:
            self._reader_done.set()

    async def _authenticate(self, data: bytes) -> bytes:
        """Feed the SASL layer; once it succeeds, the bytes that followed its outcome (for
        proton). A password check runs in a worker thread, a few at a time, so that logins
        (failed ones included) never stall the event loop."""
        sasl = self._sasl
        assert sasl is not None
        sasl.feed(data)
        while sasl.pending_check is not None:
            check = sasl.pending_check
            ok = await anyio.to_thread.run_sync(check, limiter=_password_checks())
            sasl.check_done(ok)
        self._out.push(sasl.take_output())
        if sasl.state == "pending":
            self._output.set()
            return b""
        if sasl.state == "failed":
            self._say(sasl.failure or "SASL: authentication failed")
            self._out.head_closed = True  # the outcome goes out, then the socket closes
            self._start_closing()
            self._output.set()
            return b""
        self.user = sasl.user
        self.mechanism = sasl.mechanism
        self._sasl = None
        self._out.hold = False
        return sasl.rest

    def _say(self, why: str) -> None:
        """A failed login: one warning now (the seed's words), none again when the socket goes."""
        self._error = self._error or why
        log.warning("conn=%s peer=%s: %s", self.conn_id, self.peer, self._error)
        self._said = True

    def _close_tail(self) -> None:
        """The peer will send nothing more."""
        self._tail_closed = True
        sasl = self._sasl
        if sasl is not None:  # gone before the SASL outcome: proton never started
            if sasl.state == "pending":
                sasl.peer_closed()
                if self._bytes_in:  # not a port probe: say why, once
                    self._say(sasl.failure or "peer closed during SASL")
            self._out.head_closed = True
            self._output.set()
            return
        if self._deaf or self.connection.state & Endpoint.LOCAL_CLOSED:
            # We closed first (and may have stopped listening): a peer that hangs up now has
            # had our last word, which is what the log says, not that it aborted.
            self._pump()
            return
        with contextlib.suppress(TransportException):
            self.transport.close_tail()
        c = self.connection
        if self.transport.condition is None and not c.state & Endpoint.REMOTE_CLOSED:
            # proton reports an abort only between frames; cut mid-frame it would wait forever
            self._error = self._error or "peer closed the socket mid-frame"
            if not c.state & Endpoint.LOCAL_CLOSED:
                c.condition = Condition(_FRAMING_ERROR, "connection aborted mid-frame")
                c.close()
            self._start_closing()
            self._pump()  # whatever proton still writes (our open, a close if it will) goes out
            with contextlib.suppress(TransportException):
                self.transport.close_head()  # then nothing more: the peer is gone mid-frame
        self._pump()

    def _input_ended(self) -> None:
        """Proton reads no more. After the peer's `close`, or a failure proton recorded (its
        close frame says why), that is all. But proton 0.40 also stops in silence on a frame
        whose body is not a performative (a dispatch error with no condition set): unanswered,
        that peer would be kept until the idle timeout, even after it hung up. Say so then."""
        c = self.connection
        if self.transport.condition is not None or c.state & (
            Endpoint.REMOTE_CLOSED | Endpoint.LOCAL_CLOSED
        ):
            return
        why = "a frame that is not an AMQP performative"
        self._error = self._error or f"{_DECODE_ERROR}: {why}"
        c.condition = Condition(_DECODE_ERROR, why)
        c.close()
        self._start_closing()
        self._pump()
        if c.state & Endpoint.REMOTE_UNINIT and not self._out.head_closed:
            # Proton holds a `close` back until the peer's `open` has come, which now never
            # will: our `open` is out (the pump took it), the close is written here, and then
            # nothing more.
            self._out.push(_close_frame(_DECODE_ERROR, why))
            self._out.head_closed = True
            with contextlib.suppress(TransportException):
                self.transport.close_head()
            self._output.set()

    async def _timer_loop(self) -> None:
        while True:
            deadlines = [
                d for d in (self._tick_deadline, self._drop_deadline, self._open_deadline) if d
            ]
            self._timer_until = min(deadlines, default=math.inf)
            with anyio.move_on_after(max(0.0, self._timer_until - self._clock())):
                await self._signal.wait()
            self._signal = anyio.Event()
            self._timer_until = math.inf
            now = self._clock()
            if self._drop_deadline is not None and now >= self._drop_deadline:
                self._dropped = True
                break
            if self._open_deadline is not None and now >= self._open_deadline:
                # proton times nothing out before the first byte: a silent socket stops here
                self._error = self._error or f"no AMQP open within {self._opts.open_timeout} s"
                break
            if self._wake_requested or (self._tick_deadline and now >= self._tick_deadline):
                self._wake_requested = False
                self._pump()
        if self._scope is not None:
            self._scope.cancel()

    async def _write_loop(self) -> None:
        low_water = self._opts.output_high_water // 2
        while self._aborted is None:
            self._out.pull()
            if not self._out:
                if self._out.head_closed:  # everything proton had to say is on the wire
                    await self._linger()
                    return
                await self._output.wait()
                self._output = anyio.Event()
                continue
            data = self._out.take()
            try:
                await self._io.send(data)
            except _SOCKET_ERRORS as exc:
                self._error = self._error or f"write failed: {exc!r}"
                return
            self._out.sent(len(data))
            if self._backed_up and self.output_pending_bytes <= low_water:
                self._backed_up = False
                self.wake()  # drained: let the layer above feed again

    def _write_now(self) -> bool:
        """From a pump: the output goes to the socket at once if it keeps up (see sockio.py).
        True if all of it went."""
        if not self._io.write_now(self._out):
            return False
        if self._backed_up and self.output_pending_bytes <= self._opts.output_high_water // 2:
            self._backed_up = False
            self.wake()
        return True

    async def _linger(self) -> None:
        """Half-close, then give the peer a moment to read our last frames and go."""
        self._start_closing()
        try:
            await self._io.send_eof()
        except Exception:
            return
        with anyio.move_on_after(self._opts.linger):
            await self._reader_done.wait()
            while self._io.unsent() > 0:
                await anyio.sleep(0.01)

    # --- pumping events to the handler ------------------------------------------------------

    def _pump(self) -> None:
        """Tick, dispatch the events, run `process()`, dispatch what it caused, wake the writer."""
        if self._aborted is not None or self._sasl is not None:
            return  # before the SASL outcome the engine has nothing to say
        t = self.transport
        self._tick_deadline = t.tick(self._clock())
        self._dispatch()
        if self._handler is not None:
            self._call(self._handler.process)
        self._dispatch()
        if self._aborted is not None:
            return
        out = self._out
        out.pull()
        if out:
            if out.head_closed or not self._write_now():
                self._output.set()
        elif out.head_closed:
            self._output.set()
        if self._open_deadline is not None and not self.connection.state & Endpoint.REMOTE_UNINIT:
            self._open_deadline = None
        if (
            self._out.head_closed
            or t.condition is not None
            or self.connection.state & Endpoint.REMOTE_CLOSED
        ):
            self._start_closing()  # whatever happens next, the socket goes within close_timeout
        if self._tick_deadline and self._tick_deadline < self._timer_until:
            self._signal.set()  # the timer sleeps towards a later deadline: let it re-arm

    @property
    def _handler(self) -> ConnectionHandler | None:
        return None if self._handler_failed else self.handler

    def _dispatch(self) -> None:
        """Hand the collected events to the handler. A delivery goes first to the handler's
        `on_raw_delivery` as bare engine pointers; only what that declines (and every other,
        rarer, event) is wrapped in proton's Python objects, which cost about five wrapper
        objects per event: most of a message's CPU before this fast path."""
        collector = self._collector._impl
        for _ in range(_MAX_EVENTS_PER_DISPATCH):
            if self._aborted is not None:
                return
            event = _peek(collector)
            if event == _NULL:
                return
            try:
                handler = self._handler
                if handler is None:
                    continue
                if _event_type(event) == _PN_DELIVERY:
                    try:
                        if handler.on_raw_delivery(_event_link(event), _event_delivery(event)):
                            continue
                    except Exception as exc:
                        self._failed(exc)
                        continue
                self._call(handler.on_event, _wrap(event))
            finally:
                _pop(collector)
        self.wake()  # more to do: continue in a later pump, after the others had their turn

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """Our bug, not the peer's: say it loudly once, stop using this handler, close."""
        log.exception("conn=%s peer=%s: handler failed", self.conn_id, self.peer)
        self._handler_failed = True
        self._error = self._error or f"handler failed: {exc!r}"
        self.close(_INTERNAL_ERROR, "the broker failed on this connection")

    def _start_closing(self) -> None:
        if self._drop_deadline is None:
            self._drop_deadline = self._clock() + self._opts.close_timeout
            self._signal.set()

    # --- the end ------------------------------------------------------------------------------

    def _reason(self) -> tuple[str | None, str]:
        """(error for the handler, text for the log)."""
        if self._aborted is not None:
            return self._aborted, self._aborted
        if self._error is not None:
            return self._error, self._error
        if self._bytes_in == 0 and self._tail_closed:
            # a port probe or a client that gave up at once: not worth a warning
            return "peer closed without sending anything", "peer closed without sending anything"
        cond = self.transport.condition
        if cond is not None:
            text = _condition_text(cond)
            return text, text
        if self._dropped:
            return "close timed out", "close timed out"
        remote = self.connection.remote_condition
        if remote is not None:
            text = f"peer closed with {_condition_text(remote)}"
            return text, text
        local = self.connection.condition
        if local is not None:
            return None, f"closed with {_condition_text(local)}"
        return None, "closed"

    def _finish(self) -> None:
        error, text = self._reason()
        # A client end whose peer hung up without a word is an HA backup probing a broker
        # that is not primary (it drops the socket after our open): expected, not a warning.
        quiet = error is None or self._aborted is not None or self._bytes_in == 0 or self._said
        never_opened = bool(self.connection.state & Endpoint.REMOTE_UNINIT)
        quiet = quiet or (self._opts.client and never_opened)
        level = logging.INFO if quiet else logging.WARNING
        log.log(level, "close conn=%s peer=%s: %s", self.conn_id, self.peer, text)
        handler = self.handler
        if handler is not None:
            try:
                handler.on_closed(error)
            except Exception:
                log.exception("conn=%s peer=%s: handler on_closed failed", self.conn_id, self.peer)
        self.finished.set()


def _close_frame(condition: str, description: str) -> bytes:
    """An AMQP `close` frame on channel 0 carrying an error (encoded by proton's codec)."""
    error = Described(ulong(_ERROR), [symbol(condition), description])
    d = Data()
    d.put_object(Described(ulong(_CLOSE), [error]))
    body = bytes(d.encode())
    return struct.pack(">IBBH", 8 + len(body), 2, 0, 0) + body


def _condition_text(cond: Condition) -> str:
    """`name: description` on one line, cut short (proton quotes a garbage peer's bytes)."""
    text = f"{cond.name}: {cond.description}" if cond.description else str(cond.name)
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
