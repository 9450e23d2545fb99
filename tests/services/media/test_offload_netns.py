"""Issue 23 §3: media forwarded by the kernel (nftables), with real packets across veth pairs
between three network namespaces this test makes (phone 10.1.0.2 / attacker 10.1.0.3, relay
10.1.0.1 + 10.2.0.1 with forwarding on, PBX 10.2.0.2). The driver is `netns_offload.py`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[3]
SETUP = """
ip link add a0 netns {ph} type veth peer name a1 netns {r}
ip link add b0 netns {pbx} type veth peer name b1 netns {r}
ip -n {ph} addr add 10.1.0.2/24 dev a0; ip -n {ph} addr add 10.1.0.3/24 dev a0
ip -n {r} addr add 10.1.0.1/24 dev a1; ip -n {r} addr add 10.2.0.1/24 dev b1
ip -n {pbx} addr add 10.2.0.2/24 dev b0
for n in {ph} {r} {pbx}; do ip -n $n link set lo up; done
ip -n {ph} link set a0 up; ip -n {r} link set a1 up; ip -n {r} link set b1 up; ip -n {pbx} link set b0 up
ip -n {ph} route add default via 10.1.0.1; ip -n {pbx} route add default via 10.2.0.1
ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1
"""
_RUN: list[Any] = []


@pytest.fixture(scope="module")
def names(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("needs root, iproute2 and nftables for network namespaces")
    tag = f"pfo{os.getpid()}"
    ns = {"ph": f"{tag}ph", "r": f"{tag}r", "pbx": f"{tag}pbx"}
    try:
        for n in ns.values():
            subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(["sh", "-ec", SETUP.format(**ns)], check=True)
        yield ns, tmp_path_factory.mktemp("offload")
    finally:
        for n in ns.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@pytest.fixture(scope="module")
def seen(names: Any) -> dict[str, Any]:
    ns, tmp = names
    if not _RUN:
        _RUN.append(subprocess.run(["ip", "netns", "exec", ns["r"], sys.executable, "-m",
                                    "tests.services.media.netns_offload", ns["ph"], ns["pbx"], str(tmp)],
                                   cwd=ROOT, capture_output=True, text=True, timeout=120))
    res = _RUN[0]
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def test_a_latched_call_is_forwarded_by_the_kernel_both_ways(seen: dict[str, Any]) -> None:
    assert seen["mode"] == {"mode": "kernel", "reason": None, "directions": 0}
    assert seen["first"]["pbx_got"] >= 4 and seen["first"]["phone_got"] >= 4  # userspace, while latching
    assert seen["offloaded"]
    run = seen["kernel_run"]
    assert run["pbx_got"] == 400 and run["phone_got"] == 400
    # from the relay's own address and port facing each side, as userspace sends
    assert run["pbx_from"] == [seen["relay_ports"][1]] and run["phone_from"] == [seen["relay_ports"][0]]
    assert seen["userspace_forwarded_during"] == 0 and seen["kernel_packets"] >= 800


def test_a_third_party_gets_nothing_forwarded(seen: dict[str, Any]) -> None:
    assert seen["attacker_reached_pbx"] == 0


def test_delete_and_timeout_remove_the_rules(seen: dict[str, Any]) -> None:
    assert seen["elements_after_delete"] == 0
    assert seen["after_delete"]["pbx_got"] == 0 and seen["after_delete"]["phone_got"] == 0
    assert seen["timeout_offloaded"] and seen["alive_on_kernel_counts"]  # kernel counts are life
    assert seen["timed_out"] and seen["elements_after_timeout"] == 0
    assert seen["table_after_stop"] == -1  # stop removes the table


def test_a_killed_daemon_s_rules_are_flushed_at_the_next_start(seen: dict[str, Any]) -> None:
    assert seen["orphan_after_kill"]["pbx_got"] > 0  # what the flush at start is for
    assert seen["elements_after_restart"] == 0
    assert seen["after_restart"]["pbx_got"] == 0 and seen["after_restart"]["phone_got"] == 0


def test_configured_off_stays_in_userspace_and_says_so(seen: dict[str, Any]) -> None:
    assert seen["configured_off"] == {"mode": "userspace", "reason": "services.media.kernel_offload is false",
                                      "directions": 0}


def test_without_cap_net_admin_media_stays_in_userspace(names: Any) -> None:
    ns, tmp = names
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    code = ("import asyncio, sys; from pathlib import Path; sys.path.insert(0, '.');"
            "from tests.services.media.netns_offload import service\n"
            "async def go():\n svc, v = service(Path(sys.argv[1])); await svc.start(v); print(svc.stats()['offload']);"
            " await svc.stop(1)\nasyncio.run(go())")
    res = subprocess.run(["ip", "netns", "exec", ns["r"], "setpriv", "--inh-caps=-net_admin",
                          "--bounding-set=-net_admin", "--", sys.executable, "-c", code, str(tmp / "nocap")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "'mode': 'userspace'" in res.stdout and "CAP_NET_ADMIN" in res.stdout
