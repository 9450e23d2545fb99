"""Drives the manager's models from a separate process for the e2e tests (JSON lines on stdin/stdout).

Changes go through `Model.save()`, so the manager's own signals publish revisions exactly as the
UI does; the serving manager process picks them up through its database re-check.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from typing import Any


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "manager.settings")
    import django

    django.setup()
    from django.db import OperationalError
    from django.utils import timezone

    from manager.proxies.models import Instance, Proxy, Registration

    for line in sys.stdin:
        cmd = json.loads(line)
        for attempt in range(20):
            try:
                out = handle(dict(cmd), Instance, Proxy, Registration, timezone)
                break
            except OperationalError:  # SQLite "database is locked" while the manager writes a heartbeat
                if attempt == 19:
                    raise
                time.sleep(0.1)
        print(json.dumps(out), flush=True)


def handle(cmd: dict, Instance: Any, Proxy: Any, Registration: Any, timezone: Any) -> dict:  # noqa: N803
    op = cmd.pop("op")
    out: dict = {}
    if op == "setup":
        Instance.objects.create(name="e2e", web=f"http://127.0.0.1:{cmd['backend_port']}", **cmd.get("instance", {}))
        fields = {"provisioning_mode": "off", **cmd.get("proxy", {})}
        p = Proxy(name="e2e", fqdn="localhost", bind="127.0.0.1", web_port=cmd["web_port"], sip_mode="off",
                  media_mode="rtp", media_port_min=cmd["media_min"], media_port_max=cmd["media_min"] + 98,
                  xmpp_enabled=False, **fields)
        p.full_clean()
        p.save()
        out = {"proxy_id": p.pk}
    elif op == "registration":
        reg, token = Registration.create_for(Proxy.objects.get(name="e2e"))
        if cmd.get("expired"):
            Registration.objects.filter(pk=reg.pk).update(expires=timezone.now() - timedelta(seconds=1))
        out = {"token": token}
    elif op == "status":
        out = {"status": Proxy.objects.get(name="e2e").status()[0]}
    elif op == "superuser":
        from django.contrib.auth import get_user_model

        get_user_model().objects.create_superuser(cmd["user"], "e2e@example.invalid", cmd["password"])
    elif op == "settings":
        from manager.proxies.backups import settings_of

        out = json.loads(json.dumps(settings_of(Proxy.objects.get(name="e2e")), default=str))
        out["revision"] = Proxy.objects.get(name="e2e").active_revision.number
    elif op == "provisioning_url":
        from services.provisioning.token import provisioning_url

        p = Proxy.objects.get(name="e2e")
        out = {"url": provisioning_url(p.fqdn, p.provisioning_https_port, p.provisioning_key, "e2e", cmd["mac"])}
    elif op == "actions":
        from manager.proxies.models import ProxyAction

        out = {"actions": [{"kind": a.kind, "state": a.state, "error": a.error}
                           for a in ProxyAction.objects.filter(proxy__name="e2e").order_by("pk")]}
    elif op == "set":
        p = Proxy.objects.get(name="e2e")
        for k, v in cmd.items():
            setattr(p, k, v)
        p.save()
        out = {"saved_at": time.time(), "revision": p.active_revision.number}
    return out


if __name__ == "__main__":
    main()
