"""Backup and restore through the manager's API with a running managed proxyd (seed 003).

on -> backup (the manager asks the proxy through the config channel, the proxy uploads its
certificate files) -> off -> settings changed (new FQDN, so the proxy makes a new self-signed
certificate; new provisioning key; other redirect) -> every verification error changes nothing ->
restore -> on -> the proxy serves the same certificate (checked in a real TLS handshake), the
provisioning URL issued before the backup works again, and the settings are the backed-up ones.
"""

from __future__ import annotations

import base64
import secrets
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from proxyd.agent import state as agent_state
from proxyd.backup import Archive, decrypt, encrypt
from proxyd.statedir import StateDir
from proxyd.tls import fingerprint
from tests.e2e.secrets_in_logs import leaks, log_files
from tests.e2e.test_agent_manager import Ctl, Manager, backend, manager, proxyd, status, wait_for  # noqa: F401
from tests.support import free_port, free_udp_range

pytestmark = [pytest.mark.e2e]

PASS = "a passphrase the admin typed"
MAC = "00:15:65:aa:bb:cc"
ADMIN = ("e2e-admin", "an-e2e-admin-password")


def served_fingerprint(port: int) -> str:
    return fingerprint(ssl.get_server_certificate(("127.0.0.1", port), timeout=5))


def provisioning_ok(url: str) -> bool:
    try:
        r = httpx.get(url.replace("://localhost:", "://127.0.0.1:"), verify=False, timeout=5)  # noqa: S501
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and "provisioning for" in r.text


def test_backup_off_change_restore_on_serves_the_same_certificate_key_and_settings(
    manager: Manager, backend: int, tmp_path: Path  # noqa: F811
) -> None:
    ctl = Ctl(manager.env)
    web_port, prov_port = free_port(), free_port()
    pid = ctl("setup", web_port=web_port, backend_port=backend, media_min=free_udp_range(100),
              proxy={"provisioning_mode": "encrypted", "provisioning_https_port": prov_port},
              instance={"provisioning": f"http://127.0.0.1:{backend}/prov/{{mac}}"})["proxy_id"]
    ctl("superuser", user=ADMIN[0], password=ADMIN[1])
    api = httpx.Client(base_url=f"{manager.url}/api/v1/proxies/{pid}", auth=ADMIN, timeout=30)
    state = tmp_path / "proxy"
    reg = f"{manager.url}/api/v1/register/{ctl('registration')['token']}/"
    done = proxyd("register", reg, "--state-dir", str(state))
    assert done.returncode == 0
    (tmp_path / "register.out").write_text(done.stdout + done.stderr)
    log = open(tmp_path / "proxyd.out", "ab")  # noqa: SIM115 - closed below
    # DEBUG: the secrets check at the end covers every line proxyd can log
    p = subprocess.Popen([sys.executable, "-m", "proxyd", "run", "--state-dir", str(state), "--admin", "off",
                          "--drain-timeout", "1", "--backoff-max", "1", "--log-level", "DEBUG"],
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ctl("status")["status"] == "Online", 15)
        wait_for(lambda: status(state)["enabled"] is True and status(state)["certificate"] is not None, 15)
        original = served_fingerprint(web_port)
        assert original == status(state)["certificate"]
        url = ctl("provisioning_url", mac=MAC)["url"]
        wait_for(lambda: provisioning_ok(url), 10)
        # refusals of token URLs are logged (a path beside it; a token one character off)
        for bad_url in (url.rstrip("/") + "/../x", url.replace("/p/", "/p/A", 1)):
            assert not provisioning_ok(bad_url)
        settings = ctl("settings")

        # on: restore refused (and said why); backup asked of the proxy and uploaded by it
        r = api.post("/restore/", files={"file": ("b.pfbk", b"x" * 100)}, data={"passphrase": PASS})
        assert r.status_code == 409 and "Switch it off first" in r.json()["detail"]
        assert api.post("/backups/", json={"passphrase": "short"}).status_code == 400
        t0 = time.monotonic()
        r = api.post("/backups/", json={"passphrase": PASS})
        assert r.status_code == 202, r.text
        wait_for(lambda: api.get("/backups/").json()["backups"], 10)
        print(f"\nbackup request -> archive stored: {time.monotonic() - t0:.2f} s")
        (row,) = api.get("/backups/").json()["backups"]
        blob = httpx.get(manager.url + row["download"], auth=ADMIN).content
        assert len(blob) == row["size"]
        archive = decrypt(blob, PASS)
        assert {"certs/self-signed.pem", "certs/self-signed.key", "manager/proxy.json"} <= set(archive.files)
        assert fingerprint(archive.files["certs/self-signed.pem"].decode()) == original

        # off: backup refused; the settings change, and the proxy makes a new certificate for the new name
        rev = ctl("set", enabled=False)["revision"]
        wait_for(lambda: status(state)["revision"] == rev and status(state)["enabled"] is False, 10)
        r = api.post("/backups/", json={"passphrase": PASS})
        assert r.status_code == 409 and "The proxy is off" in r.json()["detail"]
        new_key = base64.b64encode(secrets.token_bytes(32)).decode()
        rev = ctl("set", fqdn="changed.localhost", redirect_url="https://example.com/changed",
                  provisioning_key=new_key)["revision"]
        wait_for(lambda: status(state)["revision"] == rev, 10)
        assert status(state)["certificate"] != original
        changed = ctl("settings")

        tampered = bytearray(blob)
        tampered[100] ^= 0x40
        bad = [
            (blob, "not the passphrase", "wrong passphrase"),
            (blob[: len(blob) // 2], PASS, "changed or truncated"),
            (bytes(tampered), PASS, "changed or truncated"),
            (blob[:8] + b"\x02" + blob[9:], PASS, "version 2 is not supported"),
            (encrypt(Archive("elsewhere", archive.created, archive.files), PASS), PASS, "of proxy 'elsewhere'"),
        ]
        for data, passphrase, error in bad:
            r = api.post("/restore/", files={"file": ("b.pfbk", data)}, data={"passphrase": passphrase})
            assert r.status_code == 400 and error in r.json()["detail"], r.text
            assert ctl("settings") == changed
        assert [a["kind"] for a in ctl("actions")["actions"]] == ["backup"]

        r = api.post("/restore/", files={"file": ("b.pfbk", blob)}, data={"passphrase": PASS})
        assert r.status_code == 200, r.text
        wait_for(lambda: ctl("actions")["actions"][-1]["state"] == "done", 10)  # the proxy took its files
        assert status(state)["enabled"] is False
        rev = ctl("set", enabled=True)["revision"]
        wait_for(lambda: status(state)["revision"] == rev and status(state)["enabled"] is True, 10)
        assert status(state)["certificate"] == original
        wait_for(lambda: served_fingerprint(web_port) == original, 5)
        assert provisioning_ok(url)  # issued before the backup, valid again
        after = ctl("settings")
        assert {k: v for k, v in after.items() if k != "revision"} == \
               {k: v for k, v in settings.items() if k != "revision"}
        assert p.poll() is None
    finally:
        p.terminate()
        p.wait(15)
        log.close()
        ctl.close()
        api.close()

    # no secret of this run in any log of the proxy or the manager (captured output, log files)
    used = {
        "registration URL": reg,
        "API key": agent_state.load(StateDir(state)).api_key,
        "provisioning URL": url,
        "provisioning key (new)": new_key,
        "provisioning key": settings["provisioning_key"],
        "TLS private key": archive.files["certs/self-signed.key"].decode(),
        "backup passphrase": PASS,
        "admin password": ADMIN[1],
    }
    files = log_files(tmp_path)
    assert {tmp_path / "register.out", tmp_path / "proxyd.out", state / "logs" / "proxyd.log", manager.log} \
        <= set(files)
    assert leaks(used, files) == []
