"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.e2e.traffic import Traffic, hello_backend, run_traffic
from tests.support import ProxydProcess


@pytest.fixture
def traffic(proxyd: Callable[..., ProxydProcess]) -> Iterator[Traffic]:
    """A real proxyd with every service up, after a little traffic of each kind (tests/e2e/traffic.py)."""
    with hello_backend() as backend:
        yield run_traffic(proxyd, backend)
