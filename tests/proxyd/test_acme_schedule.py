"""The ACME schedule is pure: state + time in, wait/issue out."""

from proxyd.acme_schedule import (
    BACKOFF_BASE,
    BACKOFF_MAX,
    DEGRADED_BEFORE,
    AcmeState,
    after_failure,
    after_success,
    degraded,
    next_step,
)


def test_no_certificate_issues_now_and_a_fresh_one_waits_for_two_thirds():
    assert next_step(AcmeState(), 1000.0) == 0
    s = after_success(AcmeState(), 1000.0, not_before=1000.0, not_after=1000.0 + 90 * 86400, issuer="CN=x")
    assert next_step(s, 1000.0) == 60 * 86400
    assert next_step(s, 1000.0 + 61 * 86400) == 0


def test_failures_back_off_doubling_with_jitter_up_to_the_cap():
    s = AcmeState()
    waits = []
    for _ in range(12):
        s = after_failure(s, 0.0, "down", rand=0.0)
        waits.append(next_step(s, 0.0))
    assert waits[:3] == [BACKOFF_BASE, 2 * BACKOFF_BASE, 4 * BACKOFF_BASE]
    assert waits[-1] == BACKOFF_MAX
    jittered = after_failure(AcmeState(), 0.0, "down", rand=0.999)
    assert BACKOFF_BASE < next_step(jittered, 0.0) < 1.25 * BACKOFF_BASE


def test_the_cas_retry_after_wins_when_longer_and_success_clears_the_failures():
    s = after_failure(AcmeState(), 0.0, "urn:ietf:params:acme:error:rateLimited", rand=0.0, retry_after=3600)
    assert next_step(s, 0.0) == 3600
    assert after_failure(AcmeState(), 0.0, "x", rand=0.0, retry_after=1).retry_at == BACKOFF_BASE
    ok = after_success(s, 10.0, 10.0, 100.0, "CN=x")
    assert (ok.failures, ok.last_error, ok.retry_at) == (0, None, None)


def test_degraded_only_when_renewal_fails_and_expiry_is_near():
    now = 1e9
    near = AcmeState(not_before=now - 80 * 86400, not_after=now + DEGRADED_BEFORE - 1)
    far = AcmeState(not_before=now, not_after=now + 60 * 86400)
    assert not degraded(near, now)
    assert degraded(after_failure(near, now, "x", 0.0), now)
    assert not degraded(after_failure(far, now, "x", 0.0), now)
    assert degraded(after_failure(AcmeState(), now, "x", 0.0), now)  # never issued at all


def test_state_survives_a_round_trip_through_json():
    s = after_failure(AcmeState(not_before=1.0, not_after=2.0, issuer="CN=x"), 5.0, "e", 0.5, 10)
    assert AcmeState.from_json(s.to_json()) == s
