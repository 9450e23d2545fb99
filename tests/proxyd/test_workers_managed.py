"""Managed mode with `--workers 2`: the agent runs in the parent; a revision from the manager
reaches both workers, and a revision one worker cannot apply is rolled back in all of them and
reported to the manager as one failed apply."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from proxyd.admin import fetch_status
from proxyd.agent import state as agent_state
from proxyd.statedir import StateDir
from tests.proxyd.agent.fake_manager import FakeManager
from tests.proxyd.agent.managed import ManagedProxyd
from tests.proxyd.pebble import PEBBLE, start_pebble
from tests.support import base_config, free_port


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[FakeManager, ManagedProxyd]]:
    mgr = FakeManager().start()
    state = StateDir(tmp_path / "state").ensure()
    agent_state.save(state, agent_state.AgentState(mgr.url, 7, "edge", "key-1"))
    p = ManagedProxyd(state.root)
    yield mgr, p
    p.stop()
    mgr.stop()


def worker(p: ManagedProxyd, i: int) -> dict[str, Any]:
    code, body = fetch_status(p.state_dir / "workers" / f"w{i}" / "proxyd.sock")
    assert code == 200
    return dict(json.loads(body))


def test_a_revision_reaches_every_worker_and_a_refused_one_is_rolled_back_in_all(
        setup: tuple[FakeManager, ManagedProxyd]) -> None:
    mgr, p = setup
    mgr.publish(base_config(revision=1))
    p.start("--workers", "2")
    st = p.wait_status(lambda s: s["revision"] == 1 and s["manager"]["state"] == "online"
                       and [w["revision"] for w in s["workers"]] == [1, 1], timeout=60)
    assert st["worker_count"] == 2 and st["workers_why"] == "--workers 2"
    mgr.wait_heartbeat(lambda hb: hb["applied_revision"] == 1)

    mgr.publish(base_config(revision=2, proxy={"name": "edge2"}))
    p.wait_status(lambda s: s["revision"] == 2 and s["revision_wanted"] == 2, timeout=60)
    assert [worker(p, i)["proxy"] for i in (0, 1)] == ["edge2", "edge2"]
    mgr.wait_heartbeat(lambda hb: hb["applied_revision"] == 2 and hb["last_error"] is None)

    # revision 3 asks SIP (worker 0 only) for a UDP port that is taken: worker 0 refuses it,
    # worker 1 (no SIP) takes it; the parent puts revision 2 back in both
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.bind(("127.0.0.1", free_port(socket.SOCK_DGRAM)))
    try:
        mgr.publish(base_config(revision=3, proxy={"name": "edge3"},
                                services={"sip": {"mode": "udp", "udp_port": held.getsockname()[1]}}))
        hb = mgr.wait_heartbeat(lambda hb: hb["last_error"] is not None, timeout=40)
        assert hb["applied_revision"] == 2 and "worker 0" in hb["last_error"], hb
        st = p.wait_status(lambda s: s["revision"] == 2 and s["failed_at"] is not None)
        assert st["revision_wanted"] == 2 and st["apply_failures"] == 1
        assert [(w["revision"], w["proxy"]) for w in (worker(p, 0), worker(p, 1))] == [(2, "edge2"), (2, "edge2")]
        assert "event=config_rollback revision=3 back_to=2" in p.log.read_text()
    finally:
        held.close()
    _, metrics = fetch_status(p.state_dir / "proxyd.sock", "/metrics")
    assert b"\npforte_config_apply_failures_total 1.0\n" in metrics
    assert b'\npforte_manager_state{state="online"} 1.0\n' in metrics


class TxtFromManager:
    """A DNS server on loopback for pebble's VA that answers TXT queries with the records the fake
    manager was asked to set (as the manager's DNS account would publish them); anything else
    gets an empty answer. The validation itself is pebble's, real."""

    def __init__(self, mgr: FakeManager):
        self.mgr = mgr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
                query = dns.message.from_wire(data)
            except (TimeoutError, dns.exception.DNSException):
                continue
            answer = dns.message.make_response(query)
            q = query.question[0]
            if q.rdtype == dns.rdatatype.TXT:
                with self.mgr.cond:
                    values = sorted(self.mgr.txt.get(q.name.to_text().lower(), ()))
                if values:
                    answer.answer.append(dns.rrset.from_text_list(q.name, 1, "IN", "TXT",
                                                                  [f'"{v}"' for v in values]))
            self.sock.sendto(answer.to_wire(), peer)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.skipif(PEBBLE is None, reason="pebble is not installed")
def test_dns_01_with_workers_goes_through_the_parents_agent(
        setup: tuple[FakeManager, ManagedProxyd], tmp_path: Path) -> None:
    mgr, p = setup
    txt = TxtFromManager(mgr)
    ca = start_pebble(tmp_path / "pebble", dns_server=f"127.0.0.1:{txt.port}")
    try:
        fqdn = "edge.example.test"
        mgr.publish(base_config(revision=1, proxy={"fqdn": fqdn}, tls={
            "mode": "acme", "acme_directory": ca.directory, "acme_challenge": "dns-01", "acme_ca_bundle": ca.tls_ca}))
        p.start("--workers", "2")
        st = p.wait_status(lambda s: (s.get("acme") or {}).get("not_after"), timeout=90)
        assert st["acme"]["process"] == "parent" and st["acme"]["last_error"] is None, st["acme"]
        assert mgr.dns_changes == [(fqdn, True), (fqdn, False)]  # set for the order, removed after it
        p.wait_status(lambda s: len({worker(p, i)["certificates"][0]["fingerprint"] for i in (0, 1)}) == 1
                      and not any(worker(p, i)["certificates"][0]["self_signed"] for i in (0, 1)), timeout=30)
        assert [worker(p, i)["acme"] for i in (0, 1)] == [None, None]
    finally:
        ca.stop()
        txt.stop()
