"""A real manager: Django set up in-process on a temporary SQLite file, and `pforte-manager serve`
as a separate process on the same database for the HTTP API."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import served_manager


def _setup_django(data: str) -> None:
    os.environ["PFORTE_MANAGER_DATA"] = data
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "manager.settings")
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # as Django's test runner: the test client's host `testserver` is allowed
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


@pytest.fixture(scope="session")
def django_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The manager's data dir (SQLite, serve.log) for the session: under pytest's temp base, which
    keeps the last three runs for a post-mortem and removes older ones."""
    data = str(tmp_path_factory.mktemp("manager-data"))
    _setup_django(data)
    return data


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
    env = {**os.environ, "PFORTE_MANAGER_DATA": django_db}
    with served_manager(env, os.path.join(django_db, "serve.log")) as url:
        yield url
