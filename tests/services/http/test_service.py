"""The HTTP service's start: an operator learns when the C hot path is missing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from proxyd.access import AccessList
from proxyd.config import parse_config
from proxyd.service import ServiceContext
from proxyd.statedir import StateDir
from proxyd.tls import CertStore
from services.http import http1
from services.http.service import HttpService
from tests.support import base_config, free_port


@pytest.mark.parametrize("built", [True, False])
async def test_a_missing_c_extension_is_a_warning_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch, built: bool) -> None:
    if not built:
        monkeypatch.setattr(http1, "_chead", None)
    elif http1._chead is None:
        pytest.skip("the extension is not built here")
    state = StateDir(tmp_path / "state").ensure()
    certs = CertStore(state.certs)
    certs.use(None, None, "proxy.test", [])  # self-signed, as the supervisor does before any service starts
    svc = HttpService(ServiceContext(state=state, certs=certs, access=AccessList()))
    cfg = parse_config(base_config(services={"web": {"mode": "rest_only", "port": free_port()}}))
    view = HttpService.view(cfg)
    caplog.set_level(logging.WARNING, logger="services.http")
    await svc.start(view)
    await svc.stop(0)
    assert ("event=http_slow_path service=http reason=services.http._chead_not_built" in caplog.text) is not built
