"""A real manager: Django set up in-process on a temporary SQLite file, and `pforte-manager serve`
as a separate process on the same database for the HTTP API."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import free_port

_DATA = tempfile.mkdtemp(prefix="pforte-manager-test-")


def _setup_django() -> None:
    os.environ["PFORTE_MANAGER_DATA"] = _DATA
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "manager.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


@pytest.fixture(scope="session")
def django_db() -> str:
    _setup_django()
    return _DATA


@pytest.fixture
def db(django_db: str) -> Iterator[None]:
    from manager.proxies.models import Instance, Proxy

    yield
    Proxy.objects.all().delete()
    Instance.objects.all().delete()


@pytest.fixture
def admin_client(db: None):  # type: ignore[no-untyped-def]
    """Django's test client, logged in as a superuser (the UI views without a browser)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    User = get_user_model()  # noqa: N806
    User.objects.filter(username="dev-admin").delete()
    user = User.objects.create_superuser("dev-admin", "d@example.invalid", "a-long-dev-password")
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture(scope="session")
def manager_url(django_db: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "PFORTE_MANAGER_DATA": django_db}
    with open(os.path.join(django_db, "serve.log"), "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "manager.cli", "serve", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/accounts/login/", timeout=2)
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(open(os.path.join(django_db, "serve.log")).read()) from None
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)
