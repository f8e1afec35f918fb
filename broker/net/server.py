"""The TCP listener: one `EnginePump` task per accepted socket, and a graceful stop.

Usage inside an anyio task group::

    server = Server("0.0.0.0", 5672, make_handler, idle_timeout=60)
    port = await tg.start(server.serve)   # the bound port (port 0: the OS chose it)
    ...
    await server.stop()                   # stop accepting, close connections, bounded

A connection's failure, whatever it is, stays in that connection's task: `serve` only ends by
`stop()` or by cancellation.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import ssl
from dataclasses import replace

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskStatus
from anyio.streams.tls import TLSStream

from .handler import HandlerFactory
from .handshake import HANDSHAKE_ERRORS, handshake_reason
from .limit import ConnectionLimit, Slot
from .options import Clock, ConnectionOptions, SaslFactory, peer_of
from .pump import EnginePump

log = logging.getLogger("qstore.net")

_ACCEPT_RETRY = 0.1  # after a failed accept (e.g. out of file descriptors) try again this soon
_EVICTED = "dropped before its AMQP open for a newer socket (at --max-connections)"

# One numbering for every connection of the process, whichever listener (plain, TLS) took it or
# whether we dialled it: the model knows a connection's consumers and queues by this id.
_conn_ids = itertools.count(1)


def next_conn_id() -> int:
    """A connection id unique in this process."""
    return next(_conn_ids)


class Server:
    """Accepts AMQP connections on one address and drives each in its own task."""

    def __init__(
        self,
        host: str,
        port: int,
        handler_factory: HandlerFactory,
        *,
        idle_timeout: float = 0.0,
        max_frame_size: int = 0,
        channel_max: int = 0,
        close_timeout: float = 5.0,
        linger: float = 1.0,
        open_timeout: float = 30.0,
        output_high_water: int = 1 << 20,
        sasl: SaslFactory | None = None,
        ssl_context: ssl.SSLContext | None = None,
        require_encryption: bool = False,
        limit: ConnectionLimit | None = None,
        clock: Clock | None = None,
        stop_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.stop_timeout = stop_timeout
        self._factory = handler_factory
        self._limit = limit
        self._ssl = ssl_context
        self._require_encryption = require_encryption and ssl_context is None
        options = ConnectionOptions(
            idle_timeout=idle_timeout,
            max_frame_size=max_frame_size,
            channel_max=channel_max,
            close_timeout=close_timeout,
            linger=linger,
            open_timeout=open_timeout,
            output_high_water=output_high_water,
            sasl=sasl,
        )
        self.options = replace(options, clock=clock) if clock is not None else options
        self._pumps: set[EnginePump] = set()
        self._accept_scope: anyio.CancelScope | None = None
        self._stopping = False
        self._idle: anyio.Event | None = None  # set when the last connection has gone
        self._done: anyio.Event | None = None  # set when serve() has returned

    @property
    def connections(self) -> list[EnginePump]:
        """The pumps of the open connections (a copy)."""
        return list(self._pumps)

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the bound port through `task_status`, accept until `stop()`, and
        return once every connection is gone."""
        self._done = anyio.Event()
        try:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
            self.port = int(listener.extra(SocketAttribute.local_port))
            log.info("listening on %s:%s", self.host, self.port)
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as scope:
                    self._accept_scope = scope
                    if self._stopping:
                        scope.cancel()
                    task_status.started(self.port)
                    async with anyio.create_task_group() as accepting:
                        for one in listener.listeners:  # one per address family of `host`
                            accepting.start_soon(self._accept_loop, one, tg)
                with anyio.CancelScope(shield=True):
                    await listener.aclose()
                log.info("stopped accepting on %s:%s", self.host, self.port)
        finally:
            self._done.set()

    async def _accept_loop(self, listener: SocketListener, tg: anyio.abc.TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # e.g. EMFILE: the listener itself is fine, try again soon
                log.warning("accept failed on port %s: %s", self.port, exc)
                await anyio.sleep(_ACCEPT_RETRY)
                continue
            limit = self._limit
            if limit is None:
                tg.start_soon(self._serve_connection, stream, next_conn_id(), None)
                continue
            slot, victim = limit.admit(peer_of(stream))
            if victim is not None:
                victim.drop(_EVICTED)
            if slot is None:
                await anyio.aclose_forcefully(stream)  # a refused TCP connection, at once
                continue
            tg.start_soon(self._run_limited, stream, next_conn_id(), slot)

    async def _run_limited(self, stream: SocketStream, conn_id: int, slot: Slot) -> None:
        """A connection holding a slot of the limit: until its pump runs, an eviction cancels
        it (e.g. in the TLS handshake); then the pump's abort does."""
        assert self._limit is not None
        scope = anyio.CancelScope()
        slot.drop = lambda reason: scope.cancel()
        try:
            if slot.evicted:  # dropped before this task began
                scope.cancel()
            else:
                with scope:
                    await self._serve_connection(stream, conn_id, slot)
            if scope.cancel_called:
                log.debug("conn=%s peer=%s: %s", conn_id, slot.peer, _EVICTED)
                with anyio.CancelScope(shield=True):
                    await anyio.aclose_forcefully(stream)
        finally:
            self._limit.release(slot)

    async def _serve_connection(
        self, stream: SocketStream, conn_id: int, slot: Slot | None
    ) -> None:
        secured = await self._secure(stream, conn_id)
        if secured is None:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            return
        try:
            pump = EnginePump(secured, self._factory, conn_id, self.options)
        except Exception:  # e.g. a failing setup_transport: our bug, keep it to this socket
            log.exception("conn=%s: cannot set up the connection", conn_id)
            with anyio.CancelScope(shield=True):
                await secured.aclose()
            return
        if slot is not None:
            pump.slot = slot
            slot.drop = pump.abort
        self._pumps.add(pump)
        try:
            await pump.run()
        except Exception:  # run() catches everything itself; this is the last fence
            log.exception("conn=%s peer=%s: connection task failed", pump.conn_id, pump.peer)
        finally:
            self._pumps.discard(pump)
            if not self._pumps and self._idle is not None:
                self._idle.set()

    async def _secure(self, stream: SocketStream, conn_id: int) -> SocketStream | None:
        """The stream to speak AMQP on: through TLS on a TLS listener (the handshake bounded by
        the open timeout); None to drop the socket (a failed handshake, or plain TCP from off
        this host with --require-encryption)."""
        peer = peer_of(stream)
        if self._ssl is None:
            if self._require_encryption and not _loopback(stream):
                log.warning(
                    "conn=%s peer=%s refused: connection is not encrypted "
                    "(--require-encryption; use the TLS port)",
                    conn_id,
                    peer,
                )
                return None
            return stream
        try:
            with anyio.fail_after(self.options.open_timeout or None):
                return await TLSStream.wrap(  # type: ignore[return-value]
                    stream, server_side=True, ssl_context=self._ssl, standard_compatible=False
                )
        except HANDSHAKE_ERRORS as exc:  # a peer that hangs up mid-handshake is EndOfStream
            reason = handshake_reason(exc)
            log.warning("conn=%s peer=%s: TLS handshake failed: %s", conn_id, peer, reason)
        except Exception:  # our bug or anyio's: it stays with this socket, never the listener
            log.exception("conn=%s peer=%s: TLS handshake failed", conn_id, peer)
        return None

    async def stop(self, timeout: float | None = None) -> None:
        """Stop accepting; let each connection's handler close it (by default with
        amqp:connection:forced); after `timeout` (default `stop_timeout`) drop the rest; return
        when `serve()` has."""
        timeout = self.stop_timeout if timeout is None else timeout
        self._stopping = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        self._idle = anyio.Event()
        if not self._pumps:
            self._idle.set()
        for pump in list(self._pumps):
            handler = pump.handler
            try:
                if handler is None:
                    pump.abort("server stopping")
                else:
                    handler.on_server_stop(pump)
            except Exception:
                log.exception("conn=%s peer=%s: on_server_stop failed", pump.conn_id, pump.peer)
                pump.abort("server stopping")
        with anyio.move_on_after(timeout):
            await self._idle.wait()
        for pump in list(self._pumps):
            pump.abort("server stop timed out")
        if self._done is not None:
            await self._done.wait()


def _loopback(stream: SocketStream) -> bool:
    with contextlib.suppress(Exception):
        return is_loopback(str(stream.extra(SocketAttribute.remote_address)[0]))
    return False


def is_loopback(host: str) -> bool:
    """Whether a peer address is this host's loopback, which --require-encryption lets in
    without TLS (an IPv4 client of a dual-stack socket shows as ::ffff:127.x.y.z)."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))
