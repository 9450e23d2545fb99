"""Applies the config's `network` part through the netconf helper process, before services bind.

pyroute2 refuses uvloop's loop, so netconf runs as `python -m netconf` (JSON in/out). Mode auto
changes nothing on the host. A failed apply raises, so the supervisor keeps the previous config.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from proxyd.config import Network

log = logging.getLogger("proxyd.network")

HELPER_TIMEOUT = 30.0


class NetworkError(RuntimeError):
    pass


class NetworkState:
    def __init__(self) -> None:
        self.applied: Network | None = None
        self.last_result: dict[str, Any] = {"mode": "auto"}

    async def apply(self, net: Network) -> None:
        if net == self.applied:
            return
        if net.mode == "manual":
            desired = {"interface": net.interface, "address": net.address, "gateway": net.gateway,
                       "table": net.table}
            out = await _helper("apply", desired)
            self.last_result = {"mode": "manual", "interface": net.interface, "address": net.address,
                                "table": net.table, "changes": out.get("applied", [])}
            log.info("event=network_applied interface=%s address=%s table=%d changes=%s", net.interface,
                     net.address, net.table, ",".join(self.last_result["changes"]) or "-")
        else:
            self.last_result = {"mode": "auto"}
        self.applied = net


async def _helper(action: str, desired: dict[str, Any]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "netconf", action, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(desired).encode()), HELPER_TIMEOUT)
    except TimeoutError:
        proc.kill()
        raise NetworkError(f"netconf {action} did not finish in {HELPER_TIMEOUT:.0f} s") from None
    try:
        out: dict[str, Any] = json.loads(stdout or b"{}")
    except json.JSONDecodeError:
        out = {"error": (stderr or stdout).decode(errors="replace")[-300:]}
    if proc.returncode != 0:
        raise NetworkError(f"network.interface {desired.get('interface')}: {out.get('error', 'netconf failed')}")
    return out
