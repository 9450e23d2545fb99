"""SIP URIs and name-addrs: quoted header parameters, and adding a URI parameter by the parse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sip.uri import UriError, add_uri_param, parse_name_addr, split_params
from tests.services.sip.captured import INSTANCE, KAMAILIO_GRUU, LINPHONE_CONTACT


def test_quoted_parameter_values_may_hold_semicolons_commas_and_angles() -> None:
    """kamailio's 200 OK to REGISTER: RFC 5627 GRUUs are quoted URIs with their own ";gr"."""
    na = parse_name_addr(f"<sip:alice@127.0.0.2:5070;transport=udp>;expires=3600{KAMAILIO_GRUU}")
    assert na.uri.params == {"transport": "udp"}
    assert na.params["pub-gruu"] == f'"sip:alice@example.com;gr={INSTANCE}"'
    assert na.params["temp-gruu"] == '"sip:tgruu.7hs==jd7vnzga5w7fajsc7-ajd6fabz0f8g5@example.com;gr"'
    na = parse_name_addr(LINPHONE_CONTACT)
    assert na.params["+sip.instance"] == f'"<{INSTANCE}>"'
    assert na.params["+org.linphone.specs"] == '"conference/1.0,ephemeral/1.1,groupchat/1.1,lime"'
    # a bare addr-spec: a "<" inside a quoted header parameter does not start a URI
    na = parse_name_addr(f'sip:alice@127.0.0.2;+sip.instance="<{INSTANCE}>";x="a;b\\";c"')
    assert (na.uri.host, na.uri.params) == ("127.0.0.2", {})
    assert na.params == {"+sip.instance": f'"<{INSTANCE}>"', "x": '"a;b\\";c"'}


@pytest.mark.parametrize("bad", [
    '<sip:a@b>;x="open', '<sip:a@b>;x="a"b', "<sip:a@b>;x=a;b=", "<sip:a@b>;=1", "foo;bar <sip:a@b>",
])
def test_broken_parameters_are_still_refused(bad: str) -> None:
    with pytest.raises(UriError):
        parse_name_addr(bad)


def test_split_params_respects_quotes_and_escapes() -> None:
    assert split_params(";a=1;b") == ["", "a=1", "b"]
    assert split_params(';a="x;y";b="\\";";c') == ["", 'a="x;y"', 'b="\\";"', "c"]


@pytest.mark.parametrize(("value", "want"), [
    # the linphone Contact: the flow goes into the URI, the instance id stays intact (it once
    # became "<urn:uuid:...;pf-flow=T>": the parameter went before the header's last ">")
    (LINPHONE_CONTACT, LINPHONE_CONTACT.replace(";transport=udp>", ";transport=udp;pf-flow=T>")),
    ("<sip:bob@127.0.0.2:5070>", "<sip:bob@127.0.0.2:5070;pf-flow=T>"),
    ('"Bob <home>" <sip:bob@h>;q=0.5', '"Bob <home>" <sip:bob@h;pf-flow=T>;q=0.5'),
    ("<sip:bob@h;ob?Subject=x>;expires=60", "<sip:bob@h;ob;pf-flow=T?Subject=x>;expires=60"),
    ("<sip:b?b@h>", "<sip:b?b@h;pf-flow=T>"),  # "?" in the user part is no header separator
    ("sip:bob@h", "<sip:bob@h;pf-flow=T>"),
    (f'sip:bob@h;+sip.instance="<{INSTANCE}>"', f'<sip:bob@h;pf-flow=T>;+sip.instance="<{INSTANCE}>"'),
])
def test_add_uri_param_edits_the_uri_the_parser_finds(value: str, want: str) -> None:
    assert add_uri_param(value, "pf-flow=T") == want
    before, after = parse_name_addr(value), parse_name_addr(want)
    assert after.params == before.params and after.display == before.display
    assert after.uri.params == {**before.uri.params, "pf-flow": "T"}


_TOK = st.from_regex(r"[a-z][a-z0-9.+-]{0,6}", fullmatch=True)
_QUOTED = st.text(alphabet=st.sampled_from(list(';,<>=:@ abc"\\')), max_size=10).map(
    lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"')
_HPARAMS = st.lists(st.tuples(_TOK, st.one_of(st.none(), _TOK, _QUOTED)), max_size=4).map(
    lambda ps: "".join(f";{k}" if v is None else f";{k}={v}" for k, v in ps))


@given(st.sampled_from(["", '"A;b<c>" ', "Alice "]), st.sampled_from(["", ";transport=udp", ";lr;ob"]), _HPARAMS)
def test_add_uri_param_never_touches_the_header_parameters(display: str, uparams: str, hparams: str) -> None:
    value = f"{display}<sip:u@127.0.0.2:5070{uparams}>{hparams}"
    before = parse_name_addr(value)
    after = parse_name_addr(add_uri_param(value, "pf-flow=T"))
    assert after.params == before.params
    assert after.uri.params == {**before.uri.params, "pf-flow": "T"}
