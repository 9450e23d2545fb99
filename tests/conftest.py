"""Fixtures shared by every test package. Fixtures that start processes always stop them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support import ProxydProcess

# Wall-clock deadlines flake on a busy 2-core machine; hypothesis still bounds example counts.
settings.register_profile("pforte", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pforte")


@pytest.fixture
def proxyd(tmp_path: Path) -> Iterator[Callable[..., ProxydProcess]]:
    """Start real proxyd processes: `proxyd(config_dict)`; all are stopped at teardown."""
    started: list[ProxydProcess] = []

    def start(config: dict[str, Any], *, wait: bool = True, extra_args: tuple[str, ...] = ()) -> ProxydProcess:
        workdir = tmp_path / f"proxyd{len(started)}"
        workdir.mkdir()
        p = ProxydProcess(workdir, config, extra_args)
        started.append(p)
        return p.start(wait=wait)

    yield start
    for p in started:
        p.stop()
