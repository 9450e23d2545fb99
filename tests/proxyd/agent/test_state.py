"""The registration state in the state dir."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from proxyd.agent import state as agent_state
from proxyd.agent.client import RegistrationError, parse_registration_url, revision_from_etag, split_registration_url
from proxyd.statedir import StateDir


def test_round_trip_is_owner_only_and_repr_hides_the_key(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "s").ensure()
    a = agent_state.AgentState("https://mgr.example/", 3, "edge", "secret-key")
    agent_state.save(sd, a)
    path = sd.root / agent_state.AGENT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = agent_state.load(sd)
    assert loaded == agent_state.AgentState("https://mgr.example", 3, "edge", "secret-key")
    assert "secret-key" not in repr(loaded)


def test_missing_or_damaged_state_is_none(tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "s").ensure()
    assert agent_state.load(sd) is None
    (sd.root / agent_state.AGENT_FILE).write_text('{"manager_url": "x"}')
    assert agent_state.load(sd) is None
    (sd.root / agent_state.AGENT_FILE).write_text("not json")
    assert agent_state.load(sd) is None


@pytest.mark.parametrize(("url", "base"), [
    ("https://mgr.example/api/v1/register/#abc_DEF-1", "https://mgr.example"),
    ("https://mgr.example/api/v1/register#abc_DEF-1", "https://mgr.example"),
    ("https://mgr.example/api/v1/register/abc_DEF-1/", "https://mgr.example"),  # the older form, token in the path
    ("http://127.0.0.1:8000/sub/api/v1/register/tok/", "http://127.0.0.1:8000/sub"),
    ("  https://m:9/api/v1/register/tok  \n", "https://m:9"),
])
def test_registration_url_gives_manager_base(url: str, base: str) -> None:
    assert split_registration_url(url) == base
    assert parse_registration_url(url) == (base, "abc_DEF-1" if "abc" in url else "tok")


@pytest.mark.parametrize("url", [
    "ftp://m/api/v1/register/t/", "https://m/api/v1/register//", "https://m/register/t/", "tok", "",
    "https:///api/v1/register/t/", "https://m/api/v1/register/", "https://m/api/v1/register/#",
    "https://m/api/v1/register/#a b",
])
def test_not_a_registration_url(url: str) -> None:
    with pytest.raises(RegistrationError, match="not a registration URL"):
        split_registration_url(url)


@pytest.mark.parametrize(("etag", "rev"), [('"12"', 12), ('W/"3"', 3), (None, None), ('"x"', None), ("", None)])
def test_revision_from_etag(etag: str | None, rev: int | None) -> None:
    assert revision_from_etag(etag) == rev
