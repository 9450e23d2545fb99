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
        Instance.objects.create(name="e2e", web=f"http://127.0.0.1:{cmd['backend_port']}")
        p = Proxy(name="e2e", fqdn="localhost", bind="127.0.0.1", web_port=cmd["web_port"], sip_mode="off",
                  media_mode="rtp", media_port_min=cmd["media_min"], media_port_max=cmd["media_min"] + 98,
                  provisioning_mode="off", xmpp_enabled=False)
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
    elif op == "set":
        p = Proxy.objects.get(name="e2e")
        for k, v in cmd.items():
            setattr(p, k, v)
        p.save()
        out = {"saved_at": time.time(), "revision": p.active_revision.number}
    return out


if __name__ == "__main__":
    main()
