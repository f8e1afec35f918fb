"""One long-lived management connection to one broker, for a manager that asks it often.

`query_status` opens a proton connection, attaches two links, asks `READ ha` and closes: fine for
a tool run once, but `qstore-cluster up` asked every broker several times a second, and opening
connections was nearly all of its CPU (and a log line pair per poll on every broker). A
`StatusLink` keeps its connection and reopens it only after a failure. A request on a kept
connection that is lost (the broker restarted, or dropped us) is tried once more on a fresh one,
so a stale connection never reads as a silent broker; one that times out is not (a hung broker
costs one timeout per poll, as before). A failed connection is dropped, not closed:
proton's close waits for the peer's close frame, the whole timeout when the peer is dead, and on a
fail-over that wait would come before the promote.
"""

from __future__ import annotations

from typing import Any

from tools._errors import ToolError
from tools._mgmt import ManagementClient, parse_broker


class StatusLink:
    """The manager's connection to the broker at `address` (host:port), logged in with `login`
    (the keywords of `ManagementClient`), as an HA admin."""

    def __init__(self, address: str, login: dict[str, Any]) -> None:
        self.address = address
        self.login = login
        self._client: ManagementClient | None = None

    def request(self, operation: str, type: str, timeout: float) -> tuple[int, str, Any]:
        """One management request; `ToolError` if the broker cannot be reached or answer within
        `timeout` (connecting included)."""
        for attempt in (0, 1):
            kept = self._client is not None
            if self._client is None:
                self._client = ManagementClient(
                    parse_broker(self.address), ha_admin=True, timeout=timeout, **self.login
                )
            client = self._client
            client.timeout = timeout
            try:
                return client.request(operation, type)
            except ToolError:
                # lost (not timed out) on a kept connection: the broker restarted since, or
                # dropped us; a fresh connection answers for the broker as it is now
                stale = kept and client.conn is not None and bool(client.conn.disconnected)
                self.drop()
                if not stale or attempt:
                    raise
        raise AssertionError("unreachable")

    def status(self, timeout: float) -> dict[str, Any] | None:
        """The broker's HA status (`READ ha`), or None if it does not answer."""
        try:
            code, _, body = self.request("READ", "ha", timeout)
        except ToolError:
            return None
        if code != 200 or not isinstance(body, dict):
            return None
        return {str(k): v for k, v in body.items()}

    def close(self) -> None:
        """Close the connection politely (the next request opens another)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def drop(self) -> None:
        """Let go of the connection without waiting for the broker (dead, hung or gone)."""
        if self._client is not None:
            blocking = self._client.conn
            if blocking is not None:
                # Closed transport ends: proton then lets the socket go without reading more (a
                # stopped broker's socket never ends, and proton's close would wait on it for
                # ever), and its wait for the broker's close frame lasts no time at all.
                transport = blocking.conn.transport
                if transport is not None:
                    transport.close_tail()
                    transport.close_head()
                blocking.timeout = 0
            self._client.close()
            self._client = None
