"""Render and place the systemd unit for `proxyd install` / `proxyd uninstall`."""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_UNIT_NAME = "pforte-proxyd.service"


@dataclass(frozen=True)
class UnitSpec:
    state_dir: Path
    proxyd: list[str]  # how to start proxyd (console script or python -m proxyd)
    net_admin: bool = False  # netconf (network mode manual) manages addresses and routes
    user: str | None = None
    manager_url: str | None = None


def proxyd_command() -> list[str]:
    exe = shutil.which("proxyd")
    return [exe] if exe else [sys.executable, "-m", "proxyd"]


def render(spec: UnitSpec) -> str:
    env = Environment(loader=PackageLoader("proxyd.agent", ""), undefined=StrictUndefined,
                      keep_trailing_newline=True, autoescape=False)  # noqa: S701 - not HTML
    caps = "CAP_NET_BIND_SERVICE" + (" CAP_NET_ADMIN" if spec.net_admin else "")
    exec_start = shlex.join([*spec.proxyd, "run", "--state-dir", str(spec.state_dir)])
    return env.get_template("proxyd.service.j2").render(
        exec_start=exec_start, state_dir=str(spec.state_dir), capabilities=caps,
        net_admin=spec.net_admin, user=spec.user, manager_url=spec.manager_url,
    )
