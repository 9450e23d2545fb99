"""Token codec and provisioning routes (sans-IO), the limiter with an injected clock."""

from __future__ import annotations

import base64
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.provisioning_template import problem as template_problem
from services.http.routes import Forward, Refuse
from services.provisioning.routes import DENIED, FailLimiter, ProvisioningTable, table_for
from services.provisioning.token import InvalidToken, decode_token, encode_token, normalize_mac

KEY = base64.b64encode(secrets.token_bytes(32)).decode()
TEMPLATES = (("mycompany", "http://127.0.0.1:9/prov/{MAC}"),)


def test_round_trip_is_deterministic_and_hides_instance_and_mac() -> None:
    t = encode_token(KEY, "mycompany", "08:c2:5a:4f:03:21")
    assert t == encode_token(KEY, "mycompany", "08-C2-5A-4F-03-21")
    assert decode_token(KEY, t) == ("mycompany", "08C25A4F0321")
    assert "mycompany" not in t and "08C25A4F0321" not in t.upper()
    assert all(c.isalnum() or c in "-_" for c in t)


def test_every_bit_flip_truncation_padding_and_other_key_fail() -> None:
    t = encode_token(KEY, "mycompany", "08C25A4F0321")
    raw = base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
    for i in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(InvalidToken):
            decode_token(KEY, base64.urlsafe_b64encode(bytes(bad)).rstrip(b"=").decode())
    for variant in (t[:-1], t[:10], t + "=", t + "A", t + "==", ""):
        with pytest.raises(InvalidToken):
            decode_token(KEY, variant)
    with pytest.raises(InvalidToken):
        decode_token(base64.b64encode(secrets.token_bytes(32)).decode(), t)


@given(st.text(max_size=80))
def test_decoder_raises_only_invalid_token(s: str) -> None:
    try:
        decode_token(KEY, s)
    except InvalidToken:
        pass


@pytest.mark.parametrize(("mac", "norm"), [("08:c2:5a:4f:03:21", "08C25A4F0321"), ("08c25a4f0321", "08C25A4F0321"),
                                           ("08-C2-5A-4F-03-21", "08C25A4F0321"), ("08C25A4F032", None),
                                           ("08C25A4F032G", None), ("", None)])
def test_mac_normalisation(mac: str, norm: str | None) -> None:
    assert normalize_mac(mac) == norm


def test_encrypted_routes_and_same_404_for_every_failure() -> None:
    table = table_for("encrypted", KEY, TEMPLATES)
    t = encode_token(KEY, "mycompany", "08C25A4F0321")
    fwd = table.route(f"/p/{t}", "", "1.1.1.1")
    assert isinstance(fwd, Forward) and fwd.path == "/prov/08C25A4F0321"
    fwd = table.route(f"/p/{t}/y000000000028.cfg", "", "1.1.1.1")
    assert isinstance(fwd, Forward) and fwd.path == "/prov/08C25A4F0321/y000000000028.cfg"
    other = encode_token(KEY, "unknown", "08C25A4F0321")
    failures = [table.route(p, "", "1.1.1.1") for p in
                (f"/p/{other}", f"/p/{t[:-2]}", "/p/mycompany/08C25A4F0321", "/p/", f"/p/{t}/a/b")]
    assert all(f == DENIED for f in failures)


def test_trusted_routes_with_mac_formats_and_files() -> None:
    table = table_for("https", None, TEMPLATES)
    for path, target in [("/p/mycompany/08C25A4F0321", "/prov/08C25A4F0321"),
                         ("/p/mycompany/08-c2-5a-4f-03-21", "/prov/08C25A4F0321"),
                         ("/p/mycompany/08c25a4f0321.cfg", "/prov/08C25A4F0321/08c25a4f0321.cfg"),
                         ("/p/mycompany/cfg08C25A4F0321.xml", "/prov/08C25A4F0321/cfg08C25A4F0321.xml"),
                         ("/p/mycompany/08C25A4F0321/y000000000028.cfg", "/prov/08C25A4F0321/y000000000028.cfg")]:
        fwd = table.route(path, "", "")
        assert isinstance(fwd, Forward) and fwd.path == target, path
    for path in ("/p/other/08C25A4F0321", "/p/mycompany/nomac.cfg", "/p/mycompany/08C25A4F032", "/x/mycompany/a"):
        assert table.route(path, "", "") == DENIED, path


def test_failed_lookups_block_a_source_for_a_while() -> None:
    now = [0.0]
    lim = FailLimiter(limit=5, window=60, block=300, clock=lambda: now[0])
    table = ProvisioningTable("https", None, TEMPLATES, lim)
    for _ in range(5):
        assert table.route("/p/guess/08C25A4F0321", "", "6.6.6.6").status == 404  # type: ignore[union-attr]
    blocked = table.route("/p/mycompany/08C25A4F0321", "", "6.6.6.6")
    assert isinstance(blocked, Refuse) and blocked.status == 429 and blocked.extra == b"Retry-After: 300\r\n"
    assert isinstance(table.route("/p/mycompany/08C25A4F0321", "", "7.7.7.7"), Forward)  # others unaffected
    now[0] = 301
    assert isinstance(table.route("/p/mycompany/08C25A4F0321", "", "6.6.6.6"), Forward)
    assert lim.blocks == 1


@pytest.mark.parametrize(("template", "target"), [
    ("http://127.0.0.1:9/prov/{mac}", "/prov/08c25a4f0321/y000000000028.cfg"),
    ("http://127.0.0.1:9/prov/{MAC}", "/prov/08C25A4F0321/y000000000028.cfg"),
    ("http://127.0.0.1:9/prov/{mac:}", "/prov/08:c2:5a:4f:03:21/y000000000028.cfg"),
    ("http://127.0.0.1:9/prov/{MAC-}", "/prov/08-C2-5A-4F-03-21/y000000000028.cfg"),
    ("http://127.0.0.1:9/{MAC}/phone-{mac-}", "/08C25A4F0321/phone-08-c2-5a-4f-03-21/y000000000028.cfg"),
    ("http://127.0.0.1:9/shared", "/shared/y000000000028.cfg"),
])
def test_the_placeholder_spells_the_mac(template: str, target: str) -> None:
    # however the phone spells its MAC in the URL, the backend gets the template's spelling
    table = table_for("https", None, (("mycompany", template),))
    for mac in ("08c25a4f0321", "08C25A4F0321", "08-c2-5a-4f-03-21"):
        fwd = table.route(f"/p/mycompany/{mac}/y000000000028.cfg", "", "")
        assert isinstance(fwd, Forward) and fwd.path == target, (template, mac)


@pytest.mark.parametrize("template", ["http://h/prov/{Mac}", "http://h/prov/{mac_}", "http://h/prov/{}",
                                      "http://h/prov/{mac", "http://h/prov/mac}", "http://h/{mac.}"])
def test_unknown_placeholders_are_named(template: str) -> None:
    why = template_problem(template)
    assert why is not None and "{mac}, {mac:}, {mac-}, {MAC}, {MAC:}, {MAC-}" in why
    assert template.partition("{")[2].partition("}")[0] in why or "unbalanced" in why
