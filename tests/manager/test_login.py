"""Logins are throttled per account and per source address (django-axes) with a clear message, and
sessions expire."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("db")
PASSWORD = "a-long-login-password"
LOCKED = "Too many failed logins for this account or from this address"


@pytest.fixture(autouse=True)
def _no_lockouts() -> Iterator[None]:
    """Start and end unlocked: the other tests log in from 127.0.0.1 too."""
    from axes.utils import reset

    reset()
    yield
    reset()


def user(name: str) -> None:
    from django.contrib.auth import get_user_model

    User = get_user_model()  # noqa: N806
    User.objects.filter(username=name).delete()
    User.objects.create_user(name, password=PASSWORD)


def login(name: str, password: str, source: str):  # type: ignore[no-untyped-def]
    from django.test import Client

    return Client(REMOTE_ADDR=source).post("/accounts/login/", {"username": name, "password": password})


def test_an_account_is_locked_after_five_failures_from_any_addresses() -> None:
    user("alice")
    for i in range(4):
        assert login("alice", "wrong", f"10.0.0.{i + 1}").status_code == 200  # the form again, with its error
    assert login("alice", "wrong", "10.0.0.5").status_code == 429  # the fifth failure locks
    locked = login("alice", PASSWORD, "10.0.0.99")  # the right password, from a new address
    assert locked.status_code == 429 and LOCKED in locked.content.decode()
    user("bob")
    assert login("bob", PASSWORD, "10.0.0.99").status_code == 302  # other accounts from there are fine


def test_an_address_is_locked_after_five_failures_on_any_accounts() -> None:
    user("carol")
    for i in range(5):
        login(f"nobody{i}", "wrong", "10.0.1.1")
    locked = login("carol", PASSWORD, "10.0.1.1")
    assert locked.status_code == 429 and LOCKED in locked.content.decode()
    assert login("carol", PASSWORD, "10.0.1.2").status_code == 302


def test_a_success_resets_the_accounts_count() -> None:
    user("dave")
    for round_ in range(2):
        for i in range(4):
            login("dave", "wrong", f"10.0.2.{round_ * 10 + i}")
        assert login("dave", PASSWORD, f"10.0.2.{round_ * 10 + 9}").status_code == 302


def test_sessions_expire_after_12_hours() -> None:
    user("erin")
    r = login("erin", PASSWORD, "10.0.3.1")
    assert r.status_code == 302
    assert r.cookies["sessionid"]["max-age"] == 12 * 3600


def test_lockout_through_the_served_manager(manager_url: str) -> None:
    """The same over real HTTP (uvicorn, the ASGI path production runs)."""
    user("frank")
    with httpx.Client(base_url=manager_url, timeout=30) as c:
        def attempt(password: str) -> httpx.Response:
            form = c.get("/accounts/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]  # type: ignore[index]
            return c.post("/accounts/login/", data={"username": "frank", "password": password,
                                                    "csrfmiddlewaretoken": token})
        for _ in range(4):
            assert attempt("wrong").status_code == 200
        assert attempt("wrong").status_code == 429
        locked = attempt(PASSWORD)
        assert locked.status_code == 429 and LOCKED in locked.text
