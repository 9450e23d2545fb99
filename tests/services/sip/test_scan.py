"""The hot-path scanner: it accepts only what the full parser accepts, reads it the same way,
sends unknown lines on verbatim, and reads every normalised message the full parser produces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sip.message import SipError, parse, parse_via
from services.sip.scan import _NAME_ADDR, _VIA, _tag_general, _via, scan, tag
from services.sip.uri import UriError, parse_name_addr
from tests.services.sip.captured import KAMAILIO_REGISTER_OK, LINPHONE_REGISTER
from tests.services.sip.test_message import TABLE, msg
from tests.services.sip.torture import TORTURE, cases

SAMPLES = [data for _, data, _ in TABLE] + [(TORTURE / c["file"]).read_bytes() for c in cases()] + [
    LINPHONE_REGISTER, KAMAILIO_REGISTER_OK]


def agree(data: bytes, datagram: bool = True) -> None:
    """If scan accepts `data`, parse accepts it too and both read the same message."""
    s = scan(data, datagram)
    if s is None:
        return
    try:
        m = parse(data, datagram=datagram)
    except SipError as exc:
        raise AssertionError(f"scan accepted what parse refuses ({exc}): {data[:200]!r}") from None
    assert (s.method, s.status, s.body) == (m.method, m.status, m.body)
    if m.method:
        assert s.uri == m.uri
    assert (s.call_id, s.to, s.from_, s.cseq) == (m.get("Call-ID"), m.get("To"), m.get("From"), m.get("CSeq"))
    assert len(s.vias) == len(m.all("Via"))
    assert s.mf == (int(m.get("Max-Forwards") or 0) if m.get("Max-Forwards") is not None else None)


@pytest.mark.parametrize("data", SAMPLES)
def test_samples_scan_like_parse_and_normal_forms_scan(data: bytes) -> None:
    agree(data)
    try:
        normal = parse(data).serialize()
    except SipError:
        return
    assert scan(normal, False) is not None, normal[:300]


def test_unknown_lines_go_out_verbatim() -> None:
    data = msg("X-Odd:   kept  as  is \r\nSubject: a, b\r\n")
    s = scan(data)
    assert s is not None and s.serialize() == data
    s.body = b"v=0\r\n"
    assert b"Content-Length: 5\r\n\r\nv=0\r\n" in s.serialize()


def test_odd_input_goes_to_the_full_parser() -> None:
    assert scan(msg("Subject: a\r\n b\r\n")) is None  # folded
    assert scan(msg().replace(b"\r\n", b"\n")) is None  # bare LF
    assert scan(msg().replace(b"Content-Length: 0\r\n", b"")) is None
    assert scan(msg("To: <sip:x@y>\r\n")) is None  # duplicate


def test_quoted_header_parameters_are_read() -> None:
    """kamailio's 200 OK to REGISTER (GRUUs: quoted values with ";") and linphone's REGISTER
    (a quoted instance id with "<>", a quoted list with ","): scanned, never dropped."""
    for data in (KAMAILIO_REGISTER_OK, LINPHONE_REGISTER):
        s = scan(data)
        assert s is not None and len(s.contact_idx) == 1, data
        agree(data)


def test_joined_vias() -> None:
    data = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a:1;branch=z9hG4bKa, SIP/2.0/UDP b;branch=z9hG4bKb\r\n" \
           b"Via: SIP/2.0/TCP c;branch=z9hG4bKc\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\n" \
           b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    s = scan(data)
    assert s is not None and [v.host for v in s.vias] == ["a", "b", "c"] and s.via_idx == [0, 0, 1]
    s.set_top_via(None)
    assert parse(s.serialize()).all("Via") == ["SIP/2.0/UDP b;branch=z9hG4bKb", "SIP/2.0/TCP c;branch=z9hG4bKc"]


def test_tag() -> None:
    assert tag("<sip:a@b>;tag=x1") == "x1" and tag("<sip:a@b>; TAG = y ") == "y" and tag("<sip:a@b>") == ""
    assert tag("<sip:a@b>;tag=x1;foo") == "x1" and tag("<sip:a@b>;x=1;Tag=z") == "z"
    # a ";tag=" inside quotes is no tag
    assert tag('"a;tag=x" <sip:a@b>;tag=y') == "y" and tag('<sip:a@b>;x="c;tag=9";tag=1') == "1"


@given(st.text(alphabet=st.sampled_from(list(';=tagTAG <>@:x1 \t"')), max_size=30).map(lambda t: "<sip:a@b>" + t)
       | st.text(alphabet=st.sampled_from(list(';=tagTAG <>@:x1 \t"')), max_size=30))
def test_tag_reads_like_the_general_reader(value: str) -> None:
    """On the values tag() is given: To and From the scanner accepted."""
    try:
        parse_name_addr(value)
    except UriError:
        return
    assert tag(value) == _tag_general(value)


LINE = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=40)


@given(st.sampled_from(SAMPLES), st.integers(0, 2000), LINE)
def test_fuzz_mutations_scan_only_what_parse_accepts(data: bytes, at: int, junk: str) -> None:
    at %= len(data) + 1
    mutated = data[:at] + junk.encode("latin-1") + data[at:]
    agree(mutated)
    agree(mutated, datagram=False)


@given(st.from_regex(_NAME_ADDR, fullmatch=True))
def test_fast_name_addr_shape_is_accepted_by_the_parser(value: str) -> None:
    parse_name_addr(value)  # raises UriError if the fast shape let through what the parser refuses


@given(st.from_regex(_VIA, fullmatch=True))
def test_fast_via_shape_is_accepted_by_the_parser(value: str) -> None:
    if _via(value) is not None:
        parse_via(value)  # raises SipError if the fast shape let through what the parser refuses
