"""INVITE dialogs as RFC 3261 creates them, bounded — sans-IO, time passed in.

Only an initial INVITE (no To tag) that the relay forwards creates an entry; an ACK, BYE,
CANCEL, PRACK, UPDATE or re-INVITE from a phone whose Call-ID has none is stray: 481 (an ACK is
dropped), never forwarded (main forwarded them, and made a dialog of every bare ACK pair).
Entries end at timer C if no final response came, at SESSION_TIMEOUT without any message once
confirmed, and LINGER after a BYE, CANCEL or failure (retransmissions, the ACK of a failure). A
call from a UDP source that never proved it receives (a spoofed INVITE the PBX answered 200:
no ACK ever comes) ends at timer C too.

A restart forgets every call: a phone's BYE for a call set up before it gets 481 (the phone
ends the call; the PBX ends it at its own session timer).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Calls tracked at once; a new INVITE beyond gets 503 + Retry-After. 20,000 × ~400 bytes
#: (Call-ID at most MAX_CALL_ID) ≈ 8 MiB: far more calls than the media port range can carry.
MAX_CALLS = 20_000
#: ... of which calls from UDP phone sources that have not proven they receive what is sent to
#: their address (`protect.Amplification`): a spoofed source sends an INVITE but never its ACK,
#: and no per-source limit holds one INVITE per spoofed source, so spoofed INVITEs could hold
#: the whole table for timer C and every phone would get 503. They get a quarter; beyond, such
#: an INVITE gets 503 + Retry-After while proven phones (an ACK, a digest nonce echoed) still call.
MAX_UNPROVEN_CALLS = MAX_CALLS // 4
#: Timer C (RFC 3261 §16.6 step 11: more than 3 minutes): an INVITE without a final response.
TIMER_C = 200.0
#: A confirmed call without any message for this long is forgotten (no session timer of its
#: own in the call: RFC 4028 refreshes, when used, come far more often).
SESSION_TIMEOUT = 4 * 3600.0
#: After a BYE, a CANCEL or a failure: retransmissions and the ACK of a failure still pass
#: (64 × T1, RFC 3261 timers H and J).
LINGER = 32.0
#: Methods that only exist within an INVITE transaction or dialog.
IN_CALL = frozenset({"ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "INFO"})


@dataclass(slots=True)
class _Call:
    touched: float
    confirmed: bool = False
    ending: float = 0.0  # when it ended (BYE, CANCEL, failure), 0 while live
    started: float = 0.0
    client: str = ""  # ip:port of the side that sent the INVITE
    instance: str = ""
    status: int = 0  # the final response to the initial INVITE, 0 before
    unproven: bool = False  # counted in `Calls.unproven`


@dataclass(frozen=True, slots=True)
class CallEnd:
    """One call's end, for its log line (issue #22 §4)."""

    call_id: str
    client: str
    instance: str
    outcome: str  # completed | failed | timer_c | session_timeout
    status: int
    duration: float


class Calls:
    def __init__(self, max_calls: int = MAX_CALLS, max_unproven: int = MAX_UNPROVEN_CALLS):
        self.max_calls, self.max_unproven = max_calls, max_unproven
        self.t: dict[str, _Call] = {}
        self.unproven = 0  # calls whose INVITE came from an unproven UDP source
        self.ended: list[CallEnd] = []  # calls that ended since the caller last took them

    def __len__(self) -> int:
        return len(self.t)

    def known(self, call_id: str) -> bool:
        return call_id in self.t

    def room(self, unproven: bool = False) -> bool:
        """Whether a new call fits (one from an unproven UDP source: within its share too)."""
        return len(self.t) < self.max_calls and (not unproven or self.unproven < self.max_unproven)

    def invite(self, call_id: str, now: float, client: str = "", instance: str = "", unproven: bool = False) -> bool:
        """An initial INVITE: False when the table is full (answer 503)."""
        c = self.t.get(call_id)
        if c is not None:
            c.touched = now
            return True
        if not self.room(unproven):
            return False
        self.t[call_id] = _Call(now, started=now, client=client, instance=instance, unproven=unproven)
        self.unproven += unproven
        return True

    def _ended(self, call_id: str, c: _Call, outcome: str, now: float) -> None:
        if len(self.ended) >= MAX_CALLS:  # nobody takes them (a bare core in a bench): bounded
            self.ended.clear()
        self.ended.append(CallEnd(call_id, c.client, c.instance, outcome, c.status, now - c.started))

    def touch(self, call_id: str, now: float, proven: bool = False) -> None:
        """A message of the call; `proven`: from its phone, now known to receive (an ACK
        echoing the 200's To tag proves it): the call leaves the unproven share."""
        c = self.t.get(call_id)
        if c is not None:
            c.touched = now
            if proven and c.unproven:
                c.unproven = False
                self.unproven -= 1

    def final(self, call_id: str, status: int, now: float) -> None:
        """A final response to the call's INVITE."""
        c = self.t.get(call_id)
        if c is None:
            return
        c.touched = now
        if status < 300:
            c.confirmed = True
            c.status = c.status or status
        elif not c.confirmed and not c.ending:  # a failed initial INVITE (a failed re-INVITE leaves the call)
            c.ending, c.status = now, status
            self._ended(call_id, c, "failed", now)

    def end(self, call_id: str, now: float) -> None:
        c = self.t.get(call_id)
        if c is not None and not c.ending:
            c.ending = now
            self._ended(call_id, c, "completed", now)

    def expire(self, now: float) -> list[str]:
        gone = [cid for cid, c in self.t.items()
                if (c.ending and now - c.ending > LINGER)
                or now - c.touched > (SESSION_TIMEOUT if c.confirmed and not c.unproven else TIMER_C)]
        for cid in gone:
            c = self.t.pop(cid)
            self.unproven -= c.unproven
            if not c.ending:
                self._ended(cid, c, "session_timeout" if c.confirmed else "timer_c", now)
        return gone
