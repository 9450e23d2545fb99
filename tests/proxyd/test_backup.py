"""Backup archives: round trip through real proxyd processes, and every refusal on restore."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from proxyd.backup import HEADER, Archive, BackupError, decrypt, encrypt
from tests.support import ProxydProcess, base_config

PASS = "correct horse battery"


def cli(*args: str, stdin: str = PASS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxyd", *args, "--passphrase-file", "-"],
                          input=stdin + "\n", capture_output=True, text=True, timeout=60)


def test_archive_round_trip_and_tampering() -> None:
    archive = Archive("dmz", 1.0, {"config/last-good.json": b"{}", "certs/self-signed.key": b"k"})
    blob = encrypt(archive, PASS)
    assert decrypt(blob, PASS) == archive
    assert b"self-signed" not in blob  # names and contents are encrypted too
    with pytest.raises(BackupError, match="wrong passphrase"):
        decrypt(blob, PASS + "x")
    for i in (0, HEADER.size - 1, HEADER.size + 3, len(blob) - 1):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(BackupError):
            decrypt(bytes(bad), PASS)
    with pytest.raises(BackupError, match="wrong passphrase, or the file was changed or truncated"):
        decrypt(blob[:-10], PASS)
    with pytest.raises(BackupError, match="truncated"):
        decrypt(blob[:20], PASS)
    with pytest.raises(BackupError, match="version 2 is not supported"):
        decrypt(blob[:8] + b"\x02" + blob[9:], PASS)
    with pytest.raises(BackupError, match="passphrase too short"):
        encrypt(archive, "short")


def test_archive_with_a_path_outside_the_state_dir_is_refused() -> None:
    blob = encrypt(Archive("dmz", 1.0, {"../../etc/cron.d/x": b"boom"}), PASS)
    with pytest.raises(BackupError, match="must not"):
        decrypt(blob, PASS)


def test_standalone_backup_restore_keeps_certificate_and_provisioning_key(
    proxyd: Callable[..., ProxydProcess], tmp_path: Path
) -> None:
    cfg = base_config(proxy={"name": "dmz", "fqdn": "mobydick.example.com"})
    p = proxyd(cfg)
    fingerprint = p.status()["certificate"]
    out = tmp_path / "dmz.pfbk"
    res = cli("backup", "--state-dir", str(p.state_dir), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert out.stat().st_mode & 0o777 == 0o600

    res = cli("restore", "--state-dir", str(p.state_dir), "--in", str(out))
    assert res.returncode == 1 and "stop it first" in res.stderr  # only while the proxy is off
    p.stop()

    # A new machine: empty state dir, same config file. Without the restore it would make a new cert.
    fresh = tmp_path / "fresh"
    res = cli("restore", "--state-dir", str(fresh), "--in", str(out), stdin="not the passphrase")
    assert res.returncode == 1 and "nothing changed" in res.stderr
    assert not (fresh / "certs").exists()
    res = cli("restore", "--state-dir", str(fresh), "--in", str(out))
    assert res.returncode == 0, res.stderr
    p.state_dir = fresh
    p.start()
    assert p.status()["certificate"] == fingerprint


def test_restore_of_another_proxys_backup_needs_explicit_choice(
    proxyd: Callable[..., ProxydProcess], tmp_path: Path
) -> None:
    a = proxyd(base_config(proxy={"name": "alpha"}))
    b = proxyd(base_config(proxy={"name": "beta"}))
    out = tmp_path / "alpha.pfbk"
    assert cli("backup", "--state-dir", str(a.state_dir), "--out", str(out)).returncode == 0
    b.stop()
    res = cli("restore", "--state-dir", str(b.state_dir), "--in", str(out))
    assert res.returncode == 1 and "of proxy 'alpha', not 'beta'" in res.stderr
    res = cli("restore", "--state-dir", str(b.state_dir), "--in", str(out), "--into-this-proxy")
    assert res.returncode == 0, res.stderr


def test_a_manager_backup_restores_the_certificate_and_never_writes_the_managers_part(tmp_path: Path) -> None:
    """Disaster recovery of a managed proxy's machine: restore the manager's archive, then register anew."""
    archive = Archive("dmz", 1.0, {"certs/self-signed.pem": b"cert", "manager/proxy.json": b"{}"})
    out = tmp_path / "managed.pfbk"
    out.write_bytes(encrypt(archive, PASS))
    fresh = tmp_path / "fresh"
    res = cli("restore", "--state-dir", str(fresh), "--in", str(out))
    assert res.returncode == 0, res.stderr
    assert (fresh / "certs" / "self-signed.pem").read_bytes() == b"cert"
    assert not (fresh / "manager").exists()
    with pytest.raises(BackupError, match="must not"):
        decrypt(encrypt(Archive("dmz", 1.0, {"manager/../agent.json": b"x"}), PASS), PASS)
