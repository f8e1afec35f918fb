"""Which broker URL to try next, and when: the reconnect policy (no I/O, no clock of its own).

An episode starts when the client first connects or loses an open connection. It walks the URLs in
order (after a loss, starting with the URL after the one that was lost, so a dead primary is tried
last), with no pause between URLs of one pass; after each full pass that found no primary it waits,
and the wait doubles from `interval_min` up to `interval_max`. It gives up when `timeout` seconds of
the episode have gone, after `limit` attempts, or (reconnect off) after one pass.

    policy.begin(now, start=0)
    index, at = policy.next(now)     # try urls[index] at time `at`; raises GiveUp
    policy.failed(now)               # that attempt found no primary
    policy.connected()               # it did: the episode is over
"""

from __future__ import annotations

from dataclasses import dataclass


class GiveUp(Exception):
    """The episode is over without a connection; the text says why (one line)."""


@dataclass
class ReconnectPolicy:
    n_urls: int
    enabled: bool = True
    interval_min: float = 0.05
    interval_max: float = 2.0
    timeout: float | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.n_urls < 1:
            raise ValueError("no broker URL to connect to")
        if self.interval_min < 0 or self.interval_max < self.interval_min:
            raise ValueError(
                "reconnect intervals must satisfy 0 <= reconnect_interval_min <= "
                f"reconnect_interval_max (got {self.interval_min}, {self.interval_max})"
            )
        if self.timeout is not None and self.timeout < 0:
            raise ValueError(f"reconnect_timeout must be >= 0, not {self.timeout}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"reconnect_limit must be >= 1, not {self.limit}")
        self.begin(0.0)

    def begin(self, now: float, start: int = 0) -> None:
        """A new episode: try urls[start] first, right away."""
        self.started = now
        self.index = start % self.n_urls
        self.attempts = 0
        self.in_pass = 0
        self.delay = self.interval_min
        self.not_before = now

    def next(self, now: float) -> tuple[int, float]:
        """The URL index to try and the time to try it; GiveUp when the episode is over."""
        if not self.enabled and self.attempts >= self.n_urls:
            raise GiveUp("each URL tried once (reconnect is off)")
        if self.limit is not None and self.attempts >= self.limit:
            raise GiveUp(f"gave up after {self.attempts} attempts (reconnect_limit)")
        at = self.not_before
        if self.timeout is not None:
            deadline = self.started + self.timeout
            if self.attempts and now >= deadline:
                raise GiveUp(f"gave up after reconnect_timeout={self.timeout:g}s")
            at = min(at, deadline)
        return self.index, at

    def failed(self, now: float) -> None:
        """The attempt at urls[index] did not give a connection."""
        self.attempts += 1
        self.in_pass += 1
        self.index = (self.index + 1) % self.n_urls
        if self.in_pass >= self.n_urls:
            self.in_pass = 0
            self.not_before = now + self.delay
            # at least 10 ms from the second pass on, so interval_min=0 cannot spin
            self.delay = min(max(self.delay * 2, 0.01), self.interval_max)
        else:
            self.not_before = now

    def connected(self) -> None:
        """The attempt gave a connection: the next episode starts from scratch."""
        self.attempts = 0
        self.in_pass = 0
        self.delay = self.interval_min
