"""RetryInterceptor: attempts, backoff on the engine's clock, events, what is retried."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from stageflow import (
    CircuitBreakerPolicy,
    CircuitOpenError,
    Engine,
    InvalidOutputError,
    LoopClock,
    Pipeline,
    RetryInterceptor,
    RetryPolicy,
    StageContext,
    StageFailedError,
    StageOutput,
    StageStatus,
)
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import noop, run


class Flaky:
    """A stage failing with the given errors, attempt after attempt, then succeeding.

    Records each call's attempt number and its start on the loop's clock.
    """

    def __init__(self, *errors: BaseException | None, duration: float = 0.0) -> None:
        self.errors = errors
        self.duration = duration
        self.attempts: list[int] = []
        self.starts: list[float] = []

    async def __call__(self, ctx: StageContext) -> dict[str, int]:
        self.attempts.append(ctx.attempt)
        self.starts.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.duration)
        n = len(self.attempts)
        error = self.errors[n - 1] if n <= len(self.errors) else None
        if error is not None:
            raise error
        return {"attempt": ctx.attempt}

    @property
    def gaps(self) -> list[float]:
        """Time between consecutive attempt starts."""
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


def one_stage(stage: Callable[..., Any], **options: Any) -> Any:
    return Pipeline().with_stage("s", stage, **options).build()


class TestAttempts:
    def test_a_stage_that_fails_then_succeeds_completes_and_counts_its_attempts(self) -> None:
        stage = Flaky(ConnectionError("a"), ConnectionError("b"))

        result = run(one_stage(stage, retry=RetryPolicy(attempts=5, base=0)))

        assert result["s"].ok
        assert result["s"].attempts == 3
        assert result["s"].data == {"attempt": 3}

    def test_the_stage_sees_its_attempt_number(self) -> None:
        stage = Flaky(OSError(), OSError(), OSError())

        run(one_stage(stage, retry=RetryPolicy(attempts=4, base=0)))

        assert stage.attempts == [1, 2, 3, 4]

    def test_when_attempts_run_out_the_last_error_is_the_stages(self) -> None:
        errors = [ConnectionError(f"try {n}") for n in (1, 2, 3)]
        stage = Flaky(*errors)

        result = run(one_stage(stage, retry=RetryPolicy(attempts=3, base=0)))

        assert result["s"].status is StageStatus.FAILED
        assert result["s"].error is errors[2]
        assert result["s"].attempts == 3

    def test_one_attempt_means_no_retry(self) -> None:
        stage = Flaky(ConnectionError())
        graph = one_stage(stage, retry=RetryPolicy(attempts=1))

        result = run(graph)

        assert stage.attempts == [1]
        assert result["s"].attempts == 1
        assert Engine().calls(graph)[0] is graph["s"].call  # not even wrapped

    def test_retry_given_as_a_number_retries_that_many_attempts(self) -> None:
        stage = Flaky(*[ValueError()] * 5)

        result = run(one_stage(stage, retry=3))

        assert result["s"].attempts == 3
        assert stage.gaps == pytest.approx([0.1, 0.2])  # RetryPolicy's default backoff

    def test_a_success_on_the_first_attempt_is_one_attempt(self) -> None:
        result = run(one_stage(Flaky(), retry=RetryPolicy(attempts=5)))

        assert result["s"].attempts == 1

    def test_a_sync_stage_is_retried_too(self) -> None:
        seen: list[int] = []

        def sync(ctx: StageContext) -> dict[str, int]:
            seen.append(ctx.attempt)
            if ctx.attempt < 3:
                raise ConnectionError("down")
            return {"ok": 1}

        result = run(one_stage(sync, retry=RetryPolicy(attempts=3, base=0.5)))

        assert result["s"].ok
        assert seen == [1, 2, 3]


class TestBackoff:
    @pytest.mark.parametrize(
        "policy",
        [
            RetryPolicy(attempts=4, backoff="fixed", base=0.5),
            RetryPolicy(attempts=5, backoff="linear", base=0.25),
            RetryPolicy(attempts=6, backoff="exponential", base=0.5, multiplier=3, max_delay=8),
        ],
    )
    def test_attempts_start_after_the_previous_one_ends_plus_the_backoff(
        self, policy: RetryPolicy
    ) -> None:
        stage = Flaky(*[OSError()] * 10, duration=1.0)

        result = run(one_stage(stage, retry=policy))

        assert stage.gaps == [1.0 + d for d in policy.delays()]
        assert result.duration == policy.attempts * 1.0 + sum(policy.delays())

    def test_jitter_from_a_seeded_rng_keeps_each_delay_between_zero_and_the_backoff(
        self,
    ) -> None:
        policy = RetryPolicy(attempts=8, base=1, multiplier=2, max_delay=20, jitter=True)
        stage = Flaky(*[OSError()] * 10)
        sink = RecordingSink()
        engine = Engine(sink=sink, interceptors=[RetryInterceptor(rng=random.Random(1234))])

        run(one_stage(stage, retry=policy), engine)

        unjittered = list(policy.delays())
        delays = [e.data["delay"] for e in sink.of_type("stage.retrying")]
        assert all(0 <= d <= u for d, u in zip(delays, unjittered, strict=True))
        assert stage.gaps == pytest.approx(delays)
        assert delays != unjittered
        replay = random.Random(1234)
        assert delays == [replay.uniform(0, u) for u in unjittered]

    def test_backoff_waits_on_the_engines_clock(self) -> None:
        class Clock(LoopClock):
            def __init__(self) -> None:
                self.slept: list[float] = []

            def monotonic(self) -> float:
                return asyncio.get_running_loop().time()

            def wall(self) -> float:
                return 0.0

            async def sleep(self, seconds: float) -> None:
                self.slept.append(seconds)

        clock = Clock()
        policy = RetryPolicy(attempts=4, backoff="linear", base=10)

        result = run(one_stage(Flaky(*[OSError()] * 3), retry=policy), Engine(clock=clock))

        assert result["s"].ok
        assert clock.slept == [10, 20, 30]
        assert result.duration == 0  # the clock did the waiting, not the loop


class TestRetryEvents:
    def test_each_retry_is_announced_with_attempt_delay_error_and_message(self) -> None:
        sink = RecordingSink()
        stage = Flaky(ConnectionError("refused"), TimeoutError("slow"))
        policy = RetryPolicy(attempts=3, backoff="linear", base=0.5)

        run(one_stage(stage, retry=policy), Engine(sink=sink))

        retrying = sink.of_type("stage.retrying")
        assert [dict(e.data) for e in retrying] == [
            {"attempt": 2, "delay": 0.5, "error": "ConnectionError", "message": "refused"},
            {"attempt": 3, "delay": 1.0, "error": "TimeoutError", "message": "slow"},
        ]
        assert all(e.stage == "s" for e in retrying)
        assert sink.types("s") == [
            "stage.started",
            "stage.retrying",
            "attempt.started",
            "stage.retrying",
            "attempt.started",
            "stage.completed",
        ]

    def test_each_retried_attempt_is_marked_when_it_starts_after_the_backoff(self) -> None:
        class Timed(RecordingSink):  # when each event came, on the loop's (virtual) clock
            def __init__(self) -> None:
                super().__init__()
                self.times: dict[int, float] = {}

            def try_emit(self, event: Any) -> None:
                super().try_emit(event)
                self.times[event.seq] = asyncio.get_running_loop().time()

        sink = Timed()
        stage = Flaky(OSError(), OSError())

        run(
            one_stage(stage, retry=RetryPolicy(attempts=3, backoff="fixed", base=2)),
            Engine(sink=sink),
        )

        started = sink.of_type("attempt.started")
        assert [(e.stage, e.attempt, dict(e.data)) for e in started] == [
            ("s", 2, {"attempts": 3}),
            ("s", 3, {"attempts": 3}),
        ]
        retrying = sink.of_type("stage.retrying")
        waited = [
            sink.times[b.seq] - sink.times[a.seq] for a, b in zip(retrying, started, strict=True)
        ]
        assert waited == [2.0, 2.0]  # once the backoff is over, as the attempt starts
        assert [sink.times[e.seq] for e in started] == stage.starts[1:]

    def test_a_retrying_event_carries_the_attempt_that_failed(self) -> None:
        sink = RecordingSink()
        stage = Flaky(OSError(), OSError(), OSError())

        run(one_stage(stage, retry=RetryPolicy(attempts=4, base=0)), Engine(sink=sink))

        # Event.attempt is "the stage's attempt": the one that just failed, one before
        # the attempt announced in the data.
        assert [(e.attempt, e.data["attempt"]) for e in sink.of_type("stage.retrying")] == [
            (1, 2),
            (2, 3),
            (3, 4),
        ]

    def test_the_terminal_event_reports_the_last_attempt(self) -> None:
        sink = RecordingSink()

        run(one_stage(Flaky(OSError()), retry=RetryPolicy(base=0)), Engine(sink=sink))

        (completed,) = sink.of_type("stage.completed")
        assert completed.attempt == 2


class TestWhatIsRetried:
    def test_an_error_outside_retry_on_passes_straight_through_after_one_attempt(self) -> None:
        bug = KeyError("bug")
        stage = Flaky(bug)
        policy = RetryPolicy(attempts=5, retry_on=(ConnectionError,))

        result = run(one_stage(stage, retry=policy))

        assert result["s"].error is bug
        assert result["s"].attempts == 1
        assert result.duration == 0

    def test_a_later_non_retryable_error_stops_the_retries_at_once(self) -> None:
        stage = Flaky(ConnectionError(), ValueError("fatal"), ConnectionError())
        policy = RetryPolicy(attempts=5, base=0, retry_on=(ConnectionError,))

        result = run(one_stage(stage, retry=policy))

        assert isinstance(result["s"].error, ValueError)
        assert stage.attempts == [1, 2]

    def test_give_up_on_overrides_retry_on(self) -> None:
        stage = Flaky(PermissionError("no"))
        policy = RetryPolicy(attempts=5, retry_on=(OSError,), give_up_on=(PermissionError,))

        result = run(one_stage(stage, retry=policy))

        assert isinstance(result["s"].error, PermissionError)
        assert result["s"].attempts == 1

    def test_an_invalid_output_is_not_retried_by_default(self) -> None:
        calls = 0

        async def returns_junk(ctx: StageContext) -> int:
            nonlocal calls
            calls += 1
            return 42

        result = run(one_stage(returns_junk, retry=RetryPolicy(attempts=4, base=0)))

        assert isinstance(result["s"].error, InvalidOutputError)
        assert calls == 1

    def test_an_open_circuit_is_not_retried_by_default(self) -> None:
        calls = 0

        async def down(ctx: StageContext) -> None:
            nonlocal calls
            calls += 1
            raise ConnectionError("down")

        graph = one_stage(
            down,
            retry=RetryPolicy(attempts=5, base=0),
            circuit_breaker=CircuitBreakerPolicy(failure_threshold=2, recovery_timeout=60),
        )

        result = run(graph)

        assert isinstance(result["s"].error, CircuitOpenError)
        assert calls == 2
        assert result["s"].attempts == 3  # two calls, then the breaker refused the third

    def test_a_returned_failure_is_not_retried(self) -> None:
        # StageOutput.fail is the stage's considered verdict, not an exception: retrying
        # applies to raised errors only.
        calls = 0

        async def gives_up(ctx: StageContext) -> StageOutput:
            nonlocal calls
            calls += 1
            return StageOutput.fail("quota exhausted")

        result = run(one_stage(gives_up, retry=RetryPolicy(attempts=4, base=0)))

        assert isinstance(result["s"].error, StageFailedError)
        assert result["s"].attempts == 1
        assert calls == 1

    def test_a_cancelled_run_is_not_retried(self) -> None:
        stage = Flaky(duration=10)

        result = run(one_stage(stage, retry=RetryPolicy(attempts=5, base=0)), timeout=3)

        assert result["s"].status is StageStatus.CANCELLED
        assert stage.attempts == [1]
        assert result.duration == 3


class TestDeadline:
    def test_no_attempt_begins_at_or_after_the_deadline(self) -> None:
        stage = Flaky(*[OSError()] * 20)
        policy = RetryPolicy(attempts=20, backoff="fixed", base=1, deadline=3.5)

        result = run(one_stage(stage, retry=policy))

        assert stage.starts == [0, 1, 2, 3]
        assert result["s"].attempts == 4
        assert isinstance(result["s"].error, OSError)
        assert result.duration == 3  # it did not sleep a backoff that leads nowhere

    def test_an_attempt_that_would_begin_exactly_at_the_deadline_does_not(self) -> None:
        stage = Flaky(*[OSError()] * 20)
        policy = RetryPolicy(attempts=20, backoff="fixed", base=1, deadline=3)

        run(one_stage(stage, retry=policy))

        assert stage.starts == [0, 1, 2]

    def test_the_deadline_counts_from_the_first_attempts_start_including_its_duration(
        self,
    ) -> None:
        stage = Flaky(*[OSError()] * 20, duration=1)
        policy = RetryPolicy(attempts=20, backoff="fixed", base=1, deadline=3.5)

        graph = (
            Pipeline()
            .with_stage("before", Flaky(duration=5))
            .with_stage("s", stage, dependencies=["before"], retry=policy)
            .build()
        )
        run(graph)

        assert stage.starts == [5, 7]

    def test_a_running_attempt_is_not_cut_by_the_deadline(self) -> None:
        stage = Flaky(OSError(), duration=4)
        policy = RetryPolicy(attempts=3, backoff="fixed", base=0.5, deadline=5)

        result = run(one_stage(stage, retry=policy))

        assert result["s"].ok
        assert stage.starts == [0, 4.5]
        assert result.duration == 8.5


class TestEngineDefaultRetry:
    def test_the_engine_policy_applies_to_stages_without_the_option(self) -> None:
        stage = Flaky(OSError(), OSError())

        result = run(one_stage(stage), Engine(retry=RetryPolicy(attempts=3, base=0)))

        assert result["s"].ok
        assert result["s"].attempts == 3

    def test_the_stage_option_overrides_the_engine_policy(self) -> None:
        once = Flaky(OSError())
        twice = Flaky(OSError(), OSError())
        graph = (
            Pipeline()
            .with_stage("once", once, retry=1)
            .with_stage("twice", twice, retry=RetryPolicy(attempts=3, base=0))
            .build()
        )

        result = run(graph, Engine(retry=RetryPolicy(attempts=10, base=0), fail_fast=False))

        assert once.attempts == [1]
        assert result["twice"].ok
        assert twice.attempts == [1, 2, 3]

    def test_by_default_nothing_is_retried(self) -> None:
        stage = Flaky(OSError())

        result = run(one_stage(stage))

        assert stage.attempts == [1]
        assert result["s"].attempts == 1


class TestFirstAttemptIsAPlainCall:
    def test_a_stage_without_resilience_options_is_called_directly(self) -> None:
        graph = Pipeline().with_stage("a", noop).with_stage("b", noop, dependencies=["a"]).build()

        calls = Engine().calls(graph)

        assert calls == (graph["a"].call, graph["b"].call)

    def test_a_stage_with_retry_is_wrapped_and_others_are_not(self) -> None:
        graph = Pipeline().with_stage("a", noop).with_stage("b", noop, retry=2).build()

        calls = Engine().calls(graph)

        assert calls[0] is graph["a"].call
        assert calls[1] is not graph["b"].call

    def test_the_first_attempt_reaches_the_stage_without_yielding_to_the_loop(self) -> None:
        # "No await for the loop until something fails": a callback queued behind the
        # stage's worker does not get to run before the stage, through retry and timeout.
        order: list[str] = []

        async def stage(ctx: StageContext) -> None:
            order.append("stage")

        graph = one_stage(stage, retry=RetryPolicy(attempts=3), timeout=5)

        async def main() -> None:
            engine = Engine()
            loop = asyncio.get_running_loop()
            run_task = loop.create_task(engine.run(graph))
            await asyncio.sleep(0)  # the run task has now started its stage's worker
            loop.call_soon(order.append, "other")
            await run_task

        run_virtual(main)

        assert order[0] == "stage"
