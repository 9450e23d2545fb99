"""ProxyConfig v1: the full example of the original design parses, round-trips, and every error names its field."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.config import ConfigError, ProxyConfig, loads, parse_config
from tests.support import base_config

KEY = base64.b64encode(bytes(range(32))).decode()

DESIGN_EXAMPLE = {
    "version": 1,
    "revision": 7,
    "proxy": {"name": "dmz", "fqdn": "mobydick.example.com", "enabled": True},
    "bind": "0.0.0.0",
    "tls": {"certificate_pem": None, "key_pem": None},
    "allow_sources": [],
    "instances": [
        {"name": "mycompany", "web": "http://10.0.0.5:8080", "sip": "udp:10.0.0.5:5060",
         "sip_domains": ["mycompany.example.com"], "xmpp": "10.0.0.5:5222",
         "xmpp_domains": ["mycompany.example.com"], "provisioning": "http://10.0.0.5:8080/prov/{mac}"}
    ],
    "applications": [
        {"name": "procurat", "port": 8443, "tls": True, "public_prefix": "/api/",
         "upstream": "https://p5.school.local:8443/procurat/api/v1/", "verify_upstream": True}
    ],
    "services": {
        "web": {"mode": "web_and_rest", "port": 443, "redirect_url": "https://www.example.com/"},
        "sip": {"mode": "tls", "udp_port": 5060, "tls_port": 5061},
        "media": {"mode": "srtp", "port_min": 30000, "port_max": 35000},
        "provisioning": {"mode": "encrypted", "https_port": 8884, "http_port": 8880, "key": KEY},
        "xmpp": {"enabled": True, "port": 5222, "direct_tls_port": 5223},
    },
    "network": {"mode": "auto"},
}


def problems(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


def test_design_example_parses_with_typed_fields() -> None:
    cfg = parse_config(DESIGN_EXAMPLE)
    assert cfg.revision == 7
    inst = cfg.instance("mycompany")
    assert inst is not None and inst.sip is not None
    assert (inst.sip.transport, inst.sip.host, inst.sip.port) == ("udp", "10.0.0.5", 5060)
    assert inst.xmpp is not None and inst.xmpp.port == 5222
    assert cfg.services.media.port_max == 35000
    assert cfg.applications[0].public_prefix == "/api/"


def test_round_trip_through_json_is_identity() -> None:
    cfg = parse_config(DESIGN_EXAMPLE)
    again = loads(cfg.to_json())
    assert again == cfg
    assert json.loads(cfg.to_json())["instances"][0]["sip"] == "udp:10.0.0.5:5060"


def test_defaults_are_the_seed_ports() -> None:
    cfg = parse_config({"version": 1, "proxy": {"name": "p", "fqdn": "p.example"},
                        "services": {"provisioning": {"key": KEY}}})
    s = cfg.services
    assert (s.web.port, s.sip.udp_port, s.sip.tls_port) == (443, 5060, 5061)
    assert (s.media.port_min, s.media.port_max, s.media.mode) == (30000, 35000, "srtp")
    assert (s.provisioning.https_port, s.provisioning.http_port, s.provisioning.mode) == (8884, 8880, "encrypted")
    assert (s.xmpp.port, s.xmpp.direct_tls_port, s.sip.mode, s.web.mode) == (5222, 5223, "tls", "web_and_rest")


def test_config_is_immutable() -> None:
    cfg = parse_config(DESIGN_EXAMPLE)
    with pytest.raises(AttributeError):
        cfg.revision = 8  # type: ignore[misc]


def test_all_problems_reported_at_once_with_field_paths() -> None:
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    raw["services"]["web"]["mode"] = "everything"
    raw["services"]["sip"]["tls_port"] = 70000
    raw["instances"].append(dict(raw["instances"][0]))
    raw["surprise"] = True
    raw["services"]["xmpp"]["port"] = "5222"
    found = problems(raw)
    assert "services.web.mode: expected one of web_and_rest, rest_only, off" in found
    assert "services.sip.tls_port: expected 1..65535, got 70000" in found
    assert "surprise: unknown field" in found
    assert "services.xmpp.port: expected an integer" in found
    assert len(found) == 4  # the duplicate instance is found once the field errors are fixed
    raw["services"]["web"]["mode"] = "off"
    raw["services"]["sip"]["tls_port"] = 5061
    raw["services"]["xmpp"]["port"] = 5222
    del raw["surprise"]
    assert any(p.startswith("instances[1].name: duplicate instance name 'mycompany'") for p in problems(raw))


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("instances", 0, "name"), "My Company", "instances[0].name: expected a lowercase slug"),
        (("instances", 0, "sip"), "sctp:10.0.0.5:5060", "instances[0].sip: expected (udp|tcp|tls):host:port"),
        (("instances", 0, "xmpp"), "10.0.0.5", "instances[0].xmpp: expected host:port"),
        (("instances", 0, "web"), "javascript:alert(1)", "instances[0].web: expected an absolute http/https URL"),
        (("applications", 0, "public_prefix"), "api", "applications[0].public_prefix: expected a path"),
        (("services", "media", "port_min"), 30001, "services.media.port_min: expected an even port"),
        (("services", "provisioning", "key"), "c2hvcnQ=", "services.provisioning.key: expected 32 bytes"),
        (("bind",), "999.1.1.1", "bind: expected an IP address"),
        (("proxy", "enabled"), "yes", "proxy.enabled: expected true or false"),
        (("allow_sources",), ["10.0.0.0/8", "not a name!"], "allow_sources[1]: expected a CIDR or DNS name"),
        (("version",), 2, "version: expected 1 (this proxyd reads ProxyConfig v1), got 2"),
        (("services", "web", "upstream_timeout"), 0, "services.web.upstream_timeout: expected 1..3600, got 0"),
        (("services", "web", "upstream_timeout"), "60", "services.web.upstream_timeout: expected a number"),
        (("instances", 0, "sip_tls_fingerprint"), "AB:CD", "instances[0].sip_tls_fingerprint: expected a SHA-256"),
        (("instances", 0, "sip_tls_fingerprint"), "G" * 64, "instances[0].sip_tls_fingerprint: expected a SHA-256"),
        (("instances", 0, "sip_tls_fingerprint"), "ab" * 32,
         "instances[0].sip_tls_fingerprint: only for a tls sip target, not udp"),
        (("instances", 0, "rtp_only"), "yes", "instances[0].rtp_only: expected true or false"),
        (("instances", 0, "sip_offers_tcp"), "yes", "instances[0].sip_offers_tcp: expected true or false"),
        (("instances", 0, "provisioning"), "http://10.0.0.5/prov/{Mac}.cfg",
         "instances[0].provisioning: unknown placeholder {Mac}, expected one of {mac}, {mac:}, {mac-}, {MAC}"),
        (("instances", 0, "provisioning"), "http://10.0.0.5/prov/{mac",
         "instances[0].provisioning: unbalanced { or }"),
        (("tls", "key_type"), "rsa-1024", "tls.key_type: expected one of ecdsa-p256, rsa-2048, rsa-3072"),
        (("instances", 0, "media_sources"), ["10.0.0.0/33"],
         "instances[0].media_sources[0]: expected a CIDR such as 10.0.0.0/24, got '10.0.0.0/33'"),
        (("instances", 0, "media_sources"), ["pbx.local"],
         "instances[0].media_sources[0]: expected a CIDR such as 10.0.0.0/24, got 'pbx.local'"),
        (("proxy", "aliases"), ["portal example"],
         "proxy.aliases[0]: expected a DNS name or IP address, got 'portal example'"),
        (("instances", 0, "web_prefix_mode"), "strip",
         "instances[0].web_prefix_mode: expected one of rewrite, forward_prefix"),
    ],
)
def test_each_bad_field_is_named(path: tuple, value: object, expected: str) -> None:
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert any(p.startswith(expected) for p in problems(raw)), problems(raw)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("connections_per_address", 0, "expected 1..1000000, got 0"),
        ("connections_total", 10, "expected 64..1000000, got 10"),
        ("tls_handshake_timeout", "10", "expected a number"),
        ("head_timeout", 0, "expected 1..300, got 0"),
        ("idle_timeout", 7200, "expected 1..3600, got 7200"),
        ("min_body_rate", 1.5, "expected an integer"),
        ("backend_connections", 0, "expected 1..100000, got 0"),
        ("backend_queue", -1, "expected 0..100000, got -1"),
        ("backend_queue_timeout", 0, "expected 0.1..300, got 0"),
        ("retry_after", 0, "expected 1..3600, got 0"),
        ("surprise", 1, "unknown field"),
    ],
)
def test_a_bad_http_limit_is_named(key: str, value: object, expected: str) -> None:
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    raw["services"]["web"]["limits"] = {key: value}
    assert f"services.web.limits.{key}: {expected}" in problems(raw), problems(raw)


def test_http_limits_default_from_the_dataclass_and_round_trip() -> None:
    from proxyd.config import WebLimits

    assert parse_config(DESIGN_EXAMPLE).services.web.limits == WebLimits()
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    raw["services"]["web"]["limits"] = {"backend_queue": 0, "head_timeout": 5}
    cfg = parse_config(raw)
    assert cfg.services.web.limits.backend_queue == 0 and cfg.services.web.limits.head_timeout == 5.0
    assert cfg.services.web.limits.idle_timeout == WebLimits().idle_timeout and loads(cfg.to_json()) == cfg


def test_web_prefix_mode_defaults_to_rewrite_and_round_trips() -> None:
    assert parse_config(DESIGN_EXAMPLE).instances[0].web_prefix_mode == "rewrite"
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    raw["instances"][0]["web_prefix_mode"] = "forward_prefix"
    cfg = parse_config(raw)
    assert cfg.instances[0].web_prefix_mode == "forward_prefix" and loads(cfg.to_json()) == cfg


def test_sip_tls_fingerprint_is_normalised() -> None:
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    raw["instances"][0]["sip"] = "tls:10.0.0.5:5061"
    raw["instances"][0]["sip_tls_fingerprint"] = " " + "0a" * 32 + " "
    inst = parse_config(raw).instances[0]
    assert inst.sip_tls_fingerprint == ":".join(["0A"] * 32)
    assert parse_config(json.loads(parse_config(raw).to_json())).instances[0] == inst


def test_two_listeners_on_one_port_collide() -> None:
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    raw["applications"][0]["port"] = 443
    raw["services"]["provisioning"]["https_port"] = 5061
    found = problems(raw)
    assert "applications[0].port: tcp port 443 collides with services.web.port" in found
    assert "services.provisioning.https_port: tcp port 5061 collides with services.sip.tls_port" in found


def test_udp_sip_port_inside_media_range_collides_but_off_services_do_not() -> None:
    raw = base_config(services={"sip": {"mode": "udp", "udp_port": 20010}})  # inside the default media range
    assert any("collides with services.sip.udp_port" in p for p in problems(raw))
    raw["services"]["sip"]["mode"] = "off"
    parse_config(raw)


def test_tls_pair_must_match() -> None:
    from proxyd.tls import make_self_signed

    cert_a, _ = make_self_signed("a.example", [])
    _, key_b = make_self_signed("b.example", [])
    raw = base_config(tls={"certificate_pem": cert_a, "key_pem": key_b})
    assert "tls.certificate_pem: certificate and key do not match" in problems(raw)
    raw["tls"]["key_pem"] = None
    assert any(p.startswith("tls: certificate_pem and key_pem go together") for p in problems(raw))


def test_manual_network_checks_gateway_and_table() -> None:
    net = {"mode": "manual", "interface": "eth1", "address": "10.5.6.100/24",
           "gateway": "10.5.7.254", "table": 254}
    found = problems(base_config(network=net))
    assert "network.gateway: 10.5.7.254 is not a neighbour inside 10.5.6.0/24" in found
    assert "network.table: tables 253-255 are the kernel's default/main/local" in found
    net.update(gateway="10.5.6.254", table=100)
    cfg = parse_config(base_config(network=net))
    assert cfg.network.interface == "eth1"
    assert any(p.startswith("network.interface: only allowed in mode manual")
               for p in problems(base_config(network={"mode": "auto", "interface": "eth1"})))


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        loads(b"{nope")
    assert problems([1, 2])[:3] == ["(top level): expected an object", "version: required", "proxy: required"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(list(DESIGN_EXAMPLE) + ["x"]), json_values, max_size=6))
def test_arbitrary_input_gives_config_or_config_error(raw: dict) -> None:
    try:
        cfg = parse_config(raw)
    except ConfigError as exc:
        assert exc.problems and all(": " in p for p in exc.problems)
    else:
        assert isinstance(cfg, ProxyConfig)


def test_cli_check_prints_field_paths_and_exits_1(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(DESIGN_EXAMPLE))
    bad["services"]["web"]["mode"] = "all"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    res = subprocess.run([sys.executable, "-m", "proxyd", "check", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "services.web.mode: expected one of web_and_rest, rest_only, off" in res.stderr
    path.write_text(json.dumps(DESIGN_EXAMPLE))
    res = subprocess.run([sys.executable, "-m", "proxyd", "check", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


# -- a backend that is the proxy itself ------------------------------------------------------------

EXAMPLE = Path(__file__).parents[2] / "examples" / "standalone.json"


def test_derived_direct_tls_default_pointing_at_the_own_starttls_listener_is_named() -> None:
    """Issue #19 (4): the example's XMPP backend at 127.0.0.1:15222 made Direct TLS go to :15223,
    which is pforte's own STARTTLS listener; `check` said ok."""
    raw = json.loads(EXAMPLE.read_text())
    parse_config(raw)  # the shipped example is valid (it names its Direct TLS address)
    del raw["instances"][0]["xmpp_direct_tls"]
    assert problems(raw) == ["instances[0].xmpp_direct_tls: points at this proxy's own XMPP STARTTLS listener "
                             "127.0.0.1:15223 (the default: the xmpp port + 1)"]


def test_the_derived_direct_tls_default_is_one_rule_for_config_and_xmpp_service() -> None:
    from services.xmpp.service import XmppService

    cfg = parse_config(DESIGN_EXAMPLE)
    inst = cfg.instances[0]
    assert inst.xmpp_direct_tls is None and str(inst.direct_tls_target) == "10.0.0.5:5223"
    route = XmppService.view(cfg).routes.domains[0][1]  # type: ignore[union-attr]
    assert (route.direct_host, route.direct_port) == ("10.0.0.5", 5223)


SELF = [  # (bind, field path, value, listener named in the message)
    ("0.0.0.0", ("instances", 0, "xmpp_direct_tls"), "0.0.0.0:5223", "XMPP Direct TLS listener 0.0.0.0:5223"),
    ("0.0.0.0", ("instances", 0, "xmpp"), "127.0.0.1:5222", "XMPP STARTTLS listener 0.0.0.0:5222"),
    ("0.0.0.0", ("instances", 0, "xmpp"), "127.8.9.1:5223", "XMPP Direct TLS listener 0.0.0.0:5223"),
    ("0.0.0.0", ("instances", 0, "web"), "https://localhost/ui", "web (HTTPS) listener 0.0.0.0:443"),
    ("0.0.0.0", ("instances", 0, "web"), "https://mobydick.example.com:8884/", "provisioning HTTPS listener"),
    ("0.0.0.0", ("instances", 0, "sip"), "tcp:127.0.0.1:5061", "SIP TLS listener 0.0.0.0:5061"),
    ("0.0.0.0", ("instances", 0, "sip"), "udp:127.0.0.1:30002", "media relay ports 0.0.0.0:30000-35000"),
    ("0.0.0.0", ("instances", 0, "provisioning"), "http://[::ffff:127.0.0.1]:443/p/{mac}", "web (HTTPS)"),
    ("0.0.0.0", ("applications", 0, "upstream"), "https://127.0.0.1:8443/x/", "application 'procurat' listener"),
    ("::", ("instances", 0, "web"), "http://[::1]:5222/", "XMPP STARTTLS listener [::]:5222"),
    ("::", ("instances", 0, "web"), "http://127.0.0.1:5222/", "XMPP STARTTLS listener [::]:5222"),
    ("10.0.0.1", ("instances", 0, "web"), "http://10.0.0.1:5222/", "XMPP STARTTLS listener 10.0.0.1:5222"),
]


@pytest.mark.parametrize(("bind", "path", "value", "named"), SELF)
def test_a_backend_on_one_of_the_proxys_own_listeners_is_a_config_error(
        bind: str, path: tuple, value: str, named: str) -> None:
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    raw["bind"] = bind
    raw["instances"][0]["xmpp_direct_tls"] = "10.0.0.5:5223"
    raw[path[0]][path[1]][path[2]] = value
    field_path = f"{path[0]}[{path[1]}].{path[2]}"
    found = [p for p in problems(raw) if p.startswith(field_path + ":")]
    assert len(found) == 1 and f": points at this proxy's own {named}" in found[0], found


NOT_SELF = [  # (bind, field path, value): the same ports elsewhere, or where pforte does not listen
    ("0.0.0.0", ("instances", 0, "xmpp"), "10.0.0.5:5222"),  # another host
    ("127.0.0.1", ("instances", 0, "xmpp"), "127.0.0.2:5222"),  # another loopback address than the bind
    ("10.0.0.1", ("instances", 0, "xmpp"), "127.0.0.1:5222"),  # pforte listens on 10.0.0.1 only
    ("0.0.0.0", ("instances", 0, "xmpp"), "[::1]:5222"),  # an IPv4-only bind
    ("0.0.0.0", ("instances", 0, "sip"), "udp:127.0.0.1:5061"),  # SIP TLS is TCP
    ("0.0.0.0", ("instances", 0, "web"), "http://127.0.0.1:8880/"),  # provisioning HTTP is off (mode encrypted)
    ("0.0.0.0", ("instances", 0, "web"), "http://pbx.example.com:443/"),  # a name: not resolved at check time
]


@pytest.mark.parametrize(("bind", "path", "value"), NOT_SELF)
def test_the_same_ports_on_another_address_or_transport_are_fine(bind: str, path: tuple, value: str) -> None:
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    raw["bind"] = bind
    raw["instances"][0]["xmpp_direct_tls"] = "10.0.0.5:5223"
    raw[path[0]][path[1]][path[2]] = value
    parse_config(raw)


def test_an_xmpp_backend_on_65535_needs_an_explicit_direct_tls_address() -> None:
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    raw["instances"][0]["xmpp"] = "10.0.0.5:65535"
    assert problems(raw) == ["instances[0].xmpp_direct_tls: the default (xmpp port + 1) is 65536, not a port: set it"]
    raw["instances"][0]["xmpp_direct_tls"] = "10.0.0.5:5223"
    parse_config(raw)


def test_cli_check_reports_a_backend_pointing_at_the_proxy(tmp_path: Path) -> None:
    raw = json.loads(EXAMPLE.read_text())
    del raw["instances"][0]["xmpp_direct_tls"]
    path = tmp_path / "loop.json"
    path.write_text(json.dumps(raw))
    res = subprocess.run([sys.executable, "-m", "proxyd", "check", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "instances[0].xmpp_direct_tls: points at this proxy's own XMPP STARTTLS listener 127.0.0.1:15223" \
        in res.stderr


def test_a_minimal_file_gets_the_dataclasses_defaults() -> None:
    """The parser takes every default from the dataclasses (`default_of`): a file that names only
    what is required equals the dataclasses' own defaults, section by section."""
    from proxyd.config import Instance, ProxyInfo, Services, TlsConfig

    cfg = parse_config({"version": 1, "proxy": {"name": "p", "fqdn": "p.example"},
                        "instances": [{"name": "a"}], "services": {"provisioning": {"mode": "off"}}})
    assert cfg.proxy == ProxyInfo("p", "p.example") and cfg.tls == TlsConfig()
    assert cfg.instances == (Instance("a"),)
    assert dataclasses.replace(cfg.services, provisioning=Services().provisioning) == Services()
    assert (cfg.revision, cfg.bind, cfg.allow_sources) == (0, "0.0.0.0", ())


def test_tls_modes_are_checked_once_naming_the_field():
    acme = {"mode": "acme", "acme_directory": "https://127.0.0.1:14000/dir", "acme_email": "ops@example.net",
            "acme_names": ["prov.example.net"], "key_type": "rsa-2048"}
    cfg = parse_config(base_config(tls=acme))
    assert (cfg.tls.mode, cfg.tls.acme_names, cfg.tls.key_type) == ("acme", ("prov.example.net",), "rsa-2048")
    assert parse_config(base_config(tls={})).tls.mode == "self-signed"
    assert "tls.acme_directory: mode acme needs the CA's directory URL" in problems(base_config(tls={"mode": "acme"}))
    refused = [p for p in problems(base_config(tls={**acme, "acme_directory": "http://ca.example/dir"}))
               if p.startswith("tls.acme_directory:")]
    assert len(refused) == 1 and "https" in refused[0], refused  # not also "needs the CA's directory URL"
    assert any(p.startswith("tls.acme_email:") for p in problems(base_config(tls={**acme, "acme_email": "nobody"})))
    assert any(p.startswith("tls.acme_names:") for p in problems(base_config(tls={**acme, "acme_names": ["10.0.0.1"]})))
    assert any(p.startswith("tls.certificate_pem: mode uploaded needs") for p in problems(
        base_config(tls={"mode": "uploaded"})))
    assert any(p.startswith("tls.mode:") for p in problems(base_config(tls={"mode": "bogus"})))


def test_the_acme_http_port_is_in_the_port_collision_table_and_tls_alpn_needs_https():
    raw = base_config(tls={"mode": "acme", "acme_directory": "https://ca.example/dir", "acme_http_port": 8080})
    raw["services"]["web"] = {"mode": "rest_only", "port": 8080}
    assert any(p.startswith("tls.acme_http_port: tcp port 8080 collides with services.web.port")
               for p in problems(raw)), problems(raw)
    raw["tls"]["acme_challenge"] = "tls-alpn-01"  # no HTTP-01 listener then: no collision
    assert parse_config(raw).tls.acme_challenge == "tls-alpn-01"
    raw["services"]["web"] = {"mode": "off", "port": 8443}
    assert any(p.startswith("tls.acme_challenge: tls-alpn-01 is answered on the HTTPS listener")
               for p in problems(raw)), problems(raw)
    raw["services"]["web"] = {"mode": "rest_only", "port": 8443}
    raw["tls"]["acme_challenge"] = "http-01"
    app = {"name": "procurat", "port": 8080, "tls": False, "public_prefix": "/api/",
           "upstream": "https://10.1.2.3:8443/api/"}
    raw["applications"] = [app]  # the router's own plain-HTTP listener has the port: it answers there
    assert parse_config(raw).tls.acme_http_port == 8080
    raw["applications"] = [{**app, "tls": True}]
    assert any(p.startswith("tls.acme_http_port: tcp port 8080 collides with applications[0].port")
               for p in problems(raw)), problems(raw)
    raw["applications"] = []
    raw["tls"]["acme_challenge"] = "dns-99"
    assert any(p.startswith("tls.acme_challenge: expected one of") for p in problems(raw))


def test_a_given_pair_without_mode_is_uploaded_and_acme_refuses_one():
    from proxyd.tls import make_self_signed

    cert, key = make_self_signed("proxy.example.net", [])
    assert parse_config(base_config(tls={"certificate_pem": cert, "key_pem": key})).tls.mode == "uploaded"
    raw = base_config(tls={"mode": "acme", "acme_directory": "https://ca.example/dir",
                           "certificate_pem": cert, "key_pem": key})
    assert any(p.startswith("tls.mode: mode acme makes its own certificate") for p in problems(raw))


def test_sip_offers_tcp_is_only_for_a_udp_target() -> None:
    raw = json.loads(json.dumps(DESIGN_EXAMPLE))
    raw["instances"][0]["sip_offers_tcp"] = True
    assert parse_config(raw).instances[0].sip_offers_tcp is True
    raw["instances"][0]["sip"] = "tcp:10.0.0.5:5060"
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert "instances[0].sip_offers_tcp: only for a udp sip target, not tcp" in str(err.value)
