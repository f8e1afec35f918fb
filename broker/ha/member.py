"""The HA role's I/O edge: runs `HaRole` and carries out its actions.

It owns the timer the role asks for, the backup's connection attempts to the primary, the switch
from following to leading at promotion (a new epoch, the replication sink, the guard), and what the
rest of the broker asks of HA: who may connect, the status, promote. Decisions stay in `role.py`
(and `admission.py`): the member turns what happens into the role's events, and carries out the
actions it returns; an illegal transition is logged as critical and stops the broker.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup
from anyio.streams.tls import TLSStream

from broker.net import ConnectionOptions, EnginePump, next_conn_id
from broker.net.handshake import HANDSHAKE_ERRORS, handshake_reason
from broker.replication import stream
from broker.replication.stream import Item
from broker.security import client_context, ha_sasl_client
from qstore.urls import Address

from . import role as R
from .admission import Admission, admission
from .backup_link import BackupLink
from .primary import Primary, RecentLog
from .replicator import Replicator
from .states import BrokerState, IllegalTransition
from .status_check import StatusCheck
from .subscription import CATCH_UP_BATCH_BYTES

if TYPE_CHECKING:
    from broker.service import BrokerService

log = logging.getLogger("qstore.ha")

# The largest frame this broker takes on its connections to another (the primary's batches): a
# catch-up batch (a little over CATCH_UP_BATCH_BYTES) in one frame instead of 32 of proton's
# default 32 KiB, each an event, a transport pass and proton wrapper objects on the event loop.
PEER_MAX_FRAME = 2 * CATCH_UP_BATCH_BYTES
# What the pump takes of the socket's arrivals at once on those connections: asyncio reads up to
# 256 KiB a time, which the default 64 KiB cut in four (a copy of the rest each time) and four
# passes of the engine.
PEER_READ = 1 << 20


def _address_key(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("localhost", "0.0.0.0", "::", "::1"):
        host = "127.0.0.1"
    return host, int(port or 5672)


class HaMember:
    def __init__(self, service: BrokerService, clock: Callable[[], float]) -> None:
        cfg = service.cfg
        self.service = service
        self.clock = clock
        self.url = cfg.ha_brokers_url
        assert self.url is not None
        self.heartbeat = cfg.link_heartbeat_interval
        self.all_addresses = [f"{a.host}:{a.port}" for a in self.url.addresses]
        self._by_address: dict[str, Address] = {f"{a.host}:{a.port}": a for a in self.url.addresses}
        # `ssl:` peers: TLS checked against --ssl-ca-file, never a fall-back to plain TCP
        # (made now: a CA or key that cannot be used stops start-up)
        needs_tls = any(a.transport == "ssl" for a in self.url.addresses)
        self._tls = client_context(cfg) if needs_tls else None
        self.role = R.HaRole(
            addresses=[],
            maintenance_interval=cfg.link_maintenance_interval,
            backup_timeout=cfg.ha_backup_timeout,
            state=BrokerState.STANDALONE,
        )
        self.recent = RecentLog(service.events.seq)
        self.replicator = Replicator(service.model, service.events, self.recent)
        self.replicator.on_control = self._on_control
        self.replicator.deferring = not service.restored.is_set()
        self.primary: Primary | None = None
        self._tg: TaskGroup | None = None
        self._kick = anyio.Event()
        self._wake_at = 0.0
        self._link: EnginePump | None = None
        self._connecting = False
        service.events.numbering = False

    # -- identity -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.service.cfg.name

    @property
    def address(self) -> str:
        return f"{self.service.cfg.interface}:{self.service.port}"

    @property
    def state(self) -> BrokerState:
        return self.role.state

    def _others(self) -> list[str]:
        cfg = self.service.cfg
        me = {_address_key(self.address)}
        if cfg.ssl_port:
            me.add(_address_key(f"{cfg.interface}:{self.service.ssl_port}"))
        return [a for a in self.all_addresses if _address_key(a) not in me]

    def backup_info(self) -> dict[str, Any]:
        ev = self.service.events
        return {
            "name": self.name,
            "address": self.address,
            "state": str(self.state),
            "position": {"epoch": ev.epoch, "node": ev.history.node(ev.epoch), "seq": ev.seq},
            "epochs": ev.history.wire(),
        }

    # -- running ------------------------------------------------------------------------------

    async def run(self, tg: TaskGroup) -> None:
        """Join the cluster and keep the role's timer; returns when cancelled."""
        self._tg = tg
        self.handle(R.Started(self.name, self.address, tuple(self._others())))
        while True:
            delay = max(0.0, self._wake_at - self.clock()) if self._wake_at else 3600.0
            with anyio.move_on_after(delay):
                await self._kick.wait()
            self._wake_at = 0.0
            self.handle(R.Tick())
            # The tick's own WakeAt is in _wake_at already; the kick is only for an earlier
            # deadline that some other event sets while we sleep (else this loop would spin).
            self._kick = anyio.Event()

    def handle(self, event: object) -> list[R.Action]:
        try:
            actions = self.role.step(event, self.clock())
        except IllegalTransition as exc:
            self._fatal(str(exc))
            return []
        return self.handle_actions(actions)

    def handle_actions(self, actions: list[R.Action]) -> list[R.Action]:
        for a in actions:
            match a:
                case R.Transition(old=old, new=new, why=why):
                    log.info("state %s -> %s: %s", old, new, why)
                    if new == BrokerState.RECOVERING:
                        self._become_primary()
                case R.Connect(address=address):
                    if not self._connecting and self._tg is not None:
                        self._connecting = True
                        self._tg.start_soon(self._connect, address)
                case R.StartEpoch(number=number):
                    self._start_epoch(number)
                case R.TellReady(name=name):
                    if self.primary is not None:
                        self.primary.send_control(name, stream.READY)
                case R.TellCatchUp(name=name):
                    if self.primary is not None:
                        self.primary.send_control(name, stream.CATCH_UP)
                case R.Expect(name=name):
                    if self.primary is not None:
                        self.primary.expect(name)
                case R.StopExpecting(names=names):
                    if self.primary is not None:
                        self.primary.stop_expecting(names)
                case R.WakeAt(when=when):
                    if not self._wake_at or when < self._wake_at:
                        self._wake_at = when
                        self._kick.set()
                case R.Announce(members=members):
                    if self.primary is not None:
                        wire = [m.wire() for m in members]
                        self.primary.broadcast(stream.MEMBERSHIP, members=wire)
                case R.Refuse():
                    pass
        return actions

    def _fatal(self, why: str) -> None:
        log.critical("%s: stopping the broker", why)
        self.service.request_stop(exit_code=1)

    # -- backup side --------------------------------------------------------------------------

    async def _dial(
        self, address: str, timeout: float, handler: Callable[[EnginePump], Any]
    ) -> EnginePump:
        """A client connection to another broker, logged in as the HA identity (over TLS for
        an `ssl:` address); raises OSError or TimeoutError if the socket cannot be had."""
        host, port = _address_key(address)
        addr = self._by_address.get(address)
        with anyio.fail_after(timeout):
            sock: Any = await anyio.connect_tcp(host, port)
            if addr is not None and addr.transport == "ssl":
                sock = await self._handshake(sock, address, addr.host)
        cfg = self.service.cfg
        options = ConnectionOptions(
            client=True,
            idle_timeout=self.heartbeat * 2,
            open_timeout=max(2.0, self.heartbeat * 2),
            sasl=lambda d: ha_sasl_client(cfg, host),
            max_frame_size=PEER_MAX_FRAME,
            read_size=PEER_READ,
        )
        return EnginePump(sock, handler, next_conn_id(), options)

    async def _handshake(self, sock: Any, address: str, hostname: str) -> Any:
        """TLS over `sock`, checked against --ssl-ca-file and `hostname`. A failure is logged
        (a configuration mistake the operator must see: wrong CA, a plain port named `ssl:`)
        and raised as OSError; anyio's EndOfStream for a peer that hangs up is not one."""
        try:
            return await TLSStream.wrap(
                sock, hostname=hostname, ssl_context=self._tls, standard_compatible=False
            )
        except HANDSHAKE_ERRORS as exc:
            await anyio.aclose_forcefully(sock)
            reason = handshake_reason(exc)
            log.warning("cannot connect to ssl:%s: TLS handshake failed: %s", address, reason)
            raise OSError(f"TLS handshake failed: {reason}") from None
        except BaseException:  # cancelled (the dial's timeout): the socket is still ours to close
            await anyio.aclose_forcefully(sock)
            raise

    async def _connect(self, address: str) -> None:
        pump: EnginePump | None = None
        try:
            try:
                timeout = max(1.0, self.role.maintenance_interval * 5)
                pump = await self._dial(address, timeout, lambda d: BackupLink(self, d, address))
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                self.handle(R.ConnectFailed(address, str(exc) or type(exc).__name__))
                return
            self._link = pump
            await pump.run()
        finally:
            self._connecting = False
            if self._link is pump:
                self._link = None
            handler = pump.handler if pump is not None else None
            if pump is not None and not (isinstance(handler, BackupLink) and handler.attached):
                self.handle(R.ConnectFailed(address, "not a primary"))

    def primary_found(self, address: str) -> None:
        log.info("following primary %s", address)
        self.handle(R.PrimaryFound(address))

    def primary_lost(self, address: str, why: str) -> None:
        self.replicator.link_lost()
        if self.state.is_backup:
            log.warning("lost primary %s: %s", address, why)
        self.handle(R.PrimaryLost(why))

    def first_data(self) -> None:
        if self.state == BrokerState.JOINING:
            self.handle(R.FirstData())

    def _on_control(self, item: Item) -> None:
        if item.kind == stream.READY:
            self.handle(R.ToldReady())
        elif item.kind == stream.CATCH_UP:
            self.handle(R.ToldCatchUp())
        elif item.kind == stream.MEMBERSHIP and item.data is not None:
            try:
                members = R.members_from_wire(item.data.get("members") or ())
            except ValueError as exc:
                log.warning("ignored the primary's membership message: %s", exc)
                return
            self.handle(R.MembershipHeard(members))

    # -- promotion ----------------------------------------------------------------------------

    async def promote(self) -> str | None:
        """Promote this broker; return None, or why it was refused. A broker still restoring
        its journal's messages (it may be ready: it holds them durably) is promoted once its
        model holds them all: a primary serves from memory."""
        restored = self.service.restored
        if not restored.is_set():
            log.info("promote waits until this broker's messages are restored")
            await restored.wait()
        peers: list[tuple[str, BrokerState]] = []
        peer_epochs: list[int] = []
        if self.state == BrokerState.JOINING:
            for addr, st in (await self._peer_statuses()).items():
                try:
                    peers.append((addr, BrokerState.parse(str(st.get("state")))))
                except ValueError as exc:
                    log.warning("peer %s: %s", addr, exc)
                peer_epochs.append(int(st.get("epoch", 0)))
        ev = self.service.events
        known = (*ev.history.numbers, ev.epoch, *peer_epochs)
        for a in self.handle(R.Promote(tuple(peers), known_epochs=known)):
            if isinstance(a, R.Refuse):
                log.warning("promote refused: %s", a.reason)
                return a.reason
        return None

    async def _peer_statuses(self) -> dict[str, dict[str, Any]]:
        """The HA status of every other broker that answers within the heartbeat (at once)."""
        out: dict[str, dict[str, Any]] = {}

        async def ask(address: str) -> None:
            timeout = max(1.0, self.heartbeat)
            with anyio.move_on_after(timeout):
                try:
                    pump = await self._dial(
                        address, timeout, lambda d: StatusCheck(self, d, address)
                    )
                except (OSError, TimeoutError, ssl.SSLError):
                    return
                try:
                    await pump.run()
                finally:
                    pump.abort("status check over")
                handler = pump.handler
                if isinstance(handler, StatusCheck) and handler.status is not None:
                    out[address] = handler.status

        async with anyio.create_task_group() as tg:
            for address in self.role.addresses:
                tg.start_soon(ask, address)
        return out

    def _become_primary(self) -> None:
        if self._link is not None:
            self._link.abort("promoted")
        ev = self.service.events
        ev.replica = None
        ev.numbering = True
        self.primary = Primary(self, ev, self.recent)
        ev.sink = self.primary
        self.service.on_promoted()

    def _start_epoch(self, number: int) -> None:
        number, seq = self.service.events.start_epoch(number, self.service.journal.node_id)
        log.info("epoch %d starts at seq %d", number, seq)

    # -- primary side (called by Primary) -----------------------------------------------------

    def backup_connected(self, name: str, address: str, target: int) -> None:
        self.handle(R.BackupConnected(name, address, target))

    def backup_acked(self, name: str, seq: int) -> None:
        self.handle(R.BackupAcked(name, seq))

    def backup_lost(self, name: str, why: str) -> None:
        self.handle(R.BackupLost(name, why))

    # -- what the rest of the broker asks ------------------------------------------------------

    def admit(self, properties: dict[str, Any], privileged: Callable[[], bool]) -> Admission:
        """See `admission.admission` (privileged: the HA identity's, or `update broker`)."""
        return admission(properties, privileged, self.state)

    def status(self) -> dict[str, Any]:
        ev = self.service.events
        return {
            "name": self.name,
            "state": str(self.state),
            "epoch": ev.epoch,
            "position": [ev.epoch, ev.seq],
            "catch-ups": dict(self.replicator.catch_ups),
            "restoring": self.service.restoring,
            "brokers_url": ",".join(self.all_addresses),
            "members": [{**m.wire(), "position": None} for m in self.role.membership()],
        }
