"""The parent's side of the ACME fan-out (proxyd/workers_acme.py) against workers that misbehave:
one that never takes a generation fails the order before the CA is told to validate, one that
does not answer is never signalled (SIGUSR1 before its handler exists would end it), one that
answers with an older generation is signalled again. The workers here are stand-ins with the
three methods the fan-out uses: a hung or half-started real worker cannot be produced on cue
(tests/proxyd/test_workers_acme.py runs the real ones)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from proxyd import workers_acme
from proxyd.acme_client import AcmeError
from proxyd.workers_acme import WorkerFanout


class StandIn:
    def __init__(self, id: int, answers: bool = True, takes: bool = True, lag: int = 0):  # noqa: A002
        self.id, self.answers, self.takes, self.lag = id, answers, takes, lag
        self.generation = 0
        self.signals: list[int] = []
        self.path: Path | None = None

    def alive(self) -> bool:
        return True

    def status(self) -> dict[str, Any] | None:
        return {"acme_generation": self.generation} if self.answers else None

    def signal(self, sig: int) -> None:
        self.signals.append(sig)
        if self.lag:  # it read the file before the parent replaced it: still the old generation
            self.lag -= 1
        elif self.takes and self.path is not None:
            self.generation = json.loads(self.path.read_text())["generation"]


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_acme, "TAKE_TIMEOUT", 1.5)
    monkeypatch.setattr(workers_acme, "RESIGNAL_EVERY", 0.2)


async def test_every_worker_takes_the_token_and_a_lagging_one_is_signalled_again(tmp_path: Path) -> None:
    path = tmp_path / "acme.json"
    good, lagging = StandIn(0), StandIn(1, lag=2)
    for w in (good, lagging):
        w.path = path
    fan = WorkerFanout(path, [good, lagging], asyncio.get_running_loop())
    fan.tokens["tok"] = "tok.keyauth"
    assert await fan.publish() is None
    assert (good.generation, lagging.generation) == (1, 1)
    assert good.signals == [signal.SIGUSR1] and lagging.signals == [signal.SIGUSR1] * 3
    assert json.loads(path.read_text())["tokens"] == {"tok": "tok.keyauth"}
    assert path.stat().st_mode & 0o777 == 0o600  # TLS-ALPN-01 challenge keys go in here too


async def test_a_worker_that_never_takes_it_fails_the_order_and_a_silent_one_is_not_signalled(tmp_path: Path) -> None:
    path = tmp_path / "acme.json"
    stuck, silent = StandIn(0, takes=False), StandIn(1, answers=False)
    fan = WorkerFanout(path, [stuck, silent], asyncio.get_running_loop())
    fan.tokens["tok"] = "tok.keyauth"
    # from the issuance thread, as the renewer's responder calls it: raises, so no validation is asked
    with pytest.raises(AcmeError, match="challenge not in every worker: worker 0 did not take ACME generation 1"):
        await asyncio.to_thread(fan.challenges_changed)
    assert stuck.signals and silent.signals == []
