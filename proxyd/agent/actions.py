"""Actions the manager asks of the proxy besides config: contribute to a backup, take restored files.

A backup asks for what only the proxy holds, its `certs/` files (the self-signed certificate and
key it made); the manager holds the settings and seals the archive with the admin's passphrase.
A restore hands those files back; they are written before any further config is applied, so the
config that switches the proxy on finds the restored certificate. Actions are done once each,
whichever loop (config poll or heartbeat) sees them first.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterable
from typing import Any

from proxyd.agent.client import ManagerClient, ManagerError, Unauthorized
from proxyd.backup import DERIVED_CERTS, Archive, BackupError, restore_into
from proxyd.statedir import StateDir

log = logging.getLogger("proxyd.agent")


def certs_files(state: StateDir) -> dict[str, str]:
    """certs/<file> -> base64, the part of a backup only the proxy holds."""
    out: dict[str, str] = {}
    if state.certs.is_dir():
        for f in sorted(state.certs.iterdir()):
            if f.is_file() and f.name not in DERIVED_CERTS and not f.name.endswith(".tmp"):
                out[f"certs/{f.name}"] = base64.b64encode(f.read_bytes()).decode()
    return out


def restored_files(data: dict[str, Any]) -> dict[str, bytes]:
    """Only certs/<file> members, decoded; anything else means the answer is not one we take."""
    raw = data.get("files")
    if not isinstance(raw, dict):
        raise BackupError("restore answer holds no files")
    files = {}
    for name, value in raw.items():
        parts = str(name).split("/")
        if len(parts) != 2 or parts[0] != "certs" or parts[1] in ("", ".", "..", *DERIVED_CERTS):
            raise BackupError(f"restore holds a file a proxy does not take: {name!r}")
        files[str(name)] = base64.b64decode(str(value), validate=True)
    return files


class ActionRunner:
    def __init__(self, state: StateDir, client: ManagerClient, enabled: Any):
        self.state = state
        self.client = client
        self.enabled = enabled  # () -> bool: is the running config switched on
        self._lock = asyncio.Lock()
        self._done: set[int] = set()

    async def run(self, actions: Iterable[tuple[str, int]]) -> None:
        """Do every action not done yet; a failure is reported to the manager and logged, never raised."""
        async with self._lock:
            for kind, pk in actions:
                if pk in self._done:
                    continue
                try:
                    if kind == "backup":
                        await self.client.upload_backup(pk, certs_files(self.state))
                    elif kind == "restore":
                        await self._restore(pk)
                    else:
                        continue  # a newer manager's action this agent does not know
                except (ManagerError, Unauthorized) as exc:  # a revoked key is the loops' to act on
                    log.warning("event=action_failed kind=%s action=%d error=%r", kind, pk, str(exc))
                    continue  # offered again with the next answer
                except (BackupError, OSError, ValueError) as exc:
                    log.error("event=action_failed kind=%s action=%d error=%r", kind, pk, str(exc))
                    try:
                        await self.client.finish_action(pk, f"{kind} failed on the proxy: {exc}")
                    except (ManagerError, Unauthorized):
                        continue
                self._done.add(pk)
                log.info("event=action_done kind=%s action=%d", kind, pk)

    async def _restore(self, pk: int) -> None:
        if self.enabled():
            raise BackupError("the proxy is on; restored files are taken only while it is off")
        data = await self.client.fetch_restore(pk)
        files = restored_files(data)
        archive = Archive(proxy=str(data.get("proxy", "")), created=0.0, files=files)
        written = restore_into(self.state, archive, expect_proxy=None, other_proxy_ok=True)
        log.info("event=restored files=%s", ",".join(written))
        await self.client.finish_action(pk)
