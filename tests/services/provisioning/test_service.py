"""Provisioning through a real proxyd: each mode, real HTTPS/HTTP clients, a real backend."""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
from collections.abc import Callable

import httpx

from services.provisioning.token import encode_token
from tests.support import ProxydProcess, base_config, free_port

KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def prov_config(backend: str, mode: str, **extra: object) -> dict:
    return base_config(
        instances=[{"name": "mycompany", "provisioning": backend + "/prov/{MAC}"}],
        services={"provisioning": {"mode": mode, "https_port": free_port(), "http_port": free_port(), "key": KEY}},
        **extra,
    )


def test_encrypted_mode_serves_tokens_only(proxyd: Callable[..., ProxydProcess], backend: str) -> None:
    cfg = prov_config(backend, "encrypted")
    proxyd(cfg)
    base = f"https://127.0.0.1:{cfg['services']['provisioning']['https_port']}"
    token = encode_token(KEY, "mycompany", "08:C2:5A:4F:03:21")
    with httpx.Client(verify=False, timeout=20) as c:
        r = c.get(f"{base}/p/{token}/y000000000028.cfg")
        assert r.status_code == 200 and r.json()["path"] == "/prov/08C25A4F0321/y000000000028.cfg"
        assert r.headers["content-type"] == "application/json"
        trusted = c.get(f"{base}/p/mycompany/08C25A4F0321")
        tampered = c.get(f"{base}/p/{token[:-1]}B")
        assert trusted.status_code == tampered.status_code == 404 and trusted.content == tampered.content
        assert c.get(f"{base}/p/{token}/..%2f").content == trusted.content  # non-canonical: the same denial
    with httpx.Client(timeout=5) as c:  # no plain HTTP listener in this mode
        try:
            c.get(f"http://127.0.0.1:{cfg['services']['provisioning']['http_port']}/p/{token}")
            raise AssertionError("plain HTTP must not be served in mode encrypted")
        except httpx.HTTPError:
            pass


def test_http_and_https_mode_and_key_change(proxyd: Callable[..., ProxydProcess], backend: str) -> None:
    cfg = prov_config(backend, "http_and_https")
    p = proxyd(cfg)
    https = f"https://127.0.0.1:{cfg['services']['provisioning']['https_port']}"
    http = f"http://127.0.0.1:{cfg['services']['provisioning']['http_port']}"
    with httpx.Client(verify=False, timeout=20) as c:
        assert c.get(f"{http}/p/mycompany/08c25a4f0321.cfg").json()["path"] == "/prov/08C25A4F0321/08c25a4f0321.cfg"
        assert c.get(f"{https}/p/mycompany/08-C2-5A-4F-03-21").json()["path"] == "/prov/08C25A4F0321"
        assert c.get(f"{https}/p/nosuch/08C25A4F0321").status_code == 404
    # back to encrypted with a new key: earlier tokens stop working at once
    old_token = encode_token(KEY, "mycompany", "08C25A4F0321")
    new_key = base64.b64encode(secrets.token_bytes(32)).decode()
    prov = {**cfg["services"]["provisioning"], "mode": "encrypted", "key": new_key}
    p.reload({**cfg, "revision": 2, "services": {**cfg["services"], "provisioning": prov}})
    with httpx.Client(verify=False, timeout=20) as c:
        assert c.get(f"{https}/p/{old_token}").status_code == 404
        assert c.get(f"{https}/p/{encode_token(new_key, 'mycompany', '08C25A4F0321')}").status_code == 200


def test_backend_down_is_502(proxyd: Callable[..., ProxydProcess]) -> None:
    cfg = prov_config(f"http://127.0.0.1:{free_port()}", "https")
    proxyd(cfg)
    with httpx.Client(verify=False, timeout=20) as c:
        r = c.get(f"https://127.0.0.1:{cfg['services']['provisioning']['https_port']}/p/mycompany/08C25A4F0321")
        assert r.status_code == 502


def test_cli_prints_the_url_for_the_mode(tmp_path, backend: str) -> None:  # type: ignore[no-untyped-def]
    import json

    cfg = prov_config(backend, "encrypted")
    path = tmp_path / "p.json"
    path.write_text(json.dumps(cfg))
    run = lambda *a: subprocess.run([sys.executable, "-m", "proxyd", "provisioning-url", "--config", str(path), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    res = run("mycompany", "08:c2:5a:4f:03:21")
    port = cfg["services"]["provisioning"]["https_port"]
    assert res.returncode == 0
    assert res.stdout.strip() == f"https://proxy.test:{port}/p/{encode_token(KEY, 'mycompany', '08C25A4F0321')}"
    assert run("nosuch", "08C25A4F0321").returncode == 1
    res = run("mycompany", "zz")
    assert res.returncode == 1 and "invalid MAC" in res.stderr


def test_guessing_gets_a_source_blocked_and_mode_off_closes_the_listeners(
    proxyd: Callable[..., ProxydProcess], backend: str
) -> None:
    from services.provisioning.routes import FAIL_LIMIT

    cfg = prov_config(backend, "https")
    p = proxyd(cfg)
    base = f"https://127.0.0.1:{cfg['services']['provisioning']['https_port']}"
    with httpx.Client(verify=False, timeout=20) as c:
        codes = [c.get(f"{base}/p/guess{i}/08C25A4F0321").status_code for i in range(FAIL_LIMIT)]
        assert codes == [404] * FAIL_LIMIT
        assert c.get(f"{base}/p/mycompany/08C25A4F0321").status_code == 429  # even a right guess now
    st = p.status()["services"]["provisioning"]
    assert st["counters"]["source_blocks"] == 1 and st["gauges"]["blocked_sources"] == 1
    off = {**cfg["services"]["provisioning"], "mode": "off"}
    p.reload({**cfg, "revision": 2, "services": {**cfg["services"], "provisioning": off}})
    assert p.status()["services"]["provisioning"]["state"] == "stopped"
    with httpx.Client(verify=False, timeout=5) as c:
        try:
            c.get(f"{base}/p/mycompany/08C25A4F0321")
            raise AssertionError("mode off must close the listener")
        except httpx.HTTPError:
            pass
