"""Secrets at rest (private keys, provisioning keys, DDNS credentials): Fernet with SECRETS_KEY."""

from __future__ import annotations

import base64
import secrets
import threading

from cryptography.fernet import Fernet
from django.conf import settings


def _fernet() -> Fernet:
    return Fernet(settings.SECRETS_KEY.encode())


def encrypt(value: str) -> str:
    token = _fernet().encrypt(value.encode()).decode()
    _remember(token, value)  # a revision just written is read back by the next change to every proxy
    return token


# Plaintexts of tokens made or decrypted lately: a change to every proxy reads each one's provisioning key
# and its previous revision's secrets, and the feed has those in memory already (it serves them).
# Bounded in size; the oldest entry goes first.
MEMO_CHARS = 32 * 2**20
_memo: dict[str, str] = {}
_memo_chars = 0
_memo_lock = threading.Lock()


def decrypt(token: str) -> str:
    hit = _memo.get(token)
    if hit is not None:
        return hit
    value = _fernet().decrypt(token.encode()).decode()
    _remember(token, value)
    return value


def _remember(token: str, value: str) -> None:
    global _memo_chars
    size = len(token) + len(value)
    with _memo_lock:
        while _memo and _memo_chars + size > MEMO_CHARS:
            old = next(iter(_memo))
            _memo_chars -= len(old) + len(_memo.pop(old))
        if size <= MEMO_CHARS and token not in _memo:
            _memo[token] = value
            _memo_chars += size


def new_provisioning_key() -> str:
    """A fresh provisioning key: base64 of 32 random bytes, as ProxyConfig wants it."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


REVISION_SECRETS = (("tls", "key_pem"), ("services", "provisioning", "key"))


def split_secrets(cfg: dict) -> tuple[dict, dict[str, str]]:
    """(config with every secret set to None, {"tls.key_pem": value, ...} for the ones present)."""
    # copied only along the secrets' paths (the rest is shared with `cfg`): a change to every proxy
    # splits thousands of configs
    out = dict(cfg)
    found: dict[str, str] = {}
    for path in REVISION_SECRETS:
        node = out
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                break
            node[key] = node = dict(child)
        else:
            if node.get(path[-1]):
                found[".".join(path)] = node[path[-1]]
                node[path[-1]] = None
    return out, found
