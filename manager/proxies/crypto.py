"""Secrets at rest (private keys, provisioning keys, DDNS credentials): Fernet with SECRETS_KEY."""

from __future__ import annotations

import base64
import secrets

from cryptography.fernet import Fernet
from django.conf import settings


def _fernet() -> Fernet:
    return Fernet(settings.SECRETS_KEY.encode())


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def new_provisioning_key() -> str:
    """A fresh provisioning key: base64 of 32 random bytes, as ProxyConfig wants it."""
    return base64.b64encode(secrets.token_bytes(32)).decode()
