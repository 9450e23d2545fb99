"""Reuses the router tests' real backend and scripted raw-socket backends."""

from tests.services.http.conftest import backend  # noqa: F401
from tests.services.http.test_proxy import scripted  # noqa: F401
