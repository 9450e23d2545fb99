"""Dialog tracking for media hand-off (Call-ID + tags) — sans-IO, time passed in.

Decides for each SDP-carrying message whether it is an offer or an answer, and which calls
must release their media (BYE, CANCEL, final error responses, timeouts).

A call between two phones of one instance passes pforte twice with one Call-ID (phone -> pforte
-> PBX -> pforte -> phone, a spiral): each pass is a dialog of its own here, with media of its
own (its own streams, keys and latches; the media relay links the two passes' PBX-facing sockets,
`services.media.session`). `pass_key` tells the passes apart by their phone.
"""

from __future__ import annotations

from dataclasses import dataclass

#: An INVITE must see a final response within Timer C (RFC 3261 §16.6: > 3 min).
SETUP_TIMEOUT = 200.0
#: Confirmed dialogs without any signalling are dropped after this (no session timer here).
IDLE_TIMEOUT = 4 * 3600.0
#: Dialogs (passes) held at once: two per call of `calls.MAX_CALLS` (a spiral has two). A known
#: Call-ID's INVITE from another source address is a pass of its own, so without a cap one
#: call could hold a Dialog per spoofed source for SETUP_TIMEOUT; beyond, the relay answers a
#: request that would start a new one 503 + Retry-After (`Dialogs.room`).
MAX_DIALOGS = 40_000


@dataclass
class Dialog:
    from_tag: str
    to_tag: str = ""
    offer_pending: bool = False
    confirmed: bool = False
    touched: float = 0.0
    #: the phone (ip, port) of this pass: the one its first SDP came from or went to
    phone: tuple[str, int] | None = None


class Dialogs:
    def __init__(self, max_dialogs: int = MAX_DIALOGS) -> None:
        self.max_dialogs = max_dialogs
        self.calls: dict[str, Dialog] = {}

    def room(self, key: str) -> bool:
        """Whether a message of the pass `key` may go on: it exists, or there is room for it."""
        return key in self.calls or len(self.calls) < self.max_dialogs

    def pass_key(self, call_id: str, phone: tuple[str, int]) -> str:
        """The key of the pass of `call_id` whose phone is `phone`: the Call-ID for the pass seen
        first (every call that does not spiral), the Call-ID and the phone's address for another.
        A Call-ID holds no space after the header's trimming, and an address none: a phone
        choosing its Call-ID cannot name another phone's pass."""
        other = f"{call_id} {phone[0]}:{phone[1]}"
        if other in self.calls:
            return other
        d = self.calls.get(call_id)
        return other if d is not None and d.phone is not None and d.phone != phone else call_id

    def sdp_request(self, call_id: str, from_tag: str, method: str, now: float,
                    phone: tuple[str, int] | None = None) -> str:
        """'offer' or 'answer' for an SDP body in a request."""
        d = self.calls.get(call_id)
        if d is None:
            d = self.calls[call_id] = Dialog(from_tag, phone=phone)
        d.touched = now
        if method in ("ACK", "PRACK") and not d.offer_pending:
            return "answer"
        d.offer_pending = True
        return "offer"

    def sdp_response(self, call_id: str, from_tag: str, to_tag: str, now: float,
                     phone: tuple[str, int] | None = None) -> str:
        d = self.calls.get(call_id)
        if d is None:
            d = self.calls[call_id] = Dialog(from_tag, phone=phone)
        d.touched, d.to_tag = now, to_tag or d.to_tag
        if d.offer_pending:
            return "answer"
        return "offer"  # late offer in 18x/2xx; the ACK carries the answer

    def answered(self, call_id: str) -> None:
        d = self.calls.get(call_id)
        if d is not None:
            d.offer_pending = False

    def touch(self, call_id: str, now: float, confirmed: bool = False) -> None:
        d = self.calls.get(call_id)
        if d is not None:
            d.touched = now
            d.confirmed = d.confirmed or confirmed

    def end(self, call_id: str) -> bool:
        return self.calls.pop(call_id, None) is not None

    def expire(self, now: float) -> list[str]:
        gone = [
            cid for cid, d in self.calls.items()
            if now - d.touched > (IDLE_TIMEOUT if d.confirmed else SETUP_TIMEOUT)
        ]
        for cid in gone:
            del self.calls[cid]
        return gone
