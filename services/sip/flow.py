"""Flows and their authenticated tokens (RFC 5626 style) — sans-IO.

A flow is where a message came from or goes to: side (phone "p" / backend "b"), transport,
address and, for streams, the connection id. Tokens carry a flow inside Path, Record-Route
and Via values; they are signed with a per-process random key so a phone cannot forge one
and make the relay send traffic somewhere else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import NamedTuple

_T = {"udp": "u", "tcp": "t", "tls": "s"}
_T_BACK = {v: k for k, v in _T.items()}
#: Tokens are cached because the same few flows sign every message of a call.
_CACHE_MAX = 65536


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
        self._key = key or secrets.token_bytes(32)
        self._minted: dict[Flow, str] = {}
        self._opened: dict[str, Flow] = {}

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:12]

    def mint(self, flow: Flow) -> str:
        tok = self._minted.get(flow)
        if tok is None:
            payload = f"{flow.side}{_T[flow.transport]}{flow.ip}|{flow.port}|{flow.conn}".encode()
            tok = f"{_b64(payload)}.{_b64(self._mac(payload))}"
            if len(self._minted) > _CACHE_MAX:
                self._minted.clear()
            self._minted[flow] = tok
        return tok

    def open(self, token: str) -> Flow | None:
        """The flow inside a token we minted, or None for anything forged or malformed."""
        flow = self._opened.get(token)
        if flow is not None:
            return flow
        try:
            p64, _, m64 = token.partition(".")
            payload, mac = _unb64(p64), _unb64(m64)
            if not hmac.compare_digest(mac, self._mac(payload)):
                return None
            text = payload.decode()
            ip, port, conn = text[2:].split("|")
            flow = Flow(text[0], _T_BACK[text[1]], ip, int(port), int(conn))
        except (ValueError, KeyError, UnicodeDecodeError):
            return None
        if len(self._opened) > _CACHE_MAX:
            self._opened.clear()
        self._opened[token] = flow
        return flow
