"""Fixtures shared by every test package. Fixtures that start processes always stop them."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support import ProxydProcess

# Wall-clock deadlines flake on a busy 2-core machine; hypothesis still bounds example counts.
settings.register_profile("pforte", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pforte")

# Every `proxyd run` a test starts is one process unless the test asks for workers: the suite
# tests the daemon; tests/proxyd/test_workers.py tests the parent, `auto` (the default) included.
os.environ.setdefault("PFORTE_WORKERS", "1")


@pytest.fixture(scope="module", autouse=True)
def _collect_garbage_after_each_module() -> Iterator[None]:
    """A socket, file or process that a test leaks in a reference cycle warns only when the garbage
    collector frees it, and with `filterwarnings = error` pytest turns that warning into an ERROR of
    whichever test phase is running then: often an innocent test modules later (Django's migrations
    in the first manager test allocate enough for a full collection). Collecting at the end of each
    module charges the leak to the module that made it (about 50 ms per module)."""
    yield
    gc.collect()


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
