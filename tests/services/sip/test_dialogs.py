"""Dialog tracking: which pass of a Call-ID a message belongs to, offer/answer, release."""

from __future__ import annotations

from services.sip.dialogs import SPIRAL, Dialogs

CALLER, CALLEE = "a1", "b2"  # From tags of the two parties


def req(d: Dialogs, from_tag: str, side: str) -> str:
    return d.leg("c1", from_tag, side, response=False)


def resp(d: Dialogs, from_tag: str, side: str) -> str:
    return d.leg("c1", from_tag, side, response=True)


def test_one_pass_each_direction_is_one_dialog() -> None:
    """Phone -> PBX (entry p) and PBX -> phone (entry b): every message of the call, whoever
    sends it, has the Call-ID as its key."""
    for entry, other in (("p", "b"), ("b", "p")):
        d = Dialogs()
        assert req(d, CALLER, entry) == "c1"
        assert d.sdp_request("c1", CALLER, "INVITE", 0.0, entry) == "offer"
        assert resp(d, CALLER, other) == "c1"  # 200 OK from the callee's side
        assert req(d, CALLER, entry) == "c1"  # ACK, re-INVITE, BYE from the caller
        assert req(d, CALLEE, other) == "c1"  # re-INVITE or BYE from the callee
        assert resp(d, CALLEE, entry) == "c1"  # the caller's answer to those


def test_a_spiral_is_two_dialogs_early_offer() -> None:
    d = Dialogs()
    # INVITE: from alice (p) to the PBX, then back from the PBX (b) to bob
    assert req(d, CALLER, "p") == "c1"
    d.sdp_request("c1", CALLER, "INVITE", 0.0, "p")
    assert req(d, CALLER, "b") == "c1" + SPIRAL
    d.sdp_request("c1" + SPIRAL, CALLER, "INVITE", 0.0, "b")
    # 200 OK: from bob (p) for the second pass, then from the PBX (b) for the first
    assert resp(d, CALLER, "p") == "c1" + SPIRAL
    assert resp(d, CALLER, "b") == "c1"
    # ACK/BYE from alice: first pass at p, second at b; BYE from bob the other way round
    assert (req(d, CALLER, "p"), req(d, CALLER, "b")) == ("c1", "c1" + SPIRAL)
    assert (req(d, CALLEE, "p"), req(d, CALLEE, "b")) == ("c1" + SPIRAL, "c1")
    assert (resp(d, CALLEE, "b"), resp(d, CALLEE, "p")) == ("c1" + SPIRAL, "c1")
    # the first pass ends first: the second is still found
    assert d.end("c1")
    assert req(d, CALLER, "b") == "c1" + SPIRAL and d.end("c1" + SPIRAL) and not d.calls


def test_a_spiral_is_two_dialogs_late_offer() -> None:
    """No SDP in the INVITE: the dialogs are made by the 200 OKs, bob's (second pass) first."""
    d = Dialogs()
    k2 = resp(d, CALLER, "p")
    assert k2 == "c1"  # the first dialog seen takes the Call-ID, whichever pass it is
    assert d.sdp_response(k2, CALLER, CALLEE, 0.0, "b") == "offer"
    k1 = resp(d, CALLER, "b")
    assert k1 == "c1" + SPIRAL
    assert d.sdp_response(k1, CALLER, CALLEE, 0.0, "p") == "offer"
    # the ACKs carry the answers, each to its own pass
    assert req(d, CALLER, "p") == k1 and d.sdp_request(k1, CALLER, "ACK", 0.1, "p") == "answer"
    assert req(d, CALLER, "b") == k2 and d.sdp_request(k2, CALLER, "ACK", 0.1, "b") == "answer"
