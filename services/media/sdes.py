"""SDES keys (RFC 4568 `a=crypto:<tag> <suite> inline:<key||salt>[|...]`). Sans-IO.

Only what the SRTP<->RTP bridge needs: read the key a phone sends with, and make the relay's own.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

# suite -> master key + salt length in bytes (AES-128 key 16 + salt 14)
SUITES = {"AES_CM_128_HMAC_SHA1_80": 30, "AES_CM_128_HMAC_SHA1_32": 30}


@dataclass(frozen=True)
class Crypto:
    tag: str
    suite: str
    key: bytes  # master key || master salt

    def line(self) -> str:
        """The a=crypto: value (without the `a=crypto:` prefix)."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


def parse(value: str) -> Crypto | None:
    """One a=crypto value; None when the suite is not one the bridge speaks or the key is unusable
    (key lifetimes, MKIs and session parameters are not supported: such a line is skipped)."""
    parts = value.split()
    if len(parts) != 3 or parts[1] not in SUITES or not parts[2].startswith("inline:"):
        return None
    inline = parts[2][7:]
    if "|" in inline:
        return None
    try:
        key = base64.b64decode(inline, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key) != SUITES[parts[1]]:
        return None
    return Crypto(parts[0], parts[1], key)


def choose(values: tuple[str, ...]) -> Crypto | None:
    """The first offered key the bridge can use."""
    for v in values:
        c = parse(v)
        if c is not None:
            return c
    return None


def own(tag: str = "1", suite: str = "AES_CM_128_HMAC_SHA1_80") -> Crypto:
    """A fresh key of the relay's own (it never leaves the process except in the SDP to the phone)."""
    return Crypto(tag, suite, secrets.token_bytes(SUITES[suite]))
