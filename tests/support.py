"""Helpers shared by the tests: free ports, configs, peers, and a real `proxyd run` process."""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxyd.admin import fetch_status

IN_CI = os.environ.get("CI") == "true"


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0 and release)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_tcp_udp_port(host: str = "127.0.0.1") -> int:
    """A port that was free for TCP and for UDP a moment ago, for peers that listen on both
    (named; proxyd's SIP in mode udp). `free_port()` checks one protocol only, and the other may
    be held by anyone (a UDP client's ephemeral port, an outgoing TCP connection)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind((host, 0))
            port = int(t.getsockname()[1])
            try:
                u.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both TCP and UDP")


def free_udp_range(size: int, after: int | None = None) -> int:
    """Start of an even-aligned UDP port range of `size` ports that looked free: near a free
    ephemeral port, or (`after`) the first free one from that port on in steps of 500, below the
    ephemeral range (where load generators' own ports cannot land in it)."""
    candidates = ((free_port(socket.SOCK_DGRAM) & ~1) for _ in range(200)) if after is None else \
        range(after, 32_000 - size, 500)
    for base in candidates:
        socks = []
        try:
            for p in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {size} free UDP ports")


def require_peer(program: str) -> str:
    """Path of an external peer program; skip locally (fail in CI) when it is missing."""
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.path.exists(p)), None
    )
    if path is None:
        msg = f"{program} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def base_config(**overrides: Any) -> dict[str, Any]:
    """A valid config with every listener off; tests switch on what they exercise."""
    cfg: dict[str, Any] = {
        "version": 1,
        "revision": 1,
        "proxy": {"name": "test", "fqdn": "proxy.test", "enabled": True},
        "bind": "127.0.0.1",
        "tls": {"certificate_pem": None, "key_pem": None},
        "allow_sources": [],
        "instances": [],
        "applications": [],
        "services": {
            "web": {"mode": "off", "port": free_port()},
            "sip": {"mode": "off"},
            # below the ephemeral range: no port free_port() hands out (a SIP port) can fall inside
            "media": {"mode": "rtp", "port_min": 20000, "port_max": 20098},
            "provisioning": {"mode": "off"},
            "xmpp": {"enabled": False},
        },
        "network": {"mode": "auto"},
    }
    return merge(cfg, overrides)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@contextlib.contextmanager
def served_manager(env: dict[str, str], log_path: Path | str) -> Iterator[str]:
    """`pforte-manager serve` on a free loopback port with `env`; yields its URL once it answers,
    stops it by its PID afterwards. A manager that dies or does not answer fails with its log."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "manager.cli", "serve", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/accounts/login/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(Path(log_path).read_text()) from None
                time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen | None, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
    """Stop a process this test started, by its PID: signal, wait, kill if it does not go."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class ProxydProcess:
    """A real `python -m proxyd run --config` process with its own state dir."""

    def __init__(self, workdir: Path, config: dict[str, Any], extra_args: tuple[str, ...] = ()):
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.config_path = workdir / "proxy.json"
        self.config = config
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "proxyd.out"

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = config
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))
        os.replace(tmp, self.config_path)

    def start(self, wait: bool = True) -> ProxydProcess:
        self.write_config(self.config)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxyd", "run", "--config", str(self.config_path),
             "--state-dir", str(self.state_dir), "--admin", "off", "--drain-timeout", "2",
             *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_revision(self.config["revision"])
        return self

    def status(self) -> dict[str, Any]:
        code, body = fetch_status(self.state_dir / "proxyd.sock")
        assert code == 200
        return json.loads(body)

    def wait_revision(self, revision: int, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"proxyd exited with {self.proc.returncode}:\n{self.output()}")
            try:
                last = self.status()
                if last.get("revision") == revision:
                    return dict(last)
            except (OSError, ValueError, AssertionError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"revision {revision} not applied in {timeout}s; status={last}\n{self.output()}")

    def reload(self, config: dict[str, Any], *, wait: bool = True) -> None:
        """Write a new config and SIGHUP; wait until its revision is applied."""
        self.write_config(config)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        if wait:
            self.wait_revision(config["revision"])

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        code = stop_process(self.proc, timeout)
        self._log.close()
        return code


class NoPostgres(RuntimeError):
    """The PostgreSQL server binaries are not installed (Debian: postgresql)."""


@contextlib.contextmanager
def throwaway_postgres(max_connections: int | None = None) -> Iterator[str]:
    """A PostgreSQL of its own on a loopback port, in a temporary directory (fsync off: tests and
    benches measure the manager, not the disk) -> the URL of its empty database `pforte`. The server
    refuses root, so as root it runs as the `postgres` system user (setpriv execs: the PID held is
    the server's own). Stopped and removed on every way out."""
    import psycopg

    def binary(name: str) -> str:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        if not found:
            raise NoPostgres("PostgreSQL server is not installed (.ci/run installs postgresql)")
        return found[-1]

    initdb, postgres = binary("initdb"), binary("postgres")
    root = Path(tempfile.mkdtemp(prefix="pforte-pg-"))
    data = root / "data"
    data.mkdir()
    drop: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
        drop = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--"]
    server = None
    try:
        subprocess.run([*drop, initdb, "-D", str(data), "-A", "trust", "-U", "pforte", "--no-sync"], check=True,
                       capture_output=True)
        port = free_port()
        extra = ["-c", f"max_connections={max_connections}"] if max_connections else []
        server = subprocess.Popen([*drop, postgres, "-D", str(data), "-k", str(root), "-h", "127.0.0.1",
                                   "-p", str(port), "-c", "fsync=off", *extra],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(f"postgresql://pforte@127.0.0.1:{port}/postgres", autocommit=True) as c:
                    c.execute("CREATE DATABASE pforte")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield f"postgres://pforte@127.0.0.1:{port}/pforte"
    finally:
        stop_process(server)
        shutil.rmtree(root, ignore_errors=True)
