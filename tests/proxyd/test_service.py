"""The Service base: periodic steps that outlive a failing step and say so."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from proxyd.access import AccessList
from proxyd.config import ProxyConfig
from proxyd.service import Service, ServiceContext
from proxyd.statedir import StateDir
from proxyd.tls import CertStore


class Ticking(Service):
    name = "ticking"

    @classmethod
    def view(cls, cfg: ProxyConfig) -> str | None:
        return "on"

    async def start(self, view: Any) -> None:
        self.steps: list[float] = []
        self.task = self.every(0.01, self.step, "the test's sweep")

    def step(self, now: float) -> None:
        self.steps.append(now)
        if len(self.steps) == 2:
            raise KeyError("a call the table no longer holds")

    async def reconfigure(self, view: Any) -> None:
        pass

    async def stop(self, timeout: float) -> None:
        self.task.cancel()


async def test_a_step_that_raises_is_logged_shown_as_last_error_and_the_loop_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = StateDir(tmp_path / "state").ensure()
    svc = Ticking(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    caplog.set_level(logging.ERROR, logger="services.ticking")
    await svc.start("on")
    for _ in range(300):
        if len(svc.steps) >= 5:
            break
        await asyncio.sleep(0.01)
    await svc.stop(0)
    assert len(svc.steps) >= 5 and svc.steps == sorted(svc.steps)  # it went on after the failure
    assert svc.last_error == "the test's sweep failed: KeyError: 'a call the table no longer holds'"
    assert "event=service_step_failed service=ticking step=\"the test's sweep\"" in caplog.text
    assert "Traceback" in caplog.text  # a bug: its stack is in the log
    await asyncio.sleep(0)
    assert svc.task.cancelled()
