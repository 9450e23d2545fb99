"""When to ask the ACME CA for a certificate: a pure decision from the kept state and the time.

No I/O here: `next_step(state, now, rand)` says "issue now" or "wait N seconds", and
`after_success` / `after_failure` return the next state. The asyncio adapter (proxyd/acme_task.py)
does the HTTP and keeps the state in the state dir, so a restart resumes the same schedule.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

#: a certificate is renewed when this share of its lifetime has passed (Let's Encrypt's advice)
RENEW_AT = 2 / 3
#: the first retry after a failure, doubled per further failure up to BACKOFF_MAX
BACKOFF_BASE = 60.0
#: six hours: a CA that is down for a day is asked a handful of times, not thousands
BACKOFF_MAX = 6 * 3600.0
#: up to this share is added at random so that many proxies behind one CA do not retry in step
JITTER = 0.25
#: Degraded when the certificate expires sooner than this and renewal has failed
DEGRADED_BEFORE = 14 * 86400.0


@dataclass(frozen=True)
class AcmeState:
    """What survives a restart: the current certificate's lifetime and the last attempt."""

    not_before: float | None = None
    not_after: float | None = None
    issuer: str | None = None
    last_attempt: float | None = None
    last_error: str | None = None
    failures: int = 0
    #: no request to the CA before this time (backoff, or the CA's Retry-After)
    retry_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AcmeState:
        raw = json.loads(text)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


def renew_at(state: AcmeState) -> float | None:
    if state.not_before is None or state.not_after is None:
        return None
    return state.not_before + RENEW_AT * (state.not_after - state.not_before)


def next_step(state: AcmeState, now: float) -> float:
    """Seconds to wait before the next request to the CA; 0: issue now."""
    due = renew_at(state)
    at = now if due is None else due
    if state.retry_at is not None:
        at = max(at, state.retry_at)
    return max(0.0, at - now)


def after_success(state: AcmeState, now: float, not_before: float, not_after: float, issuer: str) -> AcmeState:
    return AcmeState(not_before=not_before, not_after=not_after, issuer=issuer, last_attempt=now)


def after_failure(
    state: AcmeState, now: float, error: str, rand: float, retry_after: float | None = None
) -> AcmeState:
    """rand in [0, 1) picks the jitter; retry_after (seconds) is the CA's word and wins if longer."""
    failures = state.failures + 1
    wait = min(BACKOFF_BASE * 2 ** (failures - 1), BACKOFF_MAX) * (1 + JITTER * rand)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return replace(state, last_attempt=now, last_error=error, failures=failures, retry_at=now + wait)


def degraded(state: AcmeState, now: float) -> bool:
    """Renewal keeps failing and the certificate (if any) runs out within DEGRADED_BEFORE."""
    if state.failures == 0:
        return False
    return state.not_after is None or state.not_after - now < DEGRADED_BEFORE
