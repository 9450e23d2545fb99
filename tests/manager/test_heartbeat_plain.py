"""The agents' front checks a plain heartbeat without the serializer: it must take exactly what
`HeartbeatIn` takes, give the same result, and leave anything else to it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("django_db")

AGENT = {"applied_revision": 7, "version": "1.4.0", "uptime": 12.5,
         "services": {"web": {"state": "running"}, "sip": {"state": "degraded", "degraded": "port taken"}},
         "network": None, "certificate": {"names": ["a.example.com"]}, "last_error": None}


def _serializer(data: dict[str, Any]) -> dict[str, Any] | None:
    from manager.proxies.api import HeartbeatIn

    ser = HeartbeatIn(data=data)
    return dict(ser.validated_data) if ser.is_valid() else None


ODD = [
    AGENT, {}, {"uptime": 3}, {"version": "  spaced  ", "last_error": "   "}, {"version": "x" * 50},
    {"version": "x" * 51}, {"version": "nul\x00"}, {"version": "ünïcode"}, {"version": 5}, {"version": None},
    {"applied_revision": True}, {"applied_revision": "3"}, {"applied_revision": 3.0}, {"applied_revision": None},
    {"uptime": float("nan")}, {"uptime": float("inf")}, {"uptime": "1.5"}, {"uptime": False},
    {"services": None}, {"services": []}, {"network": []}, {"certificate": None}, {"last_error": 0},
    {"unknown": 1, "uptime": 1.0}, {"last_error": "x" * 10_000},
]


@pytest.mark.parametrize("data", ODD)
def test_a_plain_heartbeat_is_taken_as_the_serializer_takes_it(data: dict[str, Any]) -> None:
    from manager.proxies.agent_front import plain_heartbeat

    plain = plain_heartbeat(data)
    if plain is not None:
        assert plain == _serializer(data)
    if data is AGENT:
        assert plain is not None  # what every agent sends takes the fast way


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=60),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=8)
_fields = st.sampled_from(["applied_revision", "version", "uptime", "services", "network", "certificate",
                           "last_error", "other"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_fields, _json, max_size=7))
def test_whatever_the_fast_check_takes_the_serializer_takes_alike(data: dict[str, Any]) -> None:
    from manager.proxies.agent_front import plain_heartbeat

    plain = plain_heartbeat(data)
    if plain is not None:
        assert plain == _serializer(data)
