"""`qstored`: the broker daemon's entry point (options, logging, signals).

A bad option, or a data directory another broker holds, stops start-up with one line and exit 2
(never a traceback). SIGTERM or SIGINT stop it cleanly: connections closed with
amqp:connection:forced, journal flushed, exit 0.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Sequence

import anyio

from broker.acl import AclError
from broker.config import BrokerConfig, main_parse, obsolete
from broker.logfmt import EscapingFormatter
from broker.security import TlsError
from qstore.journal import JournalError
from qstore.sasl.userdb import UserDbError

log = logging.getLogger("qstore.broker")


class _BrokerFields(logging.Filter):
    """Puts the broker's name and HA state on every log line."""

    def __init__(self, name: Callable[[], str], state: Callable[[], str]) -> None:
        super().__init__()
        self.name_of = name
        self.state = state

    def filter(self, record: logging.LogRecord) -> bool:
        record.broker = self.name_of()
        record.state = self.state()
        return True


def setup_logging(cfg: BrokerConfig, name: Callable[[], str], state: Callable[[], str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # Names from the network reach messages: the formatter escapes their control characters.
    handler.setFormatter(
        EscapingFormatter("%(asctime)s %(levelname)s [%(broker)s %(state)s] %(name)s: %(message)s")
    )
    handler.addFilter(_BrokerFields(name, state))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.log_level.upper())


async def _serve(cfg: BrokerConfig) -> int:
    from broker.service import BrokerService

    service = BrokerService(cfg)
    setup_logging(cfg, lambda: service.cfg.name, lambda: service.state)

    async def watch_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                if signum == signal.SIGHUP:  # as `qstore-config reload-acl`
                    service.security.reload()
                    continue
                service.request_stop()
                return

    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        tg.start_soon(watch_signals)
        await service.stop_requested.wait()
        await service.stop()
        tg.cancel_scope.cancel()
    return service.exit_code


def main(argv: Sequence[str] | None = None) -> None:
    cfg = main_parse(sys.argv[1:] if argv is None else list(argv))
    setup_logging(cfg, lambda: cfg.name, lambda: "standalone")
    for line in obsolete(cfg):
        log.warning("%s", line)
    code = 0
    try:
        code = anyio.run(_serve, cfg)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        user_error = _user_error(exc)
        if user_error is None:
            raise
        print(f"qstored: error: {user_error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


def _user_error(exc: BaseException) -> BaseException | None:
    """A start-up failure that is the user's to fix (data dir locked or damaged, port taken),
    found also inside the exception groups that task groups raise."""
    if isinstance(exc, JournalError | OSError | AclError | TlsError | UserDbError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _user_error(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    main()
