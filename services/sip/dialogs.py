"""Dialog tracking for media hand-off (Call-ID + tags) — sans-IO, time passed in.

Decides for each SDP-carrying message whether it is an offer or an answer, and which calls
must release their media (BYE, CANCEL, final error responses, timeouts).

A call between two phones of one instance passes us twice with one Call-ID (a spiral: phone ->
us -> PBX -> us -> phone): each pass is its own dialog here, with its own media, told apart by
the side its initiating request came from (`leg()`). Keys are the Call-ID for the first pass
and the Call-ID + SPIRAL for the second.
"""

from __future__ import annotations

from dataclasses import dataclass

#: An INVITE must see a final response within Timer C (RFC 3261 §16.6: > 3 min).
SETUP_TIMEOUT = 200.0
#: Confirmed dialogs without any signalling are dropped after this (no session timer here).
IDLE_TIMEOUT = 4 * 3600.0
#: the key suffix of a Call-ID's second pass through us; ';' cannot occur in a Call-ID (RFC 3261 §25.1 word)
SPIRAL = ";spiral"


@dataclass
class Dialog:
    from_tag: str
    #: the side ("p"/"b") the request that made the dialog came from
    entry: str = "p"
    to_tag: str = ""
    offer_pending: bool = False
    confirmed: bool = False
    touched: float = 0.0


class Dialogs:
    def __init__(self) -> None:
        self.calls: dict[str, Dialog] = {}

    def leg(self, call_id: str, from_tag: str, side: str, response: bool) -> str:
        """The key of the pass of `call_id` a message from `side` belongs to: a request from the
        dialog's initiator (its From tag) comes in on the pass's entry side, one from the other
        party on the other side; responses the other way round. A message no pass claims starts
        the next pass (the spiralled INVITE)."""
        for key in (call_id, call_id + SPIRAL):
            d = self.calls.get(key)
            if d is not None and ((from_tag == d.from_tag) != response) == (side == d.entry):
                return key
        return call_id + SPIRAL if call_id in self.calls else call_id

    def sdp_request(self, call_id: str, from_tag: str, method: str, now: float, entry: str = "p") -> str:
        """'offer' or 'answer' for an SDP body in a request (from side `entry`)."""
        d = self.calls.get(call_id)
        if d is None:
            d = self.calls[call_id] = Dialog(from_tag, entry)
        d.touched = now
        if method in ("ACK", "PRACK") and not d.offer_pending:
            return "answer"
        d.offer_pending = True
        return "offer"

    def sdp_response(self, call_id: str, from_tag: str, to_tag: str, now: float, entry: str = "p") -> str:
        """Like sdp_request for a response; `entry`: the side its request came from."""
        d = self.calls.get(call_id)
        if d is None:
            d = self.calls[call_id] = Dialog(from_tag, entry)
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
