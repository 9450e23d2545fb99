"""Reuses the router tests' real backend."""

from tests.services.http.conftest import backend  # noqa: F401
