"""Manager actions on the agent side: parsing the offer, what a backup uploads, what a restore may write.
(With a real manager and proxyd: tests/e2e/test_backup_restore_manager.py.)"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from proxyd.agent.actions import ActionRunner, certs_files, restored_files
from proxyd.agent.client import parse_actions
from proxyd.backup import BackupError
from proxyd.statedir import StateDir


def test_action_offers_are_parsed_and_unknown_items_skipped() -> None:
    assert parse_actions("backup/12, restore/13") == (("backup", 12), ("restore", 13))
    assert parse_actions("backup/x, /4, future/7,,") == (("future", 7),)
    assert parse_actions(None) == ()


def test_backup_uploads_only_what_the_proxy_made(tmp_path: Path) -> None:
    state = StateDir(tmp_path).ensure()
    for name in ("self-signed.pem", "self-signed.key", "current.pem", "current.key", "x.key.tmp"):
        (state.certs / name).write_text(name)
    (state.root / "agent.json").write_text("{}")
    assert set(certs_files(state)) == {"certs/self-signed.pem", "certs/self-signed.key"}


@pytest.mark.parametrize("name", ["../agent.json", "config/last-good.json", "certs/../x", "certs/", "certs/current.key",
                                  "/etc/passwd", "certs/a/b"])
def test_restore_takes_only_certs_files(name: str) -> None:
    with pytest.raises(BackupError, match="does not take"):
        restored_files({"files": {name: base64.b64encode(b"x").decode()}})


class Recorder:
    """Stands in for ManagerClient: records what the runner reports."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.finished: list[tuple[int, str | None]] = []

    async def fetch_restore(self, action: int) -> dict[str, Any]:
        return {"proxy": "dmz", "files": self.files}

    async def finish_action(self, action: int, error: str | None = None) -> None:
        self.finished.append((action, error))


def test_restore_is_refused_while_on_and_written_while_off(tmp_path: Path) -> None:
    state = StateDir(tmp_path).ensure()
    client = Recorder({"certs/self-signed.key": base64.b64encode(b"KEY").decode()})
    on = ActionRunner(state, client, lambda: True)  # type: ignore[arg-type]
    asyncio.run(on.run([("restore", 5)]))
    assert client.finished == [(5, "restore failed on the proxy: the proxy is on; restored files are taken only "
                                   "while it is off")]
    assert not (state.certs / "self-signed.key").exists()
    off = ActionRunner(state, client, lambda: False)  # type: ignore[arg-type]
    asyncio.run(off.run([("restore", 6), ("restore", 6)]))  # offered twice (config and heartbeat): done once
    assert client.finished[1:] == [(6, None)]
    assert (state.certs / "self-signed.key").read_bytes() == b"KEY"
    assert (state.certs / "self-signed.key").stat().st_mode & 0o777 == 0o600
