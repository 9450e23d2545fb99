"""The proxy's state directory: certs/, config/ (last good config), logs/, and the control socket."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from proxyd.config import ConfigError, ProxyConfig, loads
from proxyd.tls import write_private


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def control_socket(self) -> Path:
        return self.root / "proxyd.sock"

    @property
    def last_good_path(self) -> Path:
        return self.config_dir / "last-good.json"

    def ensure(self) -> StateDir:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for sub in (self.certs, self.config_dir, self.logs):
            sub.mkdir(mode=0o700, exist_ok=True)
        return self

    def save_last_good(self, cfg: ProxyConfig) -> None:
        # The config holds private keys and the provisioning key: owner-only.
        write_private(self.last_good_path, cfg.to_json())

    def load_last_good(self) -> ProxyConfig | None:
        try:
            return loads(self.last_good_path.read_bytes(), source=str(self.last_good_path))
        except FileNotFoundError:
            return None
        except ConfigError:
            return None

    def read_json(self, name: str) -> dict | None:
        try:
            data = json.loads((self.root / name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def write_json_private(self, name: str, data: dict) -> None:
        write_private(self.root / name, json.dumps(data, indent=2))
