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
# One descriptor per client connection, backend connection and media socket: a full media range
# alone is 64k ports. The kernel's default fs.nr_open: higher would make the service fail to start.
NOFILE = 1048576
HOMES = (Path("/home"), Path("/root"), Path("/run/user"))


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


def documentation() -> list[str]:
    """The operations guide as installed with the package (setup.cfg data_files), else in the
    source checkout proxyd runs from; the installed place when neither exists yet."""
    installed = Path(sys.prefix) / "share" / "doc" / "pforte" / "operations.md"
    checkout = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
    found = next((p for p in (installed, checkout) if p.is_file()), installed)
    return [found.as_uri()]


def _under_home(paths: list[Path]) -> bool:
    return any(p == h or h in p.parents for p in paths for h in HOMES)


def render(spec: UnitSpec) -> str:
    env = Environment(loader=PackageLoader("proxyd.agent", ""), undefined=StrictUndefined,
                      keep_trailing_newline=True, autoescape=False)  # noqa: S701 - not HTML
    caps = "CAP_NET_BIND_SERVICE" + (" CAP_NET_ADMIN" if spec.net_admin else "")
    exec_start = shlex.join([*spec.proxyd, "run", "--state-dir", str(spec.state_dir)])
    # Home directories are hidden unless proxyd itself, its Python or the state dir live there
    # (a venv in a home, say); then they are read-only and only the state dir is writable.
    needed = [spec.state_dir, *(Path(a) for a in spec.proxyd[:1]), Path(sys.prefix), Path(sys.base_prefix)]
    if _under_home([p.resolve() if p.is_absolute() else p for p in needed]):
        protect_home, why = "read-only", "read-only, not yes: proxyd, its Python or the state dir is under a home"
    else:
        protect_home, why = "yes", "nothing proxyd needs is under /home, /root or /run/user"
    return env.get_template("proxyd.service.j2").render(
        exec_start=exec_start, state_dir=str(spec.state_dir), capabilities=caps,
        net_admin=spec.net_admin, user=spec.user, manager_url=spec.manager_url,
        documentation=documentation(), protect_home=protect_home, protect_home_why=why, nofile=NOFILE,
    )
