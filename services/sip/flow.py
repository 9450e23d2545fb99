"""Flows and their sealed tokens (RFC 5626 style) — sans-IO.

A flow is where a message came from or goes to: side (phone "p" / backend "b"), transport,
address and, for streams, the connection id. Tokens carry a flow inside Path, Record-Route
and Via values. They are sealed with AES-SIV under a per-process random key: a phone cannot
forge one (and make the relay send traffic somewhere else), and the PBX cannot read the phone's
address out of one. AES-SIV is deterministic, so a flow always gets the same token (cached);
its tag is checked inside OpenSSL in constant time.
"""

from __future__ import annotations

import base64
import secrets
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from services.sip.lru import Lru

_T = {"udp": "u", "tcp": "t", "tls": "s"}
_T_BACK = {v: k for k, v in _T.items()}
#: Tokens are cached because the same few flows sign every message of a call (`Lru`: a flood of
#: spoofed sources, each minted a token, evicts only the least recently used). A miss costs one
#: AES-SIV operation (≈ 2 µs); each entry holds a Flow, which the cycle collector tracks (a
#: NamedTuple is never untracked): 65,536 in both, always full under a flood, added 16 MiB of RSS
#: and a longer full collection (`bench_sip --attack` p99) to main's cleared-when-full tables.
_CACHE_MAX = 16_384


class Flow(NamedTuple):  # a tuple: made for every datagram, and a dict key for the token caches
    side: str  # "p" phone side, "b" backend side
    transport: str  # udp | tcp | tls
    ip: str
    port: int
    conn: int = 0


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class FlowSigner:
    def __init__(self, key: bytes | None = None):
        self._aead = AESSIV(key or secrets.token_bytes(64))  # AES-256-SIV
        self._minted: Lru[Flow, str] = Lru(_CACHE_MAX)
        self._opened: Lru[str, Flow] = Lru(_CACHE_MAX)

    def mint(self, flow: Flow) -> str:
        tok = self._minted.hit(flow)
        if tok is None:
            payload = f"{flow.side}{_T[flow.transport]}{flow.ip}|{flow.port}|{flow.conn}".encode()
            tok = _b64(self._aead.encrypt(payload, None))
            self._minted.put(flow, tok)
        return tok

    def open(self, token: str) -> Flow | None:
        """The flow inside a token we minted, or None for anything forged or malformed."""
        flow = self._opened.hit(token)
        if flow is not None:
            return flow
        try:
            if len(token) > 200:
                return None
            sealed = _unb64(token)
            if len(sealed) <= 16:  # the SIV tag alone
                return None
            text = self._aead.decrypt(sealed, None).decode()
            ip, port, conn = text[2:].split("|")
            flow = Flow(text[0], _T_BACK[text[1]], ip, int(port), int(conn))
        except (ValueError, KeyError, UnicodeDecodeError, InvalidTag):
            return None
        self._opened.put(token, flow)
        return flow
