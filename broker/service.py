"""One broker process assembled: journal, model, event log, outbox, management, listener.

Start-up: lock and open the journal, replay it into the model (every durable queue, exchange,
binding and message comes back, in order, with its delivery count), then listen. Stop: stop
accepting, close every connection with amqp:connection:forced, let the journal flush, release the
data directory.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from broker.amqp.connection import AmqpConnection, Core
from broker.amqp.flowgate import FlowGate
from broker.amqp.limits import Limits
from broker.amqp.outbox import Outbox
from broker.config import BrokerConfig
from broker.eventlog import EventLog
from broker.ha.member import HaMember
from broker.mgmt.node import Management
from broker.model import Broker
from broker.net import Server
from broker.net.limit import ConnectionLimit, ha_reserve
from broker.restore import MessageRestore, no_collection, restore_entities
from broker.security import Authenticator, Authorizer, server_context
from broker.sysmem import max_memory
from qstore.journal import Journal, faults

log = logging.getLogger("qstore.broker")

HOUSEKEEPING_INTERVAL = 1.0  # seconds between sweeps for expired messages
GC_THRESHOLDS = (10_000, 20, 20)  # the cyclic collector's, for a broker (see run())


class BrokerService:
    def __init__(self, cfg: BrokerConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.ha: HaMember | None = None
        self.model = Broker()
        self.model.default_queue_limit = cfg.default_queue_limit  # before restore: it is a setting
        self.model.default_dedup_window = cfg.dedup_window  # new queues only: see Registry
        t0 = time.monotonic()
        self.journal = Journal(
            cfg.data_dir, map_size=cfg.journal_max_size, commit=faults.from_environment()
        )
        # Set once the model holds every message of the journal: at once for a standalone
        # broker; an HA member restores them in the background while it catches up with its
        # primary (it may be ready before, it is promoted only after: see _restore_messages).
        self.restored = anyio.Event()
        try:
            self.events = EventLog(self.model, self.journal, cfg.ha_replicate)
            self.messages: MessageRestore | None = restore_entities(
                self.model, self.journal, self.events
            )
            if not cfg.ha_cluster:
                with no_collection():
                    while self.messages.step():
                        pass
        except BaseException:
            self.journal.close()
            raise
        later = self.restoring
        log.info(
            "recovered %d queues, %d messages from %s in %.2fs (journal position %s)%s",
            len(self.model.queues),
            self.messages.restored,
            cfg.data_dir,
            time.monotonic() - t0,
            self.journal.position,
            f"; restoring {later} messages meanwhile" if later else "",
        )
        if not later:
            self.messages = None
            self.restored.set()
        else:  # their enqueue records stay until read back, whatever the stream cancels
            self.journal.set_compaction_horizon(self.journal.last_seq)
        self.outbox = Outbox(self.model, clock)
        try:  # every file is read now, so that a bad one stops start-up with one line
            self.security = Authorizer(cfg.acl_file, cfg.ha_username, auth=cfg.auth)
            authenticator = Authenticator(cfg)
            tls = server_context(cfg)
        except BaseException:
            self.journal.close()
            raise
        self.core = Core(
            name=cfg.name,
            model=self.model,
            outbox=self.outbox,
            clock=clock,
            events=self.events,
            auto_create=cfg.auto_create,
            security=self.security,
            limits=Limits.from_config(cfg),
        )
        self.core.management = Management(self.core, self.info)
        self._start_flow_control()

        # one budget for both ports; in a cluster the last few slots are for HA connections
        reserve = 0
        if cfg.ha_cluster and cfg.ha_brokers_url is not None:
            reserve = ha_reserve(cfg.max_connections, len(cfg.ha_brokers_url.addresses))
        limit = ConnectionLimit(cfg.max_connections, reserve=reserve)
        if reserve:
            log.info(
                "--max-connections %d: clients are refused at their open while %d connections "
                "are open; the last %d are for HA connections (backups, admin tools)",
                cfg.max_connections,
                cfg.max_connections - reserve,
                reserve,
            )

        def listener(port: int, ssl_context: Any = None) -> Server:
            return Server(
                cfg.interface,
                port,
                lambda pump: AmqpConnection(self.core, pump),
                idle_timeout=cfg.heartbeat,
                max_frame_size=cfg.max_frame_size,
                channel_max=self.core.limits.channel_max,
                open_timeout=cfg.open_timeout,
                sasl=authenticator,
                ssl_context=ssl_context,
                require_encryption=cfg.require_encryption,
                limit=limit,
            )

        self.server = listener(cfg.port)
        self.tls_server = listener(cfg.ssl_port or 0, tls) if tls is not None else None
        self.port = cfg.port
        self.ssl_port = cfg.ssl_port
        self.exit_code = 0
        self._tg: Any = None
        self.stop_requested = anyio.Event()
        if cfg.ha_cluster:
            self.model.fill_arguments = self.events.explicit_levels
            self.ha = HaMember(self, time.monotonic)
            self.core.ha = self.ha

    def _start_flow_control(self) -> None:
        """The gate that holds and frees publishing links, told of every flow change from now
        on; queues restored past their stop mark are said to be stopped; then the memory
        watermark, which raises the alarm at once if restored queues already hold too much."""
        gate = self.core.flow = FlowGate(self.model, lambda: self.core.name)
        usage = self.model.usage
        usage.listener = gate.on_flow
        for q in self.model.queues.values():
            if q.flow_stopped:
                gate.on_flow(q, True)
        limit = max_memory(self.cfg.max_memory)
        log.info(
            "memory limit: %s (--max-memory %s); queued messages take about %d bytes; "
            "default queue limit %s",
            f"{limit} bytes" if limit else "none",
            self.cfg.max_memory,
            usage.bytes,
            f"{self.cfg.default_queue_limit} bytes" if self.cfg.default_queue_limit else "none",
        )
        usage.set_limit(limit)

    @property
    def state(self) -> str:
        """The HA role's state, read from the role itself (its one owner); standalone without."""
        return "standalone" if self.ha is None else str(self.ha.state)

    def info(self) -> dict[str, Any]:
        """What `$management` READ broker answers, read live at each request."""
        return {
            "name": self.cfg.name,
            "state": self.state,
            "ha-replicate": self.cfg.ha_replicate,
            "node-id": str(self.journal.node_id),
            "pid": os.getpid(),
            "data-dir": str(self.cfg.data_dir),
            "version": "0.1.0",
        }

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until `stop()`; report the bound port once listening."""
        async with anyio.create_task_group() as tg:
            self.port = await tg.start(self.server.serve)
            if self.tls_server is not None:
                self.ssl_port = await tg.start(self.tls_server.serve)
            self.cfg = self.cfg.bound(self.port)
            self.core.name = self.cfg.name
            if self.cfg.port_file is not None:
                tmp = self.cfg.port_file.with_suffix(".tmp")
                tmp.write_text(f"{self.port}\n")
                tmp.replace(self.cfg.port_file)
            log.info("ready on %s:%d", self.cfg.interface, self.port)
            # What start-up built (code, the restored backlog) lives as long as the broker: out
            # of the collector's full passes, which would otherwise walk every restored message.
            gc.collect()
            gc.freeze()
            # Every message leaves a few long-lived objects (queued message, HA recent log), so
            # the default young threshold (700) collects every hundred or so messages, for
            # nothing: cycles are rare here. ha_bench: cluster CPU 147-154 -> 130-134 ms per 1000.
            gc.set_threshold(*GC_THRESHOLDS)
            self._tg = tg
            if self.messages is not None:
                tg.start_soon(self._restore_messages)
            if self.ha is not None:
                tg.start_soon(self.ha.run, tg)
            else:
                tg.start_soon(self._housekeeping)
            task_status.started(self.port)
            await self._stopped.wait()
            tg.cancel_scope.cancel()

    async def _restore_messages(self) -> None:
        """The journal's messages into the model, a chunk per loop turn: replication goes on
        between (broker/ha/replicator.py holds what the stream brings for the model meanwhile)."""
        assert self.messages is not None
        messages, t0 = self.messages, time.monotonic()
        with no_collection():  # cycles are rare here (see GC_THRESHOLDS): a few seconds' worth
            while messages.step():
                await anyio.sleep(0)
        log.info("restored %d messages in %.2fs", messages.restored, time.monotonic() - t0)
        self.messages = None
        self.journal.set_compaction_horizon(None)
        gc.freeze()  # they live as long as the broker, as what start-up built (see run)
        if self.ha is not None:
            self.ha.replicator.restored()  # what the stream brought meanwhile, before a promote
        self.restored.set()

    @property
    def restoring(self) -> int:
        """Messages of the journal not yet restored into the model (0 once all are)."""
        m = self.messages
        return 0 if m is None else m.total - m.restored - m.lost

    def on_promoted(self) -> None:
        """This broker now leads: expiry is its to decide (backups follow the primary's)."""
        if self._tg is not None:
            self._tg.start_soon(self._housekeeping)

    def request_stop(self, exit_code: int = 0) -> None:
        self.exit_code = max(self.exit_code, exit_code)
        self.stop_requested.set()

    async def _housekeeping(self) -> None:
        while True:
            await anyio.sleep(HOUSEKEEPING_INTERVAL)
            if self.model.expire(self.clock()):
                self.outbox.schedule()

    @property
    def _stopped(self) -> anyio.Event:
        ev = getattr(self, "_stop_event", None)
        if ev is None:
            ev = self._stop_event = anyio.Event()
        return ev

    async def stop(self) -> None:
        """Close every connection (amqp:connection:forced; in a cluster, dropped without a word, so
        that clients fail over), flush the journal, release it."""
        log.info("stopping: closing %d connections", len(self.server.connections))
        if self.tls_server is not None:
            await self.tls_server.stop()
        await self.server.stop()
        self._stopped.set()
        await anyio.to_thread.run_sync(self.journal.close)
        log.info("stopped; journal flushed at position %s", self.journal.position)
