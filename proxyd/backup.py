"""Backup archives of a proxy: its settings, keys and certificates, in one encrypted file.

A proxy has no runtime data (seed 003), so a backup is the state dir's `config/` and `certs/`
plus the agent's identity. The archive is a fixed header followed by AES-256-GCM ciphertext of a
compressed JSON manifest; the key comes from the admin's passphrase through scrypt with a random
salt. The header is authenticated as associated data, so a changed version or KDF parameter is
detected like any other tampering. `read_archive()` verifies everything before returning, and
`restore_into()` writes nothing until the archive has been fully verified.

Format v1:  b"PFORTEBK" | version u8 | log2(n) u8 | r u8 | p u8 | salt 16 | nonce 12 | ciphertext

A backup made through the manager also holds `manager/…` members (the proxy's settings as the
manager keeps them); they belong to the manager and are never written into a state dir.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from proxyd.statedir import StateDir
from proxyd.tls import write_private

MAGIC = b"PFORTEBK"
VERSION = 1
HEADER = struct.Struct(">8sBBBB16s12s")
# scrypt n=2^15, r=8: ~32 MiB and ~0.1 s per guess on these machines: slow for brute force,
# quick enough for an admin. Stored in the header so later versions can raise it.
LOG2_N, R, P = 15, 8, 1
MAX_ARCHIVE = 16 * 2**20  # certificates and a config: a larger file is not ours
MIN_PASSPHRASE = 8

# What a backup holds, relative to the state dir. Logs and the control socket are runtime data.
INCLUDED_DIRS = ("config", "certs")
INCLUDED_FILES = ("agent.json",)
MANAGER_DIR = "manager"  # members only the manager reads (its settings of the proxy)
# certs/current.* is the installed copy of whichever pair is active, made again on every install
DERIVED_CERTS = ("current.pem", "current.key")


class BackupError(ValueError):
    """The archive cannot be made or used; the message says why, for the admin."""


@dataclass(frozen=True)
class Archive:
    proxy: str
    created: float
    files: dict[str, bytes]

    @property
    def manifest(self) -> dict[str, Any]:
        return {
            "format": "pforte-backup", "version": VERSION, "proxy": self.proxy, "created": self.created,
            "files": {k: base64.b64encode(v).decode() for k, v in sorted(self.files.items())},
        }


def _kdf(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(passphrase.encode("utf-8"))


@dataclass(frozen=True)
class SealingKey:
    """A key derived from a passphrase with a fresh salt. The manager derives it when the admin
    asks for a backup and keeps only this (never the passphrase) until the proxy has answered."""

    key: bytes = field(repr=False)
    salt: bytes


def sealing_key(passphrase: str) -> SealingKey:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"passphrase too short (at least {MIN_PASSPHRASE} characters)")
    salt = secrets.token_bytes(16)
    return SealingKey(_kdf(passphrase, salt, LOG2_N, R, P), salt)


def seal(archive: Archive, key: SealingKey) -> bytes:
    nonce = secrets.token_bytes(12)  # a fresh nonce per archive, so a key may seal more than once
    header = HEADER.pack(MAGIC, VERSION, LOG2_N, R, P, key.salt, nonce)
    body = zlib.compress(json.dumps(archive.manifest).encode(), 9)
    return header + AESGCM(key.key).encrypt(nonce, body, header)


def encrypt(archive: Archive, passphrase: str) -> bytes:
    return seal(archive, sealing_key(passphrase))


def decrypt(blob: bytes, passphrase: str) -> Archive:
    """Verify and open an archive; every failure is a BackupError saying which."""
    if len(blob) > MAX_ARCHIVE:
        raise BackupError("file too large to be a pforte backup")
    if len(blob) < HEADER.size + 16:
        raise BackupError("file is truncated or not a pforte backup")
    magic, version, log2_n, r, p, salt, nonce = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise BackupError("not a pforte backup")
    if version != VERSION:
        raise BackupError(f"backup format version {version} is not supported (this proxyd reads {VERSION})")
    if not (10 <= log2_n <= 20 and 1 <= r <= 16 and 1 <= p <= 4):
        raise BackupError("backup header is damaged (key derivation parameters out of range)")
    header = blob[: HEADER.size]
    try:
        body = AESGCM(_kdf(passphrase, salt, log2_n, r, p)).decrypt(nonce, blob[HEADER.size :], header)
    except InvalidTag:
        raise BackupError("wrong passphrase, or the file was changed or truncated") from None
    try:
        manifest = json.loads(zlib.decompress(body))
        files = {str(k): base64.b64decode(v, validate=True) for k, v in manifest["files"].items()}
        archive = Archive(str(manifest["proxy"]), float(manifest["created"]), files)
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise BackupError(f"backup contents are malformed: {exc}") from None
    for name in archive.files:
        _check_member(name)
    return archive


def _check_member(name: str) -> None:
    """Only the paths a backup may hold: never absolute, never `..`, never outside the set."""
    parts = Path(name).parts
    ok = (
        not Path(name).is_absolute()
        and ".." not in parts
        and ((len(parts) == 2 and parts[0] in (*INCLUDED_DIRS, MANAGER_DIR))
             or (len(parts) == 1 and name in INCLUDED_FILES))
    )
    if not ok:
        raise BackupError(f"backup contains a path it must not: {name!r}")


def collect(state: StateDir, proxy: str) -> Archive:
    files: dict[str, bytes] = {}
    for sub in INCLUDED_DIRS:
        d = state.root / sub
        if d.is_dir():
            for f in sorted(d.iterdir()):
                if f.is_file() and not f.name.endswith(".tmp"):
                    files[f"{sub}/{f.name}"] = f.read_bytes()
    for name in INCLUDED_FILES:
        f = state.root / name
        if f.is_file():
            files[name] = f.read_bytes()
    if "config/last-good.json" not in files:
        raise BackupError(f"{state.root} holds no applied config yet: nothing to back up")
    return Archive(proxy=proxy, created=time.time(), files=files)


def proxy_name_of(state: StateDir) -> str:
    cfg = state.load_last_good()
    if cfg is None:
        raise BackupError(f"{state.root} holds no applied config yet: nothing to back up")
    return cfg.proxy.name


def restore_into(state: StateDir, archive: Archive, *, expect_proxy: str | None, other_proxy_ok: bool) -> list[str]:
    """Write a verified archive into the state dir; refuses another proxy's backup unless told."""
    if expect_proxy is not None and archive.proxy != expect_proxy and not other_proxy_ok:
        raise BackupError(
            f"this backup is of proxy {archive.proxy!r}, not {expect_proxy!r}; "
            "restore it into this proxy only on purpose (--into-this-proxy)"
        )
    state.ensure()
    written = []
    for name, data in sorted(archive.files.items()):
        if name.startswith(MANAGER_DIR + "/"):
            continue  # the manager's copy of the settings; the proxy gets those as its config
        target = state.root / name
        target.parent.mkdir(mode=0o700, exist_ok=True)
        if name.endswith((".pem",)):
            tmp = target.with_suffix(target.suffix + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        else:
            # keys, configs (provisioning key, private keys) and the agent identity are secrets
            write_private(target, data.decode("utf-8"))
        written.append(name)
    return written
