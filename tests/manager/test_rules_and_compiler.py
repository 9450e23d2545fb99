"""Model rules, secrets at rest, and the compiler (its output passes `proxyd check`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

pytestmark = pytest.mark.usefixtures("db")


def make_proxy(**kw):  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy

    p = Proxy(name=kw.pop("name", "dmz"), fqdn=kw.pop("fqdn", "mobydick.example.com"), **kw)
    p.full_clean()
    p.save()
    return p


def test_only_one_auto_proxy_and_one_proxy_per_nic() -> None:
    make_proxy()
    with pytest.raises(ValidationError) as info:
        make_proxy(name="second")
    assert "Only one proxy may use network mode auto." in info.value.message_dict["network_mode"]
    manual = {"network_mode": "manual", "network_interface": "eth1", "network_address": "10.5.6.100/24",
              "network_gateway": "10.5.6.254", "network_table": 100}
    make_proxy(name="lan", web_port=8443, **manual)
    with pytest.raises(ValidationError) as info:
        make_proxy(name="lan2", **{**manual, "network_address": "10.5.6.101/24"})
    assert "eth1 already belongs to another proxy." in info.value.message_dict["network_interface"]


def test_network_mode_cannot_change_after_creation() -> None:
    p = make_proxy()
    p.network_mode = "manual"
    with pytest.raises(ValidationError) as info:
        p.full_clean()
    assert "cannot change after creation" in info.value.message_dict["network_mode"][0]


def test_port_collision_and_bad_certificate_are_field_errors() -> None:
    from proxyd.tls import make_self_signed

    with pytest.raises(ValidationError) as info:
        make_proxy(provisioning_https_port=443)
    assert "collides with services.web.port" in info.value.message_dict["provisioning_https_port"][0]
    cert, _ = make_self_signed("a.example", [])
    _, other_key = make_self_signed("b.example", [])
    from manager.proxies.models import Proxy

    p = Proxy(name="c", fqdn="c.example", tls_mode="uploaded", certificate_pem=cert)
    p.key_pem = other_key
    with pytest.raises(ValidationError) as info:
        p.full_clean()
    assert "certificate and key do not match" in str(info.value.message_dict["certificate_pem"])


def test_secrets_are_encrypted_at_rest() -> None:
    from django.db import connection

    from proxyd.tls import make_self_signed

    cert, key = make_self_signed("mobydick.example.com", [])
    p = make_proxy()
    p.tls_mode, p.certificate_pem = "uploaded", cert
    p.key_pem = key
    p.full_clean()
    p.save()
    with connection.cursor() as c:
        c.execute("SELECT key_pem_enc, provisioning_key_enc FROM proxies_proxy WHERE id=%s", [p.pk])
        key_enc, prov_enc = c.fetchone()
    assert "PRIVATE KEY" not in key_enc and p.provisioning_key not in prov_enc
    from manager.proxies.models import Proxy

    assert Proxy.objects.get(pk=p.pk).key_pem == key


def test_revisions_hold_no_plaintext_secret_and_are_pruned() -> None:
    from django.db import connection
    from django.test import override_settings

    from proxyd.tls import make_self_signed

    cert, key = make_self_signed("mobydick.example.com", [])
    p = make_proxy()
    p.tls_mode, p.certificate_pem, p.key_pem = "uploaded", cert, key
    p.save()
    with connection.cursor() as c:
        c.execute("SELECT config_json, secrets_enc FROM proxies_configrevision WHERE proxy_id=%s", [p.pk])
        rows = c.fetchall()
    for config_json, secrets_enc in rows:
        assert "PRIVATE KEY" not in config_json and p.provisioning_key not in config_json
        assert "PRIVATE KEY" not in secrets_enc and p.provisioning_key not in secrets_enc
    served = json.loads(p.active_revision.served_json())  # what the proxy gets: the secrets put back
    assert served["tls"]["key_pem"] == key and served["services"]["provisioning"]["key"] == p.provisioning_key
    assert p.active_revision.full_config()["tls"]["certificate_pem"] == cert
    number = p.active_revision.number
    p.save()  # the same config, secrets included: no new revision
    assert p.active_revision.number == number
    with override_settings(PFORTE_REVISIONS_KEEP=3):
        for port in (8443, 8444, 8445, 8446):
            p.web_port = port
            p.save()
    assert list(p.revisions.values_list("number", flat=True)) == [number + 4, number + 3, number + 2]


def test_changes_publish_revisions_and_compiled_config_passes_proxyd_check(tmp_path: Path) -> None:
    from manager.proxies.models import Instance

    p = make_proxy()
    assert p.active_revision.number == 1
    Instance.objects.create(name="mycompany", web="http://10.0.0.5:8080", sip_host="10.0.0.5",
                            sip_domains="mycompany.example.com")
    assert p.active_revision.number == 2
    p.save()  # no change -> no new revision
    assert p.active_revision.number == 2
    p.sip_mode = "udp"
    p.save()
    active = p.active_revision
    assert active.number == 3
    cfg = json.loads(active.config_json)
    assert cfg["revision"] == 3 and cfg["services"]["sip"]["mode"] == "udp"
    assert cfg["instances"][0]["sip"] == "udp:10.0.0.5:5060"
    path = tmp_path / "compiled.json"
    path.write_text(active.served_json())
    res = subprocess.run([sys.executable, "-m", "proxyd", "check", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_instance_exposure_limits_which_proxies_see_it() -> None:
    from manager.proxies.models import Instance

    a = make_proxy()
    b = make_proxy(name="lan", network_mode="manual", network_interface="eth1", network_address="10.1.1.2/24",
                   network_gateway="10.1.1.1", network_table=101)
    inst = Instance.objects.create(name="only-a", web="http://10.0.0.5:8080")
    inst.proxies.set([a])
    names = lambda p: [i["name"] for i in json.loads(p.active_revision.config_json)["instances"]]  # noqa: E731
    assert names(a) == ["only-a"] and names(b) == []


def test_pbx_certificate_fingerprint_is_checked_normalised_and_compiled() -> None:
    from manager.proxies.models import Instance

    p = make_proxy()
    inst = Instance(name="pbx", sip_transport="udp", sip_host="10.0.0.5", sip_port=5061, sip_domains="pbx.example.com",
                    sip_tls_fingerprint="ab" * 32)
    with pytest.raises(ValidationError) as err:
        inst.full_clean()
    assert err.value.message_dict["sip_tls_fingerprint"] == ["Only for SIP transport tls."]
    inst.sip_transport, inst.sip_tls_fingerprint = "tls", "ab:cd"
    with pytest.raises(ValidationError) as err:
        inst.full_clean()
    assert "64 hex digits" in err.value.message_dict["sip_tls_fingerprint"][0]
    inst.sip_tls_fingerprint = "ab" * 32
    inst.full_clean()
    inst.save()
    assert inst.sip_tls_fingerprint == ":".join(["AB"] * 32)
    compiled = json.loads(p.active_revision.config_json)["instances"]
    assert compiled[0]["sip"] == "tls:10.0.0.5:5061"
    assert compiled[0]["sip_tls_fingerprint"] == inst.sip_tls_fingerprint
    assert compiled[0]["rtp_only"] is False
    inst.rtp_only = True
    inst.save()
    assert json.loads(p.active_revision.config_json)["instances"][0]["rtp_only"] is True
    inst.sip_offers_tcp = True  # a tls PBX: there is no UDP to move off
    with pytest.raises(ValidationError) as err:
        inst.full_clean()
    assert err.value.message_dict["sip_offers_tcp"] == ["Only for SIP transport udp."]
    inst.sip_transport, inst.sip_tls_fingerprint = "udp", ""
    inst.full_clean()
    inst.save()
    assert json.loads(p.active_revision.config_json)["instances"][0]["sip_offers_tcp"] is True
    assert json.loads(p.active_revision.config_json)["instances"][0]["web_prefix_mode"] == "rewrite"
    inst.web_prefix_mode = "forward_prefix"
    inst.save()
    assert json.loads(p.active_revision.config_json)["instances"][0]["web_prefix_mode"] == "forward_prefix"


def test_models_and_migrations_agree() -> None:
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # exits non-zero when one is missing


def test_sip_rate_limit_reaches_the_compiled_config_and_is_bounded() -> None:
    from manager.proxies.models import Proxy

    p = Proxy(name="edge", fqdn="edge.example.com", sip_rate_limit=50)
    p.full_clean()
    p.save()
    assert json.loads(p.active_revision.config_json)["services"]["sip"]["rate_limit"] == 50
    p.sip_rate_limit = 2_000_000
    with pytest.raises(ValidationError) as err:
        p.full_clean()
    assert "sip_rate_limit" in err.value.message_dict


def test_backend_answer_timeout_reaches_the_compiled_config_and_is_bounded() -> None:
    from manager.proxies.models import Proxy

    p = Proxy(name="edge", fqdn="edge.example.com")
    p.full_clean()
    p.save()
    assert json.loads(p.active_revision.config_json)["services"]["web"]["upstream_timeout"] == 60
    p.web_upstream_timeout = 5
    p.save()
    assert json.loads(p.active_revision.config_json)["services"]["web"]["upstream_timeout"] == 5
    for bad in (0, 3601):
        p.web_upstream_timeout = bad
        with pytest.raises(ValidationError) as err:
            p.full_clean()
        assert "web_upstream_timeout" in err.value.message_dict


MEDIA_LIMITS = {"media_idle_timeout": ("idle_timeout", 0, 86401), "media_setup_timeout": ("setup_timeout", 0, 3601),
                "media_max_streams": ("max_streams", 0, 65),
                "media_max_streams_per_source": ("max_streams_per_source", 0, 100_001),
                "media_max_streams_per_instance": ("max_streams_per_instance", 0, 100_001)}


def test_media_limits_default_to_proxyds_reach_the_compiled_config_and_are_bounded() -> None:
    from manager.proxies.models import Proxy
    from proxyd.config import MediaService, default_of

    p = Proxy(name="edge", fqdn="edge.example.com")
    p.full_clean()
    p.save()
    media = json.loads(p.active_revision.config_json)["services"]["media"]
    for field, (key, _, _) in MEDIA_LIMITS.items():
        assert getattr(p, field) == default_of(MediaService, key) == media[key], field
    for n, field in enumerate(MEDIA_LIMITS, start=2):
        setattr(p, field, n)
    p.save()
    media = json.loads(p.active_revision.config_json)["services"]["media"]
    assert [media[key] for key, _, _ in MEDIA_LIMITS.values()] == [2, 3, 4, 5, 6]
    for field, (_, low, high) in MEDIA_LIMITS.items():
        for bad in (low, high):
            q = Proxy(name="edge2", fqdn="edge2.example.com", **{field: bad})
            with pytest.raises(ValidationError) as err:
                q.full_clean()
            assert field in err.value.message_dict, (field, bad)


def test_self_signed_key_type_reaches_the_compiled_config() -> None:
    from manager.proxies.forms import ProxyForm

    p = make_proxy()
    assert json.loads(p.active_revision.config_json)["tls"]["key_type"] == "ecdsa-p256"
    p.tls_key_type = "rsa-2048"
    p.save()
    assert json.loads(p.active_revision.config_json)["tls"]["key_type"] == "rsa-2048"
    assert "tls_key_type" in ProxyForm(instance=p).fields
    p.tls_key_type = "rsa-1024"
    with pytest.raises(ValidationError) as err:
        p.full_clean()
    assert "tls_key_type" in err.value.message_dict


def test_provisioning_template_placeholders_are_checked() -> None:
    from manager.proxies.models import Instance

    make_proxy()
    inst = Instance(name="pbx", provisioning="http://10.0.0.5/prov/{Mac}.cfg")
    with pytest.raises(ValidationError) as err:
        inst.full_clean()
    assert "Unknown placeholder {Mac}" in err.value.message_dict["provisioning"][0]
    inst.provisioning = "http://10.0.0.5/prov/{MAC-}.cfg"
    inst.full_clean()


def test_media_sources_are_checked_and_compiled() -> None:
    from manager.proxies.models import Instance

    p = make_proxy()
    inst = Instance(name="pbx", sip_transport="udp", sip_host="10.0.0.5", sip_port=5060, sip_domains="pbx.example.com",
                    media_sources="10.20.0.0/16\npbx.local")
    with pytest.raises(ValidationError) as err:
        inst.full_clean()
    assert "'pbx.local' is not a network" in err.value.message_dict["media_sources"][0]
    inst.media_sources = "10.20.0.0/16 192.0.2.7"  # one line is one value, as the compiler reads it
    with pytest.raises(ValidationError) as err:
        inst.full_clean()
    assert "is not a network" in err.value.message_dict["media_sources"][0]
    inst.media_sources = "10.20.0.0/16, 192.0.2.7"
    inst.full_clean()
    inst.save()
    compiled = json.loads(p.active_revision.config_json)["instances"]
    assert compiled[0]["media_sources"] == ["10.20.0.0/16", "192.0.2.7/32"]


def test_proxy_aliases_are_compiled_and_a_bad_one_is_a_form_error() -> None:
    p = make_proxy()
    p.aliases = "portal.example\n192.0.2.10"
    p.full_clean()
    p.save()
    assert json.loads(p.active_revision.config_json)["proxy"]["aliases"] == ["portal.example", "192.0.2.10"]
    p.aliases = "portal example"
    with pytest.raises(ValidationError) as err:
        p.full_clean()
    assert "aliases" in err.value.message_dict


def test_a_change_to_every_proxy_compiles_once_per_shape_and_gives_what_compiling_each_gives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """publish_many parses one config per shape; each proxy's revision is exactly what compiling that
    proxy on its own gives (its name, fqdn, aliases and provisioning key put in), a proxy the change
    would make point at itself keeps its last good revision, and one whose identity changed since
    its last revision is compiled on its own."""
    from manager.proxies import compiler
    from manager.proxies.feed import FEED
    from manager.proxies.models import Instance, Proxy

    def saved(**kw):  # type: ignore[no-untyped-def]  # as the bench and the CLI make them: no form rules
        p = Proxy(**kw)
        p.save()
        return p

    same = [saved(name=f"s{i}", fqdn=f"s{i}.example.com", aliases=f"alt{i}.example.com" if i % 2 else "")
            for i in range(8)]
    other = saved(name="other", fqdn="other.example.com", sip_udp_port=5070)  # a shape of its own
    moved = saved(name="moved", fqdn="moved.example.com")
    Proxy.objects.filter(pk=moved.pk).update(fqdn="Moved-Again.example.com.")  # no signal, no revision
    loop = saved(name="loop", fqdn="loop.example.com")  # the new instance's web backend is this proxy
    before = {p.pk: p.revisions.first().number for p in (*same, other, moved, loop)}

    calls = []
    real = compiler.parse_config
    monkeypatch.setattr(compiler, "parse_config", lambda raw: calls.append(raw["proxy"]["name"]) or real(raw))
    Instance.objects.create(name="all", web="https://loop.example.com:443", sip_host="pbx.example.com",
                            sip_domains="sip.example.com")
    monkeypatch.undo()
    assert sorted(calls) == sorted(["s0", "other", "moved", "loop"]), calls

    for p in (*same, other, moved):
        p.refresh_from_db()
        rev = p.revisions.first()
        assert rev.number == before[p.pk] + 1
        alone = compiler.compile_config(p, rev.number).to_dict()
        assert rev.full_config() == alone and alone["instances"][0]["name"] == "all"
        assert FEED.current(p.pk) == (rev.number, rev.served_json().encode())
        assert "provisioning" in rev.config_json and p.provisioning_key not in rev.config_json
    assert moved.revisions.first().full_config()["proxy"]["fqdn"] == "moved-again.example.com"
    assert loop.revisions.first().number == before[loop.pk]  # refused: the last good revision stays
    # nothing new: no revision (the same shape, the same secrets, the same public JSON)
    assert compiler.publish_many(list(Proxy.objects.all())) == 0
