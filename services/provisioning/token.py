"""The provisioning token codec: (instance, MAC) <-> an opaque, URL-safe token. Sans-IO.

AES-SIV (RFC 5297) is deterministic authenticated encryption: the same device always gets the
same URL, the token reveals neither instance nor MAC, and any change to the token (or a changed
provisioning key) makes it fail to decrypt. The token is unpadded base64url, so it needs no
percent-encoding in a URL path.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

# Binds tokens to this use and format version; a future format changes it.
ASSOCIATED_DATA = b"pforte provisioning token v1"
MAC_RE = re.compile(r"^[0-9A-F]{12}$")
# the documented spellings: 12 hex digits, or six pairs all joined by ':' or all by '-' (any case)
_SPELLINGS = re.compile(r"[0-9A-Fa-f]{12}|[0-9A-Fa-f]{2}(?:([:-])[0-9A-Fa-f]{2})(?:\1[0-9A-Fa-f]{2}){4}")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,200}$")


class InvalidToken(ValueError):
    """The token is malformed, tampered with, or made under another key."""


def decode_key(key: str) -> bytes:
    """The provisioning key as configured (base64 or base64url of 32 bytes) -> raw bytes."""
    padded = key + "=" * (-len(key) % 4)
    raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    if len(raw) != 32:
        raise ValueError("provisioning key must be 32 bytes")
    return raw


def normalize_mac(mac: str) -> str | None:
    """`08:c2:5a:4f:03:21`, `08-C2-5A-4F-03-21`, `08c25a4f0321` -> `08C25A4F0321`; else None.

    Only a unicast device address identifies a phone: the group bit (I/G, the lowest bit of the
    first octet) clear, which also excludes broadcast, and not all zero."""
    if not _SPELLINGS.fullmatch(mac):
        return None
    flat = mac.replace(":", "").replace("-", "").upper()
    if int(flat[:2], 16) & 1 or flat == "000000000000":
        return None
    return flat


def encode_token(key: str | bytes, instance: str, mac: str) -> str:
    norm = normalize_mac(mac)
    if norm is None:
        raise ValueError(f"invalid MAC address {mac!r}")
    raw_key = decode_key(key) if isinstance(key, str) else key
    ct = AESSIV(raw_key).encrypt(f"{instance}/{norm}".encode(), [ASSOCIATED_DATA])
    return base64.urlsafe_b64encode(ct).rstrip(b"=").decode()


def decode_token(key: str | bytes, token: str) -> tuple[str, str]:
    """-> (instance, MAC). Raises InvalidToken for anything that is not a token we made."""
    if not TOKEN_RE.match(token):
        raise InvalidToken("malformed")
    try:
        ct = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed") from exc
    # Canonical form only: one device, one URL (no alternative encodings of the same bytes).
    if base64.urlsafe_b64encode(ct).rstrip(b"=").decode() != token:
        raise InvalidToken("malformed")
    raw_key = decode_key(key) if isinstance(key, str) else key
    try:
        plain = AESSIV(raw_key).decrypt(ct, [ASSOCIATED_DATA])
    except (InvalidTag, ValueError) as exc:
        raise InvalidToken("does not authenticate") from exc
    instance, sep, mac = plain.decode("utf-8", "replace").rpartition("/")
    if not sep or normalize_mac(mac) != mac:
        raise InvalidToken("bad contents")
    return instance, mac


def provisioning_url(fqdn: str, https_port: int, key: str, instance: str, mac: str) -> str:
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{fqdn}{port}/p/{encode_token(key, instance, mac)}"


def trusted_url(fqdn: str, port: int, instance: str, mac: str, *, scheme: str = "https") -> str:
    norm = normalize_mac(mac)
    if norm is None:
        raise ValueError(f"invalid MAC address {mac!r}")
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{fqdn}{'' if port == default else f':{port}'}/p/{instance}/{norm}"
