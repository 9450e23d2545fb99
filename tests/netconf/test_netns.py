"""netconf against the real kernel, inside network namespaces this test creates and deletes.

A "proxy host" namespace with two veth NICs, each wired to its own gateway namespace. The
kernel's own route lookup (`ip route get`, no packet is sent) shows that replies from each proxy
address leave through that proxy's gateway.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import IN_CI

pytestmark = pytest.mark.netns
OUTSIDE = "198.51.100.1"  # TEST-NET-2: no route out of these namespaces exists


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture
def host() -> Iterator[str]:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("netns tests need root in CI")
        pytest.skip("netns tests need root")
    tag = secrets.token_hex(3)
    ns, gws = f"pf-host-{tag}", [f"pf-gw{i}-{tag}" for i in (1, 2)]
    for n in (ns, *gws):
        sh("ip", "netns", "add", n)
    try:
        for i, gw in enumerate(gws, 1):
            sh("ip", "-n", ns, "link", "add", f"eth{i}", "type", "veth", "peer", "name", "up0", "netns", gw)
            sh("ip", "-n", gw, "addr", "add", f"10.{i}.0.254/24", "dev", "up0")
            sh("ip", "-n", gw, "link", "set", "up0", "up")
        yield ns
    finally:
        for n in (ns, *gws):
            subprocess.run(["ip", "netns", "del", n], timeout=30)


def netconf(action: str, ns: str, desired: dict) -> tuple[int, dict]:
    res = subprocess.run([sys.executable, "-m", "netconf", action, "--netns", ns], input=json.dumps(desired),
                         capture_output=True, text=True, timeout=60)
    return res.returncode, json.loads(res.stdout)


def dump(ns: str) -> tuple[str, str, str]:
    return (sh("ip", "-n", ns, "-4", "addr"), sh("ip", "-n", ns, "-4", "route", "show", "table", "all"),
            sh("ip", "-n", ns, "-4", "rule"))


P1 = {"interface": "eth1", "address": "10.1.0.10/24", "gateway": "10.1.0.254", "table": 101}
P2 = {"interface": "eth2", "address": "10.2.0.10/24", "gateway": "10.2.0.254", "table": 102}


def test_two_proxies_own_tables_idempotent_and_clean_teardown(host: str) -> None:
    before = dump(host)
    for d in (P1, P2):
        code, out = netconf("apply", host, d)
        assert code == 0, out
        assert out["applied"][0] == "link_up"
    for d in (P1, P2):
        assert netconf("plan", host, d) == (0, {"plan": []})  # apply twice = no netlink change
        assert netconf("apply", host, d) == (0, {"applied": []})
    via1 = sh("ip", "-n", host, "route", "get", OUTSIDE, "from", "10.1.0.10")
    via2 = sh("ip", "-n", host, "route", "get", OUTSIDE, "from", "10.2.0.10")
    assert "via 10.1.0.254 dev eth1 table 101" in via1
    assert "via 10.2.0.254 dev eth2 table 102" in via2
    for d in (P2, P1):
        code, out = netconf("teardown", host, d)
        assert code == 0, out
    after = dump(host)
    assert after[1:] == before[1:]  # routes and rules exactly as before
    assert "10.1.0.10" not in after[0] and "10.2.0.10" not in after[0]


def test_wrong_interface_is_a_clear_error_with_no_partial_state(host: str) -> None:
    before = dump(host)
    code, out = netconf("apply", host, {**P1, "interface": "eth9"})
    assert code == 1 and out["error"] == "interface eth9 does not exist"
    assert dump(host) == before


def test_proxyd_applies_manual_network_before_binding_and_reports_it(host: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A real proxyd inside the host namespace binds its web listener to its own NIC's address."""
    from tests.support import base_config

    cfg = base_config(bind="0.0.0.0", network={"mode": "manual", **P1},
                      services={"web": {"mode": "web_and_rest", "port": 8443}})
    path = tmp_path / "p.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-m", "proxyd", "run", "--config", str(path),
                             "--state-dir", str(tmp_path / "s"), "--admin", "off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        import time

        from proxyd.admin import fetch_status

        deadline, st = time.monotonic() + 20, None
        while time.monotonic() < deadline:
            try:
                st = json.loads(fetch_status(tmp_path / "s" / "proxyd.sock")[1])
                if st.get("revision") == 1:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert st and st["revision"] == 1, st
        assert st["network"]["mode"] == "manual" and st["network"]["interface"] == "eth1"
        assert st["services"]["http"]["listeners"] == ["https://10.1.0.10:8443"]
        assert "via 10.1.0.254 dev eth1 table 101" in sh("ip", "-n", host, "route", "get", OUTSIDE, "from", "10.1.0.10")
    finally:
        proc.terminate()
        proc.wait(15)


RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.1", 9999)); s.settimeout(10)
print("ready", flush=True)
data, src = s.recvfrom(100)
print(data.decode(), src[0], flush=True)
"""
SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0)); s.sendto(sys.argv[1].encode(), ("198.51.100.1", 9999))
"""


def test_udp_from_each_proxy_address_leaves_through_its_own_gateway(host: str) -> None:
    for d in (P1, P2):
        assert netconf("apply", host, d)[0] == 0
    gws = sh("ip", "netns", "list").split()
    for i, addr in ((1, "10.1.0.10"), (2, "10.2.0.10")):
        gw = next(n for n in gws if n.startswith(f"pf-gw{i}-") and n.endswith(host[-6:]))
        sh("ip", "-n", gw, "addr", "add", f"{OUTSIDE}/32", "dev", "lo")
        sh("ip", "-n", gw, "link", "set", "lo", "up")
        with subprocess.Popen(["ip", "netns", "exec", gw, sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE,
                              text=True) as rx:
            assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
            subprocess.run(["ip", "netns", "exec", host, sys.executable, "-c", SENDER, addr], check=True, timeout=30)
            assert rx.stdout.readline().split() == [addr, addr]  # arrived at this proxy's own gateway
            rx.wait(15)
