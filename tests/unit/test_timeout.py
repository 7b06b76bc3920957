"""TimeoutInterceptor: each attempt is limited; the stage fails with StageTimeoutError.

Everything runs on virtual time except the sync-stage tests, which need a real thread
that cannot be killed and therefore a real loop (each takes a few tens of milliseconds).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from stageflow import (
    Engine,
    Pipeline,
    RetryPolicy,
    RunStatus,
    StageContext,
    StageStatus,
    StageTimeoutError,
    TimeoutInterceptor,
)
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import noop, run, sleeper


class TestTimeoutOfOneAttempt:
    def test_an_attempt_exceeding_the_limit_fails_at_exactly_the_limit(self) -> None:
        graph = Pipeline().with_stage("slow", sleeper(10), timeout=2.5).build()

        result = run(graph)

        stage = result["slow"]
        assert stage.status is StageStatus.FAILED
        assert isinstance(stage.error, StageTimeoutError)
        assert stage.duration == 2.5
        assert result.duration == 2.5

    def test_the_timeout_error_names_the_stage_the_limit_and_the_attempt(self) -> None:
        graph = Pipeline().with_stage("slow", sleeper(10), timeout=2.5).build()

        error = run(graph)["slow"].error

        assert isinstance(error, StageTimeoutError)
        assert isinstance(error, TimeoutError)
        assert (error.stage, error.timeout, error.attempt) == ("slow", 2.5, 1)
        assert "'slow'" in str(error)
        assert "2.5s" in str(error)
        assert "attempt 1" in str(error)

    def test_a_stage_within_its_limit_completes_with_its_output(self) -> None:
        graph = Pipeline().with_stage("quick", sleeper(1.5, x=1), timeout=2).build()

        result = run(graph)

        assert result["quick"].ok
        assert result["quick"].data == {"x": 1}

    def test_a_timeout_error_raised_by_the_stage_itself_is_not_a_stage_timeout(self) -> None:
        async def upstream_timeout(ctx: StageContext) -> None:
            await asyncio.sleep(1)
            raise TimeoutError("the upstream API timed out")

        graph = Pipeline().with_stage("call", upstream_timeout, timeout=5).build()

        error = run(graph)["call"].error

        assert type(error) is TimeoutError
        assert str(error) == "the upstream API timed out"

    def test_a_stage_own_shorter_asyncio_timeout_passes_through_unchanged(self) -> None:
        async def own_deadline(ctx: StageContext) -> None:
            async with asyncio.timeout(1):
                await asyncio.sleep(10)

        result = run(Pipeline().with_stage("s", own_deadline, timeout=5).build())

        assert type(result["s"].error) is TimeoutError
        assert result["s"].duration == 1


class TestEngineDefaultTimeout:
    def test_the_engine_default_applies_to_stages_without_the_option(self) -> None:
        graph = Pipeline().with_stage("slow", sleeper(10)).build()

        result = run(graph, Engine(stage_timeout=3))

        assert isinstance(result["slow"].error, StageTimeoutError)
        assert result["slow"].error.timeout == 3
        assert result.duration == 3

    def test_the_stage_option_overrides_the_engine_default(self) -> None:
        graph = (
            Pipeline()
            .with_stage("patient", sleeper(5, done=True), timeout=8)
            .with_stage("hasty", sleeper(5), timeout=1)
            .with_stage("default", sleeper(5))
            .build()
        )

        result = run(graph, Engine(stage_timeout=3, fail_fast=False))

        assert result["patient"].ok
        assert result["hasty"].error.timeout == 1  # type: ignore[union-attr]
        assert result["hasty"].duration == 1
        assert result["default"].error.timeout == 3  # type: ignore[union-attr]
        assert result["default"].duration == 3

    def test_without_a_limit_anywhere_a_stage_runs_as_long_as_it_takes(self) -> None:
        result = run(Pipeline().with_stage("s", sleeper(86_400)).build())

        assert result["s"].ok
        assert result.duration == 86_400

    def test_a_stage_without_timeout_gets_its_plain_call(self) -> None:
        graph = Pipeline().with_stage("a", noop).with_stage("b", noop, timeout=1).build()

        calls = Engine().calls(graph)

        assert calls[0] is graph["a"].call
        assert calls[1] is not graph["b"].call

    def test_an_explicit_interceptor_replaces_the_default_one(self) -> None:
        engine = Engine(interceptors=[TimeoutInterceptor(2)])

        result = run(Pipeline().with_stage("s", sleeper(5)).build(), engine)

        assert sum(isinstance(i, TimeoutInterceptor) for i in engine.interceptors) == 1
        assert result["s"].error.timeout == 2  # type: ignore[union-attr]


class TestTimeoutCancellation:
    def test_the_timed_out_attempt_is_cancelled_and_its_finally_runs(self) -> None:
        seen: list[str] = []

        async def slow(ctx: StageContext) -> None:
            try:
                await asyncio.sleep(10)
                seen.append("finished")
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            finally:
                seen.append("finally")

        result = run(Pipeline().with_stage("s", slow, timeout=1).build())

        assert isinstance(result["s"].error, StageTimeoutError)
        assert seen == ["cancelled", "finally"]

    def test_no_task_outlives_a_run_with_timeouts(self) -> None:
        async def spawns(ctx: StageContext) -> None:
            async with asyncio.TaskGroup() as group:
                group.create_task(asyncio.sleep(50))
                group.create_task(asyncio.sleep(60))

        graph = (
            Pipeline()
            .with_stage("a", spawns, timeout=1, retry=RetryPolicy(attempts=3, base=0.5))
            .with_stage("b", sleeper(30), timeout=2)
            .build()
        )

        async def main() -> tuple[Any, set[asyncio.Task[Any]]]:
            result = await Engine(fail_fast=False).run(graph)
            return result, asyncio.all_tasks()

        result, tasks = run_virtual(main)

        assert result.status is RunStatus.FAILED
        assert result["a"].attempts == 3
        assert len(tasks) == 1  # only main itself

    def test_a_run_timeout_still_cancels_a_stage_under_a_stage_timeout(self) -> None:
        graph = Pipeline().with_stage("s", sleeper(10), timeout=5).build()

        result = run(graph, timeout=2)

        assert result.status is RunStatus.CANCELLED
        assert result["s"].status is StageStatus.CANCELLED
        assert result.duration == 2


class TestTimeoutWithRetry:
    def test_a_timed_out_attempt_followed_by_a_success_completes_the_stage(self) -> None:
        async def slow_then_fast(ctx: StageContext) -> dict[str, int]:
            await asyncio.sleep(10 if ctx.attempt == 1 else 0.5)
            return {"attempt": ctx.attempt}

        graph = (
            Pipeline()
            .with_stage("s", slow_then_fast, timeout=2, retry=RetryPolicy(backoff="fixed", base=1))
            .build()
        )

        result = run(graph)

        assert result["s"].ok
        assert result["s"].data == {"attempt": 2}
        assert result["s"].attempts == 2
        assert result.duration == 2 + 1 + 0.5

    def test_each_timeout_error_names_the_attempt_that_timed_out(self) -> None:
        sink = RecordingSink()
        graph = (
            Pipeline()
            .with_stage("s", sleeper(10), timeout=1, retry=RetryPolicy(attempts=3, base=0))
            .build()
        )

        result = run(graph, Engine(sink=sink))

        assert result["s"].error.attempt == 3  # type: ignore[union-attr]
        messages = [e.data["message"] for e in sink.of_type("stage.retrying")]
        assert messages == [
            "stage 's' timed out after 1s (attempt 1)",
            "stage 's' timed out after 1s (attempt 2)",
        ]

    @pytest.mark.parametrize(
        ("policy", "limit"),
        [
            (RetryPolicy(attempts=1), 2.0),
            (RetryPolicy(attempts=3, backoff="fixed", base=0.5), 1.0),
            (RetryPolicy(attempts=4, backoff="linear", base=0.25), 0.5),
            (RetryPolicy(attempts=5, backoff="exponential", base=1, max_delay=3), 2.0),
        ],
    )
    def test_a_stage_that_always_times_out_fails_after_exactly_attempts_attempts(
        self, policy: RetryPolicy, limit: float
    ) -> None:
        calls = 0

        async def hangs(ctx: StageContext) -> None:
            nonlocal calls
            calls += 1
            await asyncio.Event().wait()

        graph = Pipeline().with_stage("s", hangs, timeout=limit, retry=policy).build()

        result = run(graph)

        assert calls == policy.attempts
        assert result["s"].attempts == policy.attempts
        assert isinstance(result["s"].error, StageTimeoutError)
        assert result.duration == policy.attempts * limit + sum(policy.delays())

    def test_retrying_never_reruns_completed_dependencies(self) -> None:
        calls = {"fetch": 0, "parse": 0, "store": 0}

        async def fetch(ctx: StageContext) -> dict[str, str]:
            calls["fetch"] += 1
            return {"page": "<html>"}

        async def parse(ctx: StageContext) -> dict[str, Any]:
            calls["parse"] += 1
            await asyncio.sleep(10 if ctx.attempt < 3 else 0)
            return {"title": ctx.inputs["fetch"]["page"]}

        async def store(ctx: StageContext) -> None:
            calls["store"] += 1

        graph = (
            Pipeline()
            .with_stage("fetch", fetch)
            .with_stage("parse", parse, dependencies=["fetch"], timeout=1, retry=3)
            .with_stage("store", store, dependencies=["parse"])
            .build()
        )

        result = run(graph)

        assert result.ok
        assert calls == {"fetch": 1, "parse": 3, "store": 1}
        assert result["parse"].data == {"title": "<html>"}


class TestTimeoutOfSyncStages:
    """A sync stage runs in a thread that cannot be stopped: these run on a real loop."""

    LIMIT = 0.05

    def test_a_blocked_sync_stage_is_reported_timed_out_at_the_limit(self) -> None:
        release = threading.Event()

        def blocked(ctx: StageContext) -> dict[str, str]:
            release.wait(2)
            return {"late": "result"}

        graph = Pipeline().with_stage("sync", blocked, timeout=self.LIMIT).build()

        async def main() -> tuple[Any, bool]:
            try:
                result = await Engine().run(graph)
                still_blocked = not release.is_set()
                return result, still_blocked
            finally:
                release.set()

        began = time.monotonic()
        result, still_blocked = asyncio.run(main())

        assert still_blocked  # the run ended while the thread was still blocked
        assert isinstance(result["sync"].error, StageTimeoutError)
        assert self.LIMIT <= result["sync"].duration < 1.0
        assert time.monotonic() - began < 2  # never waited for release.wait(2)
        assert result["sync"].data == {}

    def test_the_next_attempt_neither_waits_for_nor_hears_from_the_stale_thread(self) -> None:
        sink = RecordingSink()
        release_stale = threading.Event()
        stale_done = threading.Event()
        starts: dict[int, float] = {}
        released_by_retry = []

        def stage(ctx: StageContext) -> dict[str, int]:
            # Attempt 1 from when the engine called it (on the loop; its thread may start
            # later), attempt 2 from when its thread ran: the gap is at least the timeout.
            starts[ctx.attempt] = ctx.started if ctx.attempt == 1 else time.monotonic()
            if ctx.attempt == 1:
                try:
                    release_stale.wait(2)
                    ctx.emit("stale", attempt=1)
                    return {"from_attempt": 1}
                finally:
                    stale_done.set()
            # Attempt 2 only began because the engine did not wait for attempt 1: it frees
            # the stale thread and waits until that thread has emitted and returned.
            released_by_retry.append(not release_stale.is_set())
            release_stale.set()
            assert stale_done.wait(2)
            ctx.emit("current", attempt=2)
            return {"from_attempt": 2}

        graph = (
            Pipeline()
            .with_stage(
                "sync",
                stage,
                timeout=self.LIMIT,
                retry=RetryPolicy(attempts=2, backoff="fixed", base=0),
            )
            .build()
        )

        async def main() -> Any:
            try:
                result = await Engine(sink=sink).run(graph)
                # Let whatever the stale thread scheduled on the loop run before looking.
                for _ in range(5):
                    await asyncio.sleep(0)
                return result
            finally:
                release_stale.set()

        result = asyncio.run(main())

        assert released_by_retry == [True]
        assert self.LIMIT <= starts[2] - starts[1] < 1.0
        (retrying,) = sink.of_type("stage.retrying")
        assert retrying.data["error"] == "StageTimeoutError"
        assert result["sync"].ok
        assert result["sync"].attempts == 2
        assert result["sync"].data == {"from_attempt": 2}  # the late result never landed
        custom = [(e.type, e.attempt) for e in sink.events if e.type.startswith("custom.")]
        assert custom == [("custom.current", 2)]  # the stale emit was dropped

    def test_a_timed_out_attempt_is_silenced_during_the_backoff_before_the_next(self) -> None:
        # Reported timed out means over: its thread may not speak for the stage any more,
        # not even while the retry waits its backoff and no newer attempt has begun yet.
        class Signalling(RecordingSink):
            def __init__(self) -> None:
                super().__init__()
                self.retrying = threading.Event()

            def try_emit(self, event: Any) -> None:
                super().try_emit(event)
                if event.type == "stage.retrying":
                    self.retrying.set()

        sink = Signalling()
        stale_done = threading.Event()

        def stage(ctx: StageContext) -> dict[str, int]:
            if ctx.attempt == 1:
                try:
                    sink.retrying.wait(2)  # the attempt has been reported timed out
                    ctx.emit("stale")
                    return {"from_attempt": 1}
                finally:
                    stale_done.set()
            stale_done.wait(2)
            return {"from_attempt": 2}

        policy = RetryPolicy(attempts=2, backoff="fixed", base=0.2)
        graph = Pipeline().with_stage("sync", stage, timeout=self.LIMIT, retry=policy).build()

        async def main() -> Any:
            try:
                return await Engine(sink=sink).run(graph)
            finally:
                sink.retrying.set()

        result = asyncio.run(main())

        assert result["sync"].data == {"from_attempt": 2}
        assert [e.type for e in sink.events if e.type.startswith("custom.")] == []
