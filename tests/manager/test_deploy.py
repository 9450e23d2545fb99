"""Production settings follow the public URL: an https:// one gives a deployment `check --deploy`
has nothing to say about; loopback http (as `make run`) stays plain. The data dir and SQLite file
are owner-only, and agent keys travel only over TLS or loopback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def manager(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "PFORTE_MANAGER_DATA": str(tmp_path / "data"), **env}
    return subprocess.run([sys.executable, "-m", "manager.cli", *args], env=full, capture_output=True,
                          text=True, timeout=120)


def test_https_public_url_passes_check_deploy(tmp_path: Path) -> None:
    done = manager(tmp_path, "check", "--deploy", "--fail-level", "WARNING",
                   PFORTE_PUBLIC_URL="https://manager.example.com")
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout


def test_loopback_http_is_development_and_check_deploy_says_so(tmp_path: Path) -> None:
    done = manager(tmp_path, "check", "--deploy", PFORTE_PUBLIC_URL="http://127.0.0.1:8000")
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in done.stderr  # HSTS, SSL redirect, secure session and CSRF cookies


def test_data_dir_and_sqlite_file_are_owner_only(tmp_path: Path) -> None:
    os.umask(0o022)
    assert manager(tmp_path, "migrate", "-v0").returncode == 0
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for f in data.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f


def test_ssl_header_comes_from_configuration(tmp_path: Path) -> None:
    code = "import django; django.setup(); from django.conf import settings as s; print(s.SECURE_PROXY_SSL_HEADER)"
    env = {"PATH": os.environ["PATH"], "PFORTE_MANAGER_DATA": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "manager.settings"}
    run = [sys.executable, "-c", code]
    assert subprocess.run(run, env=env, capture_output=True, text=True).stdout.strip() == "None"
    out = subprocess.run(run, env={**env, "PFORTE_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"},
                         capture_output=True, text=True).stdout.strip()
    assert out == "('HTTP_X_FORWARDED_PROTO', 'https')"


@pytest.mark.usefixtures("db")
@pytest.mark.parametrize("path", ["/api/v1/proxy/config", "/api/v1/proxy/heartbeat", "/api/v1/register/"])
def test_agent_api_only_over_tls_or_loopback(path: str) -> None:
    from django.test import Client, override_settings

    remote = Client(REMOTE_ADDR="192.0.2.7")
    method = remote.get if path.endswith("config") else remote.post
    refused = method(path, HTTP_AUTHORIZATION="Bearer 1.secret")
    assert refused.status_code == 403 and "only over https" in refused.json()["detail"]
    # over TLS the key is checked as usual (this one is unknown: 401, registration: 400)
    assert method(path, HTTP_AUTHORIZATION="Bearer 1.secret", secure=True).status_code in (400, 401)
    # on loopback too
    assert getattr(Client(), method.__name__)(path, HTTP_AUTHORIZATION="Bearer 1.secret").status_code in (400, 401)
    # a TLS-terminating proxy's header counts only when configured
    with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        ok = method(path, HTTP_AUTHORIZATION="Bearer 1.secret", HTTP_X_FORWARDED_PROTO="https")
        assert ok.status_code in (400, 401)
    assert method(path, HTTP_AUTHORIZATION="Bearer 1.secret", HTTP_X_FORWARDED_PROTO="https").status_code == 403
