"""The in-process contract between the SIP relay and the media relay (shaped like rtpengine's ng
protocol: offer / answer / delete per call leg).

The SIP relay hands every SDP body it forwards to `offer()` (an SDP offer: INVITE, UPDATE,
re-INVITE, an offer in 183/200 of a late-offer call) or `answer()` (the matching answer) and
forwards the SDP returned; `delete()` releases a call's media on BYE, CANCEL, a final error or a
dialog timeout. `side` is where the SDP came *from*: PHONE (the public side) or INSTANCE (the
backend side). It is the media relay's job to point each side at relay ports and latch.

Until the media service runs, SIP uses `PassThroughMedia` (SDP unchanged). The media service,
when running, is found by `ctx.lookup("media")` and implements `MediaRelay`.

The methods are synchronous: the SIP relay calls them once per message on its hot path, and a
call's messages must leave in the order they came; an implementation decides and takes its
ports at once (sockets bound and handed to the loop behind the caller's back), never waits.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable


class Side(enum.Enum):
    PHONE = "phone"
    INSTANCE = "instance"


class MediaError(Exception):
    """Media could not be set up; `status` is the SIP response to send instead (488, 503);
    `retry_after`: seconds for a Retry-After header (a 503 for a full range or a source's limit)."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None):
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(f"{status} {reason}")


@runtime_checkable
class MediaRelay(Protocol):
    def offer(self, call_id: str, from_tag: str, sdp: bytes, *, side: Side, source_ip: str,
              instance_rtp_only: bool = False, instance: str = "") -> bytes:
        """Rewrite an SDP offer coming from `side`; raise MediaError to refuse the call.
        `instance_rtp_only`: the instance that gets this phone offer refuses SRTP offers (the
        instance's `rtp_only`), so an SRTP relay offers it plain RTP and bridges. `instance`: the
        PBX the call goes to or comes from (its "host:port"), whose streams are counted against
        the per-instance limit."""
        ...

    def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *, side: Side, source_ip: str
    ) -> bytes:
        """Rewrite the SDP answer to an earlier offer of the same call."""
        ...

    def delete(self, call_id: str, from_tag: str | None = None) -> None:
        """Release every stream of the call (or of the one leg), idempotently."""
        ...


class PassThroughMedia:
    """SDP goes through unchanged: used when no media relay is running."""

    def offer(self, call_id: str, from_tag: str, sdp: bytes, *, side: Side, source_ip: str,
              instance_rtp_only: bool = False, instance: str = "") -> bytes:
        return sdp

    def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *, side: Side, source_ip: str
    ) -> bytes:
        return sdp

    def delete(self, call_id: str, from_tag: str | None = None) -> None:
        return None
