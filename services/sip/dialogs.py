"""Dialog tracking for media hand-off (Call-ID + tags) — sans-IO, time passed in.

Decides for each SDP-carrying message whether it is an offer or an answer, and which calls
must release their media (BYE, CANCEL, final error responses, timeouts).
"""

from __future__ import annotations

from dataclasses import dataclass

#: An INVITE must see a final response within Timer C (RFC 3261 §16.6: > 3 min).
SETUP_TIMEOUT = 200.0
#: Confirmed dialogs without any signalling are dropped after this (no session timer here).
IDLE_TIMEOUT = 4 * 3600.0


@dataclass
class Dialog:
    from_tag: str
    to_tag: str = ""
    offer_pending: bool = False
    confirmed: bool = False
    touched: float = 0.0
    #: the phone (ip, port) whose leg carries the media relay: the one the call's first SDP
    #: came from or went to (see `Dialogs.other_phone`)
    phone: tuple[str, int] | None = None
    #: in a spiral, the other leg's phone: its SDP reaches the media relay from the PBX (side
    #: instance), and the media relay must take that phone's address for the signalling one
    far: str | None = None


class Dialogs:
    def __init__(self) -> None:
        self.calls: dict[str, Dialog] = {}

    def other_phone(self, call_id: str, phone: tuple[str, int]) -> bool:
        """Whether an SDP message of this call is on another phone's leg than the media's.

        A call between two phones of one instance passes pforte twice (phone -> pforte -> PBX
        -> pforte -> phone, a spiral): the media is anchored once, on the leg of the phone the
        call's first SDP came with; on the other leg SDP goes through as it is (it names the
        relay's ports already, or the far phone's address the anchored leg relays to)."""
        d = self.calls.get(call_id)
        if d is not None and d.phone is not None and d.phone != phone:
            d.far = phone[0]
            return True
        return False

    def media_source(self, call_id: str, side: str, ip: str) -> str:
        """The address the media relay is told an SDP came from: the far phone's for SDP that
        came from the PBX in a spiral (the PBX only passed it on), else the sender's."""
        if side == "instance":
            d = self.calls.get(call_id)
            if d is not None and d.far is not None:
                return d.far
        return ip

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
