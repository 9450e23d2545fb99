"""The SRTP<->RTP bridge's packet transforms (libsrtp through pylibsrtp).

One libsrtp session per direction and stream: the phone's key decrypts what the phone sends
(RTP and RTCP), the relay's own key encrypts what goes to the phone. Each transform is a bound
method or a small closure, so the relay's hot path calls one function per packet.
"""

from __future__ import annotations

from collections.abc import Callable

from pylibsrtp import Error, Policy, Session

from services.media.sdes import Crypto

XFORM_ERRORS = (Error, ValueError, IndexError)

_PROFILES = {"AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
             "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32}


def session(crypto: Crypto, *, inbound: bool) -> Session:
    ssrc = Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND
    return Session(Policy(key=crypto.key, ssrc_type=ssrc, srtp_profile=_PROFILES[crypto.suite]))


def _is_rtcp(data: bytes) -> bool:
    return 192 <= data[1] <= 223  # RFC 5761: RTCP packet types 192..223 on a muxed port


def decrypter(s: Session, *, rtcp_port: bool, mux: bool) -> Callable[[bytes], bytes]:
    if rtcp_port:
        return s.unprotect_rtcp
    if not mux:
        return s.unprotect
    return lambda data: s.unprotect_rtcp(data) if _is_rtcp(data) else s.unprotect(data)


def encrypter(s: Session, *, rtcp_port: bool, mux: bool) -> Callable[[bytes], bytes]:
    if rtcp_port:
        return s.protect_rtcp
    if not mux:
        return s.protect
    return lambda data: s.protect_rtcp(data) if _is_rtcp(data) else s.protect(data)
