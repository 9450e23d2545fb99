"""Manager at scale: N simulated proxies doing what proxyd's agent does, one global change, how long until all have it.

Each simulated proxy is proxyd's agent loop (proxyd/agent/runner.py) over two keep-alive
HTTP/1.1 connections: the config long-poll (`wait=55`, `If-None-Match` with its revision) and
the heartbeat (at start, every 60 s, and right after each new config, with the agent's jitter),
both with the agent's 10 s timeout on a heartbeat. The proxies are created through the ORM and
start spread over RAMP seconds; after a steady phase an admin logs in and saves a new instance
exposed on every proxy through the manager's own form, and the bench measures when each agent
got the revision carrying it.

Prints one row: proxies, DB, workers, change seen p50/p95/max (s) and how many never saw it,
heartbeats failed of sent, polls failed, manager CPU steady / after the change (% of one core,
all processes), manager peak RSS.

Environment: BENCH_PROXIES (default 3000; QUICK=1: 1000), BENCH_DB=sqlite|postgres (postgres
starts a throw-away server on loopback), BENCH_WORKERS (manager processes, PostgreSQL only),
BENCH_STEADY seconds (default 60), BENCH_AFTER seconds (default 30), BENCH_RAMP seconds,
BENCH_PROFILE=file (cProfile of the manager's main thread, one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import multiprocessing
import os
import random
import re
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.support import NoPostgres, free_port, stop_process, throwaway_postgres  # noqa: E402

QUICK = os.environ.get("QUICK") == "1"
PROXIES = int(os.environ.get("BENCH_PROXIES", "1000" if QUICK else "3000"))
DB = os.environ.get("BENCH_DB", "sqlite")
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
STEADY = float(os.environ.get("BENCH_STEADY", "60"))
AFTER = float(os.environ.get("BENCH_AFTER", "30"))
RAMP = float(os.environ.get("BENCH_RAMP", str(max(10.0, PROXIES / 100))))
POLL_WAIT = 55
HEARTBEAT_EVERY = 60.0
TIMEOUT = 10.0  # proxyd.agent.client.CONNECT_TIMEOUT: a heartbeat's whole budget
PROFILE = os.environ.get("BENCH_PROFILE", "")
ADMIN = ("bench-admin", "a-long-bench-password")
KEEPALIVE_EXPIRY = 5.0  # httpx's default: the agent's heartbeat connection is closed after 5 s idle
AGENTS_PER_PROCESS = 2500  # 5,000 sockets per load-generator process, well under a 20,000 fd limit


def raise_fd_limit(need: int, quiet: bool = False) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, need)
    if want > hard:
        with contextlib.suppress(ValueError, OSError):  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            soft, hard = want, want
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    if quiet and soft >= need:
        return
    print(f"file descriptors: {PROXIES} agents x 2 sockets = {2 * PROXIES}, in the load generator's processes "
          f"({AGENTS_PER_PROCESS:,} agents each at most) and as many in the manager's {WORKERS} process(es) "
          f"(+ ~100 each); RLIMIT_NOFILE now {soft} (the manager inherits it)")
    if soft < need:
        raise SystemExit(f"RLIMIT_NOFILE {soft} < {need}: raise the hard limit (ulimit -Hn) or BENCH_WORKERS")


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    try:
        with throwaway_postgres(max_connections=300) as url:
            yield url
    except NoPostgres as exc:
        raise SystemExit(f"BENCH_DB=postgres: {exc}") from exc


def make_proxies(data: str) -> list[str]:
    """N proxies with API keys, through the ORM in this process (each gets its first revision)."""
    os.environ["PFORTE_MANAGER_DATA"] = data
    os.environ["DJANGO_SETTINGS_MODULE"] = "manager.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from manager.proxies.compiler import new_provisioning_key, publish_many
    from manager.proxies.models import Proxy

    get_user_model().objects.create_superuser(ADMIN[0], "bench@example.invalid", ADMIN[1])
    # in bulk (one by one, 10,000 took minutes): the rows, their first revisions, their API keys
    made = [Proxy(name=f"p{i}", fqdn=f"p{i}.example.com") for i in range(PROXIES)]
    for p in made:
        p.provisioning_key = new_provisioning_key()
    made = Proxy.objects.bulk_create(made, batch_size=500)
    publish_many(made)
    keys = []
    for p in made:
        secret = secrets.token_urlsafe(32)
        p.api_key_hash = hashlib.sha256(secret.encode()).hexdigest()
        p.api_key_prefix = f"{p.pk}.{secret[:6]}"
        keys.append(f"{p.pk}.{secret}")
    Proxy.objects.bulk_update(made, ["api_key_hash", "api_key_prefix"], batch_size=500)
    from django.db import connections

    connections.close_all()
    return keys


def proc_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in proc_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Peak RSS (VmHWM) summed over the manager's processes."""
    total = 0
    for p in proc_tree(pid):
        with contextlib.suppress(OSError):
            m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
            total += int(m[1]) * 1024 if m else 0
    return total


class Http:
    """One keep-alive HTTP/1.1 connection, as light as a client can be: the load generator must not
    be what limits the figures (httpx with 2,000 connections was)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None
        self.used = 0.0

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
        self.r = self.w = None

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.r is not None and (self.r.at_eof() or time.monotonic() - self.used > KEEPALIVE_EXPIRY):
            self.close()  # idle too long (or closed by the server): a new one, as httpx's pool does
        if self.w is None:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.r is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.w.write(head.encode() + body)
        raw = await self.r.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        data = b""
        if hdrs.get("transfer-encoding") == "chunked":
            while size := int((await self.r.readline()).split(b";")[0], 16):
                data += (await self.r.readexactly(size + 2))[:-2]
            await self.r.readline()
        elif status not in (204, 304):
            data = await self.r.readexactly(int(hdrs.get("content-length", "0")))
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        self.used = time.monotonic()
        return status, hdrs, data


class Stats:
    def __init__(self) -> None:
        self.beats = self.beats_failed = self.polls = self.polls_failed = 0
        self.cpu = 0.0  # the load generator's CPU seconds
        self.seen: list[float] = []  # seconds from the change to each agent's new revision
        self.up = 0  # agents that got their first config
        self.why: dict[str, int] = {}  # failed heartbeats by reason


async def agent(port: int, key: str, start_in: float, end: float, st: Stats, first_rev: dict[str, int],
                changed: Any) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    poll, beat = Http(port), Http(port)
    due = asyncio.Event()
    revision: int | None = None
    await asyncio.sleep(start_in)

    async def heartbeats() -> None:
        while time.monotonic() < end:
            due.clear()
            body = json.dumps({"applied_revision": revision, "version": "bench", "uptime": 1.0,
                               "services": {"web": {"state": "running"}}, "network": None,
                               "last_error": None}).encode()
            st.beats += 1
            try:
                status, _, _ = await asyncio.wait_for(beat.request(
                    "POST", "/api/v1/proxy/heartbeat", {**auth, "Content-Type": "application/json"}, body), TIMEOUT)
                if status != 200:
                    st.beats_failed += 1
                    st.why[f"HTTP {status}"] = st.why.get(f"HTTP {status}", 0) + 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                st.beats_failed += 1
                st.why[type(exc).__name__] = st.why.get(type(exc).__name__, 0) + 1
                beat.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(due.wait(), HEARTBEAT_EVERY)

    hb = asyncio.create_task(heartbeats())
    try:
        while time.monotonic() < end:
            headers = dict(auth)
            if revision is not None:
                headers["If-None-Match"] = f'"{revision}"'
            try:
                status, hdrs, _ = await asyncio.wait_for(
                    poll.request("GET", f"/api/v1/proxy/config?wait={POLL_WAIT}", headers), POLL_WAIT + TIMEOUT)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                st.polls_failed += 1
                poll.close()
                await asyncio.sleep(1)
                continue
            st.polls += 1
            if status == 304:
                continue
            if status != 200:
                st.polls_failed += 1
                await asyncio.sleep(1)
                continue
            new = int(hdrs["etag"].strip('"'))
            if revision is None:
                st.up += 1
                with changed.get_lock():
                    changed.up += 1
                first_rev[key] = new
            elif changed.at and new > first_rev[key]:
                st.seen.append(time.monotonic() - changed.at)
            revision = new
            # the agent heartbeats right after applying a config, after its jitter (AgentOptions)
            asyncio.get_running_loop().call_later(random.uniform(0, 3.0), due.set)
    finally:
        hb.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hb
        poll.close()
        beat.close()


def admin(url: str) -> httpx.Client:
    """An admin logged in (before the change is timed: a password hash is no part of a publish)."""
    c = httpx.Client(base_url=url, timeout=120)
    c.get("/accounts/login/")
    r = c.post("/accounts/login/", data={"username": ADMIN[0], "password": ADMIN[1],
                                         "csrfmiddlewaretoken": c.cookies["csrftoken"]})
    assert r.status_code == 302, r.status_code
    c.get("/instances/new/")
    return c


def global_change(c: httpx.Client) -> None:
    """What an admin does: save a new instance that every proxy exposes."""
    r = c.post("/instances/new/", data={
        "csrfmiddlewaretoken": c.cookies["csrftoken"], "name": "global", "web": "http://192.0.2.10:8080",
        "web_prefix_mode": "rewrite", "sip_transport": "udp", "sip_port": "5060"})
    assert r.status_code == 302, (r.status_code, r.text[:2000])


def generator(port: int, keys: list[str], starts: list[float], end: float, changed: Any, out: Any) -> None:
    """One load-generator process: its share of the agents (each agent holds two sockets)."""
    raise_fd_limit(2 * len(keys) + 100, quiet=True)
    st = Stats()
    first_rev: dict[str, int] = {}

    async def all_agents() -> None:
        await asyncio.gather(*(agent(port, k, t, end, st, first_rev, changed)
                               for k, t in zip(keys, starts, strict=True)), return_exceptions=True)

    asyncio.run(all_agents())
    st.cpu = time.process_time()
    out.put(st)


def simulate(url: str, port: int, keys: list[str], mgr: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    changed = ctx.Value(Change)  # the moment of the change and the agents up, shared by the generators
    t0 = time.monotonic()
    settle = RAMP + 15
    end = t0 + settle + STEADY + AFTER
    out = ctx.Queue()
    starts = [t0 + random.uniform(0, RAMP) for _ in keys]
    n = max(1, -(-len(keys) // AGENTS_PER_PROCESS))
    gens = [ctx.Process(target=generator, args=(port, keys[i::n], [t - time.monotonic() for t in starts[i::n]],
                                                end, changed, out)) for i in range(n)]
    for g in gens:
        g.start()
    time.sleep(max(0.0, t0 + settle - time.monotonic()))
    up_before = changed.up
    c0, w0 = cpu_seconds(mgr), time.monotonic()
    time.sleep(STEADY)
    c1, w1 = cpu_seconds(mgr), time.monotonic()
    browser = admin(url)
    at = time.monotonic()
    changed.at = at
    global_change(browser)
    browser.close()
    saved = time.monotonic() - at
    time.sleep(max(0.0, end - time.monotonic()))
    c2, w2 = cpu_seconds(mgr), time.monotonic()
    parts = [out.get(timeout=120) for _ in gens]
    for g in gens:
        g.join(30)
    st = Stats()
    for part in parts:
        st.beats += part.beats
        st.beats_failed += part.beats_failed
        st.polls += part.polls
        st.polls_failed += part.polls_failed
        st.seen += part.seen
        st.cpu += part.cpu
        for k, v in part.why.items():
            st.why[k] = st.why.get(k, 0) + v
    return {"steady": (c1 - c0) / (w1 - w0), "after": (c2 - c1) / (w2 - w1), "up": up_before, "saved": saved,
            "stats": st, "generators": n}


class Change(ctypes.Structure):
    _fields_ = [("at", ctypes.c_double), ("up", ctypes.c_int)]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def run(database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as data:
        if database_url:
            os.environ["DATABASE_URL"] = database_url
        t0 = time.monotonic()
        keys = make_proxies(data)
        print(f"created {PROXIES} proxies in {time.monotonic() - t0:.1f} s", flush=True)
        port = free_port()
        env = {**os.environ, "PFORTE_MANAGER_DATA": data}
        # BENCH_PROFILE=file: the manager (its event loop's thread; one process) under cProfile
        profile = ["-m", "cProfile", "-o", PROFILE] if PROFILE else []
        cmd = [sys.executable, *profile, "-m", "manager.cli", "serve", "--port", str(port)]
        if WORKERS > 1:
            cmd += ["--workers", str(WORKERS)]
        log = open(Path(data) / "serve.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(url + "/accounts/login/", timeout=2)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            res = simulate(url, port, keys, proc.pid)
            rss = rss_bytes(proc.pid)
        finally:
            stop_process(proc)
            log.close()
        st: Stats = res["stats"]  # type: ignore[assignment]
        served = (Path(data) / "serve.log").read_text(errors="replace").splitlines()
        errors = [line for line in served if "Traceback" in line or "ERROR" in line]
        for line in served:
            if "event=published" in line or "event=publish_committed" in line:
                print("manager:", line.split(" INFO ", 1)[-1])
    never = PROXIES - len(st.seen)
    print(f"agents up before the steady phase: {int(res['up'])} of {PROXIES}; the change was saved in "
          f"{res['saved']:.2f} s; failed heartbeats: {st.why or 'none'}; load generator CPU "
          f"{st.cpu:.0f} s in {res['generators']} processes; "
          f"manager log errors: {len(errors)}")
    print("| proxies | DB | workers | change seen p50 / p95 / max | never | heartbeats failed | polls failed "
          "| manager CPU steady / after | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {PROXIES:,} | {'PostgreSQL' if database_url else 'SQLite'} | {WORKERS} | "
          f"{pct(st.seen, 0.5):.2f} / {pct(st.seen, 0.95):.2f} / {pct(st.seen, 1.0):.2f} s | {never} | "
          f"{st.beats_failed} of {st.beats} | {st.polls_failed} of {st.polls} | "
          f"{res['steady'] * 100:.0f} % / {res['after'] * 100:.0f} % | {rss / 2**20:.0f} MiB |", flush=True)


def main() -> None:
    common.guard()
    # each manager process is planned for its share and half again (the kernel's spread is uneven)
    raise_fd_limit(max(3 * PROXIES // WORKERS, 2 * PROXIES // WORKERS + 200))
    if DB == "postgres":
        with postgres() as url:
            run(url)
    else:
        run(None)


if __name__ == "__main__":
    main()
