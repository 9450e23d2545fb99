"""The end-of-exchange events: request ids, the line's quoting, the flood limit, the JSON fields,
and the bounded classes a refusal is counted under."""

from __future__ import annotations

import json
import logging
import re

import pytest

from proxyd import events
from proxyd.logs import JournalPrefix, JsonFormatter, TextFormatter


def test_a_valid_request_id_is_kept_and_forwarded_unchanged() -> None:
    ids = events.RequestIds()
    block = b"Accept: */*\r\nX-Request-ID: 4f1c2a-load-balancer.7\r\n"
    assert ids.take(block) == (b"4f1c2a-load-balancer.7", block)
    assert ids.take(b"x-request-id:  abc  \r\n") == (b"abc", b"x-request-id:  abc  \r\n")
    assert ids.take(b"X-rEqUeSt-iD: mixed\r\n") == (b"mixed", b"X-rEqUeSt-iD: mixed\r\n")


@pytest.mark.parametrize("value", [b"", b"a" * 65, b"has space", b"quote\"d", b"semi;colon", b"\xff\xfe",
                                   b"/p/Zm9vYmFyYmF6cXV4cXV1eHF1dXhx/cfg", b"new\\nline"])
def test_an_invalid_request_id_is_replaced(value: bytes) -> None:
    ids = events.RequestIds()
    rid, block = ids.take(b"Accept: */*\r\nX-Request-ID: " + value + b"\r\nUser-Agent: t\r\n")
    assert rid.startswith(ids.prefix + b"-")
    assert block == b"Accept: */*\r\nUser-Agent: t\r\nX-Request-ID: " + rid + b"\r\n"


def test_a_repeated_request_id_is_replaced_and_a_missing_one_added() -> None:
    ids = events.RequestIds()
    rid, block = ids.take(b"X-Request-ID: a\r\nX-Request-Id: b\r\n")
    assert block == b"X-Request-ID: " + rid + b"\r\n"
    rid2, block = ids.take(b"Accept: */*\r\nX-Other-Id: 1\r\n")  # an -Id: of another field
    assert block == b"Accept: */*\r\nX-Other-Id: 1\r\nX-Request-ID: " + rid2 + b"\r\n" and rid2 != rid


def test_logfmt_quotes_what_could_break_the_line() -> None:
    assert events.logfmt("10.0.0.1") == "10.0.0.1"
    assert events.logfmt("[::1]:443") == "[::1]:443"
    assert events.logfmt(None) == "-"
    assert events.logfmt("") == '""'
    assert events.logfmt('non-canonical path: dot "x"\r\nevent=forged') == \
        '"non-canonical path: dot \\"x\\"\\r\\nevent=forged"'


def test_one_event_with_its_fields_in_text_and_json(caplog: pytest.LogCaptureFixture) -> None:
    ev = events.HttpEvents("http")
    with caplog.at_level(logging.INFO, logger="pforte.events.http"):
        ev.request_end(route="application", client="192.0.2.7", method=b"GET", status=200, sent=123,
                       duration=0.0042, request_id=b"abc", instance="crm", upstream="127.0.0.1:9000")
        assert caplog.records == []  # served requests are written together, at the next flush
        ev.flush()
    (rec,) = caplog.records
    assert rec.getMessage() == ("event=http_request service=http client=192.0.2.7 request_id=abc route=application "
                                "instance=crm method=GET status=200 bytes=123 duration=0.004200 "
                                "upstream=127.0.0.1:9000")
    out = json.loads(JsonFormatter().format(rec))
    assert {k: out[k] for k in ("event", "service", "client", "status", "bytes", "instance", "request_id")} == {
        "event": "http_request", "service": "http", "client": "192.0.2.7", "status": 200, "bytes": 123,
        "instance": "crm", "request_id": "abc"}
    assert out["level"] == "info" and ev.counters == {"handled_application_read_2xx": 1}
    text = TextFormatter().format(rec)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO pforte.events.http event=http_request .*", text)


def test_a_batch_is_one_line_per_event_each_with_its_time(caplog: pytest.LogCaptureFixture) -> None:
    ev = events.HttpEvents("http")
    with caplog.at_level(logging.INFO, logger="pforte.events.http"):
        for status in (200, 201, 204):
            ev.request_end(route="instance", client="192.0.2.7", method=b"POST", status=status, sent=1, duration=0,
                           request_id=None)
        ev.flush()
        ev.flush()  # nothing left: no record
    (rec,) = caplog.records
    lines = [json.loads(ln) for ln in JsonFormatter().format(rec).split("\n")]
    assert [ln["status"] for ln in lines] == [200, 201, 204] and all(ln["event"] == "http_request" for ln in lines)
    assert all(ln["ts"].endswith("Z") for ln in lines)
    assert len(TextFormatter().format(rec).split("\n")) == 3
    journal = JournalPrefix(TextFormatter()).format(rec).split("\n")
    assert len(journal) == 3 and all(ln.startswith("<6>") for ln in journal)


def test_refusals_are_counted_by_class_and_logged_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    ev = events.HttpEvents("provisioning")
    with caplog.at_level(logging.INFO, logger="pforte.events.provisioning"):
        ev.request_end(route="provisioning", client="192.0.2.7", method=b"GET", status=404, sent=40, duration=0.001,
                       request_id=None, reason="denied: unknown_token")
    (rec,) = caplog.records
    assert rec.levelno == logging.WARNING
    assert "refusal=unknown_token" in rec.getMessage() and "status=404" in rec.getMessage()
    assert ev.counters == {"handled_provisioning_read_4xx": 1, "refusal_provisioning_unknown_token": 1}


@pytest.mark.parametrize(("status", "reason", "cls"), [
    (400, "non-canonical path: dot segment", "non_canonical_path"),
    (421, "'evil.test' is not a name of this proxy", "bad_authority"),
    (400, "exactly one Host header is required", "bad_authority"),
    (400, "request-target authority and Host disagree", "bad_authority"),
    (400, "both Content-Length and Transfer-Encoding", "framing"),
    (400, "bare LF or CR in head", "framing"),
    (505, "HTTP version not supported", "framing"),
    (431, "request head too large", "limits"),
    (413, "body too large", "limits"),
    (408, "request head not received in time", "timeout"),
    (405, "TRACE is not allowed", "method"),
    (404, "not found", "not_found"),
    (503, "backend 10.0.0.1:80: no free slot", "backend_busy"),
    (429, "too many failed provisioning lookups", "rate_limited"),
    (404, "backend answered 403: denied: backend_denied", "backend_denied"),
    (404, "denied: something_new", "other"),
])
def test_refusal_classes(status: int, reason: str, cls: str) -> None:
    assert events.refusal_reason(status, reason) == cls


def test_every_counter_key_a_route_can_make_is_known_up_front() -> None:
    keys = set(events.http_counter_keys("instance"))
    assert "handled_instance_write_5xx" in keys and "refusal_instance_framing" in keys
    assert "refusal_provisioning_bad_mac" in events.http_counter_keys("provisioning")
    assert len(keys) == len(events.METHOD_CLASSES) * 5 + len(events.REFUSAL_REASONS)


def test_a_refusal_flood_is_held_to_the_rate_and_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    ev = events.HttpEvents("http")
    ev.limiter = events.Limiter(rate=10, burst=5, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="pforte.events.http"):
        for _ in range(1000):  # 1000 refusals within one instant
            ev.request_end(route="instance", client="192.0.2.9", method=None, status=400, sent=10, duration=0,
                           request_id=None, reason="bare LF or CR in head")
        assert len(caplog.records) == 5
        now[0] = 1.0  # a second later: the bucket is full again (10/s, capped at the burst of 5)
        for _ in range(1000):
            ev.request_end(route="instance", client="192.0.2.9", method=None, status=400, sent=10, duration=0,
                           request_id=None, reason="bare LF or CR in head")
    lines = [r.getMessage() for r in caplog.records]
    summary = [ln for ln in lines if ln.startswith("event=events_suppressed")]
    assert summary == ["event=events_suppressed service=http kind=refusal count=995 seconds=1.0"]
    assert len(lines) == 5 + 1 + 5
    assert ev.counters["refusal_instance_framing"] == 2000  # the counters see every one
    # served requests are never held back
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pforte.events.http"):
        for _ in range(50):
            ev.request_end(route="instance", client="192.0.2.9", method=b"GET", status=200, sent=10, duration=0,
                           request_id=None)
        ev.flush()
    assert caplog.records[0].getMessage().count("event=http_request") == 50


def test_a_full_batch_is_written_without_waiting_for_the_flush(caplog: pytest.LogCaptureFixture) -> None:
    ev = events.HttpEvents("http")
    with caplog.at_level(logging.INFO, logger="pforte.events.http"):
        for _ in range(events.BATCH + 3):
            ev.request_end(route="instance", client="192.0.2.7", method=b"GET", status=200, sent=1, duration=0,
                           request_id=None)
        assert [r.getMessage().count("\n") + 1 for r in caplog.records] == [events.BATCH]
        assert len(ev.pending) == 3  # bounded: never more than a batch waits


def test_nothing_is_kept_or_formatted_when_info_is_off(caplog: pytest.LogCaptureFixture) -> None:
    ev = events.HttpEvents("http")
    with caplog.at_level(logging.WARNING, logger="pforte.events.http"):
        ev.request_end(route="instance", client="192.0.2.7", method=b"GET", status=200, sent=1, duration=0,
                       request_id=None)
        ev.flush()
    assert caplog.records == [] and ev.pending == [] and ev.counters == {"handled_instance_read_2xx": 1}
