"""The router tests' raw-socket backends, for the exposure probes."""

from tests.services.http.test_proxy import scripted  # noqa: F401
