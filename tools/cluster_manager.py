"""The cluster manager's decisions, as plain functions (what rgmanager does in the seed, 1.12.4).

Given what each node looks like now (is its process running, what state and journal position does
its broker report), `decide` says what to do: restart a broker whose process died, and keep
exactly one primary:

- A primary exists (recovering or active): nothing to do. Two primaries would be a bug; it is
  reported, never "fixed" by promoting more.
- The last primary seen is running but does not answer (busy, or hung): wait `hung_after`; then
  restart it (its process is killed first), and only then promote another. A broker whose process
  runs is never taken for gone: promoting beside a live primary makes two.
- No primary, some backup is ready: promote the ready backup with the highest position.
  A catch-up backup is never promoted: it does not hold everything that was acknowledged.
- No primary, no ready backup, every node joining (a new cluster, or after a total failure): wait
  until every node answers, or `recovery_wait` has passed since the cluster was first seen without
  a primary, then promote the joining broker with the highest (epoch, seq): the most up-to-date
  journal, so nothing acknowledged is lost (the seed's rule, "the first promoted recovers", loses
  acknowledged messages when that broker had the older journal).
- No primary, no ready backup, some in catch-up (the primary died before they caught up: the seed's
  "cluster hangs" case): restart them, so they come back joining with their journals, and the case
  above applies.

The functions take the clock as an argument and do no I/O, so a later OCF resource agent can call
`decide` (or `best_candidate`) with what its monitor action collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeView:
    index: int
    running: bool  # the broker's process is alive
    state: str | None  # what it reports, None when it does not answer
    position: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Restart:
    index: int
    why: str


@dataclass(frozen=True)
class Promote:
    index: int
    why: str


@dataclass(frozen=True)
class Note:
    text: str


Action = Restart | Promote | Note


@dataclass
class Memory:
    """What the manager remembers between polls."""

    no_primary_since: float | None = None
    promoting: int | None = None  # a promote in flight: wait for it to show
    promoting_since: float = 0.0
    primary: int | None = None  # the last primary seen
    primary_silent_since: float | None = None
    noted: set[str] = field(default_factory=set)


PRIMARY = ("recovering", "active")
PROMOTE_GRACE = 3.0  # seconds a promote may take to show before the manager chooses again


def best_candidate(nodes: list[NodeView], state: str) -> NodeView | None:
    """The node in `state` with the highest position (ties: the lowest index)."""
    pool = [n for n in nodes if n.state == state]
    if not pool:
        return None
    return max(pool, key=lambda n: (n.position, -n.index))


def decide(
    nodes: list[NodeView],
    now: float,
    memory: Memory,
    recovery_wait: float,
    hung_after: float = 5.0,
) -> list[Action]:
    actions: list[Action] = [
        Restart(n.index, "its process is not running") for n in nodes if not n.running
    ]
    primaries = [n for n in nodes if n.state in PRIMARY]
    if len(primaries) > 1:
        names = ", ".join(str(n.index) for n in primaries)
        return [*actions, Note(f"more than one primary ({names}): not promoting anything")]
    if primaries:
        memory.no_primary_since = None
        memory.promoting = None
        memory.primary = primaries[0].index
        memory.primary_silent_since = None
        return actions
    last = nodes[memory.primary] if memory.primary is not None else None
    if last is not None and last.running and last.state is None:
        if memory.primary_silent_since is None:
            memory.primary_silent_since = now
        silent = now - memory.primary_silent_since
        if silent < hung_after:
            return actions  # busy or hung: never promote beside a primary that may be alive
        memory.primary = memory.primary_silent_since = None
        return [*actions, Restart(last.index, f"primary silent for {silent:.1f}s: presumed hung")]
    memory.primary = memory.primary_silent_since = None
    if memory.promoting is not None:
        target = nodes[memory.promoting]
        if target.running and now - memory.promoting_since < PROMOTE_GRACE:
            return actions  # the promote we asked for has not shown yet
        memory.promoting = None  # it died, or never showed as primary: choose again
    if memory.no_primary_since is None:
        memory.no_primary_since = now
    ready = best_candidate(nodes, "ready")
    if ready is not None:
        memory.promoting, memory.promoting_since = ready.index, now
        return [*actions, Promote(ready.index, f"ready backup with position {ready.position}")]
    answering = [n for n in nodes if n.state is not None]
    catching_up = [n for n in answering if n.state == "catch-up"]
    if catching_up:
        return actions + [
            Restart(n.index, "catch-up with no primary: restart it to recover from its journal")
            for n in catching_up
        ]
    joining = [n for n in answering if n.state == "joining"]
    if not joining:
        return actions
    everyone = len(joining) == len(nodes)
    waited = now - memory.no_primary_since
    if not everyone and waited < recovery_wait:
        return actions
    best = best_candidate(nodes, "joining")
    assert best is not None
    missing = sorted(n.index for n in nodes if n.state != "joining")
    why = f"joining with the highest journal position {best.position}"
    if missing:
        why += f"; nodes {missing} did not answer within {recovery_wait:g}s"
    memory.promoting, memory.promoting_since = best.index, now
    return [*actions, Promote(best.index, why)]


def steady(nodes: list[NodeView], memory: Memory) -> bool:
    """Nothing to watch closely: every process runs, one broker is active, the others ready, and
    no promote is pending. Only a hang changes that without a process exiting (an exit wakes
    the manager at once), so a steady cluster is polled slowly."""
    return (
        memory.promoting is None
        and all(n.running for n in nodes)
        and [n.state for n in nodes].count("active") == 1
        and all(n.state in ("active", "ready") for n in nodes)
    )


def next_poll(nodes: list[NodeView], memory: Memory, poll: float, steady_poll: float) -> float:
    """Seconds until the next status poll: `poll` while the cluster settles (starting, failing
    over, a broker catching up), `steady_poll` once it is steady."""
    return max(poll, steady_poll) if steady(nodes, memory) else poll
