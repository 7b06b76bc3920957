"""Laws of retrying: for any policy and any sequence of attempt outcomes, the engine does
what a hand-played model of the policy predicts: how many attempts, when each starts,
how long it waits between them, and how the stage ends."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stageflow import RetryPolicy, StageStatus

from ._resilience import (
    RetryCase,
    backoff,
    expected_retry,
    retry_cases,
    retry_policies,
    run_retry_case,
)

EPS = 1e-9


class TestRetryMatchesThePolicy:
    @given(case=retry_cases())
    def test_the_number_of_attempts_is_the_models(self, case: RetryCase) -> None:
        expected = expected_retry(case)

        observed = run_retry_case(case)

        n = len(expected.starts)
        assert observed.attempts_seen == list(range(1, n + 1))
        assert observed.result["s"].attempts == n
        assert 1 <= n <= case.policy.attempts

    @given(case=retry_cases())
    def test_attempts_start_when_the_model_says(self, case: RetryCase) -> None:
        expected = expected_retry(case)

        observed = run_retry_case(case)

        assert observed.starts == pytest.approx(expected.starts, abs=EPS)
        if case.policy.deadline is not None:  # no attempt begins at or after the deadline
            assert all(t < case.policy.deadline for t in observed.starts)

    @given(case=retry_cases())
    def test_each_wait_lies_between_zero_and_the_unjittered_backoff(self, case: RetryCase) -> None:
        expected = expected_retry(case)

        observed = run_retry_case(case)

        starts = observed.starts
        waits = [starts[n] - starts[n - 1] - case.duration(n) for n in range(1, len(starts))]
        announced = [e.data["delay"] for e in observed.sink.of_type("stage.retrying")]
        assert waits == pytest.approx(announced, abs=EPS)
        for wait, unjittered in zip(waits, expected.unjittered, strict=True):
            assert -EPS <= wait <= unjittered + EPS
            if not case.policy.jitter:
                assert wait == pytest.approx(unjittered, abs=EPS)
        assert waits == pytest.approx(expected.delays, abs=EPS)

    @given(case=retry_cases())
    def test_the_stage_completes_iff_an_attempt_within_policy_succeeds(
        self, case: RetryCase
    ) -> None:
        expected = expected_retry(case)

        observed = run_retry_case(case)

        stage = observed.result["s"]
        if expected.error is None:
            assert stage.status is StageStatus.COMPLETED
            assert stage.data == {"attempt": len(expected.starts)}
        else:
            assert stage.status is StageStatus.FAILED
            assert type(stage.error) is expected.error
        assert observed.result.duration == pytest.approx(expected.duration, abs=EPS)

    @given(case=retry_cases())
    def test_every_retry_is_announced_once_before_it_starts(self, case: RetryCase) -> None:
        observed = run_retry_case(case)

        retrying = observed.sink.of_type("stage.retrying")
        assert [e.data["attempt"] for e in retrying] == observed.attempts_seen[1:]
        for event in retrying:
            assert event.data["error"] in {"Retryable", "StageTimeoutError"}
            assert event.data["message"]


class TestPolicyArithmetic:
    @given(policy=retry_policies())
    def test_delays_are_the_documented_backoff_capped_by_max_delay(
        self, policy: RetryPolicy
    ) -> None:
        delays = list(policy.delays())

        assert delays == [backoff(policy, n) for n in range(1, policy.attempts)]
        assert all(0 <= d <= policy.max_delay for d in delays)

    @given(policy=retry_policies(), seed=st.integers(0, 2**32 - 1))
    def test_a_jittered_delay_never_exceeds_the_unjittered_one(
        self, policy: RetryPolicy, seed: int
    ) -> None:
        rng = random.Random(seed)
        jittered = policy.with_options(jitter=True)

        for n, unjittered in enumerate(policy.delays(), start=1):
            assert 0 <= jittered.delay(n, rng) <= unjittered
