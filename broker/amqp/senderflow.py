"""The link `flow` a sender owes a receiver whose window is one credit.

proton python's `MessagingHandler(prefetch=1)` refills its credit from a `FlowController` that
runs, on a delivery, before the message is read: the credit is still 1 then (it drops when the
message is read), so it grants nothing, and nothing later makes it look again unless a `flow`
arrives for the link. proton-C, our engine, sends a sender's link flow only to answer a drain;
so a consumer with prefetch 1 stalled after its first message. AMQP lets the sender send its
flow state at any time; after a delivery has taken the receiver's last credit we send it: our
delivery-count, link-credit 0, the drain flag as the receiver set it. The receiver's link-credit
is unchanged by it (its delivery-count is already ours), it just gets an event to refill on.

proton's API can neither send that frame nor tell a link's handle, so:
- the handle and channel come from our own `attach` frame, read from the output while a link's
  attach is due (`attaching`);
- once the delivery is out, `pn_session_set_incoming_capacity` (set to what it is) makes proton
  write a session flow with exact session fields (next-incoming-id, windows, next-outgoing-id),
  and `rewrite` appends the link's fields to it (flowframe.py).

Both run as the connection's output hook (broker/net/output.py), installed only while there is
something to do: a connection that has neither an attach due nor such a flow pays nothing.
`OutgoingLink.send` asks only on a link whose receiver never granted more than one credit at a
time (a window of 2 or more refills itself on each delivery), and only when the model's credit
for it is used up, so a window of 1000 pays one attribute test per message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cproton_ffi import lib

from .flowframe import ATTACH, add_link_flows, attach_fields, frames

if TYPE_CHECKING:
    from broker.net import EnginePump

    from .links import OutgoingLink

log = logging.getLogger("qstore.amqp")

_ACTIVE = lib.PN_LOCAL_ACTIVE | lib.PN_REMOTE_ACTIVE
_SEND, _WAIT, _DROP = 0, 1, 2


class SenderFlows:
    """One connection's link flows for its outgoing links (see the module's doc)."""

    def __init__(self, pump: EnginePump) -> None:
        self._pump = pump
        self._attaching: list[OutgoingLink] = []  # our attach not yet seen in the output
        # link -> (channel, handle, initial delivery-count), from our attach
        self._where: dict[OutgoingLink, tuple[int, int, int]] = {}
        self._wanted: dict[OutgoingLink, None] = {}
        self._ready: dict[int, list[OutgoingLink]] = {}  # channel -> flows to write this pull
        self._hooked = False

    def attaching(self, out: OutgoingLink) -> None:
        """`out` is opening: learn its handle from the attach we are about to send."""
        self._attaching.append(out)
        self._hook()

    def want(self, out: OutgoingLink) -> None:
        """A delivery on `out` took its receiver's last credit: send a link flow once the
        delivery is on its way (unless the receiver grants credit first)."""
        self._wanted[out] = None
        self._hook()

    def forget(self, out: OutgoingLink) -> None:
        if out in self._attaching:
            self._attaching.remove(out)
        self._where.pop(out, None)
        self._wanted.pop(out, None)
        self._hook()

    def _hook(self) -> None:
        busy = bool(self._attaching or self._wanted)
        if busy != self._hooked:
            self._hooked = busy
            self._pump.set_output_hook(self if busy else None)

    # -- the output hook ---------------------------------------------------------------------

    def inspect(self, data: bytes) -> bool:
        """`data`: what proton has just written. True if proton was asked for session flows
        (the output buffer then pulls again and passes them to `rewrite`)."""
        if self._attaching and data:
            self._learn(data)
        ready: dict[int, list[OutgoingLink]] = {}
        sessions: dict[Any, None] = {}
        for out in list(self._wanted):
            state = self._state(out)
            if state == _WAIT:
                continue
            del self._wanted[out]
            if state == _SEND:
                ready.setdefault(self._where[out][0], []).append(out)
                sessions[lib.pn_link_session(out._link)] = None
        for ssn in sessions:
            # The same capacity again: proton's defaults (we set no session window) stay as
            # they are; what it changes is that proton owes the peer a session flow.
            lib.pn_session_set_incoming_capacity(ssn, lib.pn_session_get_incoming_capacity(ssn))
        self._ready = ready
        self._hook()
        return bool(ready)

    def rewrite(self, data: bytes) -> bytes:
        """`data` with the link fields of the ready links added to their session's flow."""
        ready, self._ready = self._ready, {}
        links = {}
        for channel, outs in ready.items():
            links[channel] = [
                (
                    self._where[out][1],
                    (self._where[out][2] + out.deliveries) & 0xFFFFFFFF,
                    bool(lib.pn_link_get_drain(out._link)),
                )
                for out in outs
            ]
        data = add_link_flows(data, links)
        if links:  # no session flow came (the session is ending): nothing left to refill
            log.debug("conn=%s: no session flow for link flows on channels %s",
                      self._pump.conn_id, list(links))  # fmt: skip
        return data

    def _state(self, out: OutgoingLink) -> int:
        link = out._link
        if out not in self._where:
            return _WAIT  # our attach has not gone out yet
        if (lib.pn_link_state(link) & _ACTIVE) != _ACTIVE:
            return _DROP  # detaching: the handle may be gone at the peer
        if lib.pn_link_credit(link) > 0:
            return _DROP  # the receiver granted credit already: it is not waiting for a flow
        if lib.pn_link_queued(link) > 0:
            return _WAIT  # the delivery has not gone out yet (the session window is shut)
        return _SEND

    def _learn(self, data: bytes) -> None:
        for f in frames(data):
            if f.code != ATTACH:
                continue
            name, handle, role, initial = attach_fields(data, f)
            if role:
                continue  # a receiver of ours (the client sends)
            for out in self._attaching:
                if out.link.name == name:
                    self._attaching.remove(out)
                    self._where[out] = (f.channel, handle, initial)
                    break
