"""DNS-01 for a managed proxy: the renewer's TXT record changes go to the manager, which holds
the DNS account (manager/proxies/api_acme.py); the certificate key never leaves the proxy.

`blocking(client, loop)` is what ServiceContext.acme_dns takes: the renewer calls it from its worker
thread, the request runs on the agent's loop with the agent's key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxyd.agent.client import ManagerClient, ManagerError

#: the manager's DNS update has its own 5 s timeout per try; this bounds the whole request
TIMEOUT = 30.0


def blocking(client: ManagerClient, loop: asyncio.AbstractEventLoop) -> Callable[[str, str, bool], None]:
    def change(name: str, value: str, present: bool) -> None:
        future = asyncio.run_coroutine_threadsafe(
            client.post_json("/api/v1/proxy/acme-dns", {"name": name, "value": value, "present": present}), loop)
        status, detail = future.result(TIMEOUT)
        if status != 200:
            raise ManagerError(f"the manager answered HTTP {status}: {detail}")

    return change
