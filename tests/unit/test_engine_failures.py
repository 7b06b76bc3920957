"""Engine: failures, fail_fast, timeouts and cancellation (virtual time)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from stageflow import (
    Engine,
    InvalidOutputError,
    Pipeline,
    RunCancelledError,
    RunFailedError,
    RunResult,
    RunStatus,
    RunTimeoutError,
    StageCancelledError,
    StageFailedError,
    StageflowError,
    StageOutput,
    StageStatus,
)
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import failing, noop, run, sleeper


class TestEngineFailures:
    def test_a_raising_stage_fails_with_its_exception(self):
        error = ValueError("bad row 7")

        async def parse(ctx):
            raise error

        result = run(Pipeline().with_stage("parse", parse).build())

        assert result.status is RunStatus.FAILED
        assert result["parse"].status is StageStatus.FAILED
        assert result["parse"].error is error
        assert result["parse"].reason == "ValueError: bad row 7"
        assert result["parse"].attempts == 1
        assert result.error is error

    def test_stage_output_fail_fails_with_stage_failed_error(self):
        async def validate(ctx):
            return StageOutput.fail("3 rows rejected", rejected=3)

        result = run(Pipeline().with_stage("validate", validate).build())

        stage = result["validate"]
        assert result.status is RunStatus.FAILED
        assert stage.status is StageStatus.FAILED
        assert isinstance(stage.error, StageFailedError)
        assert stage.error.stage == "validate"
        assert stage.error.reason == "3 rows rejected"
        assert str(stage.error) == "stage 'validate' failed: 3 rows rejected"
        assert stage.reason == "3 rows rejected"
        assert stage.data == {"rejected": 3}

    def test_stage_output_fail_accepts_an_exception_as_reason(self):
        async def validate(ctx):
            return StageOutput.fail(KeyError("id"))

        result = run(Pipeline().with_stage("validate", validate).build())

        assert result["validate"].reason == "KeyError: 'id'"

    def test_dependents_of_a_failed_stage_are_skipped(self):
        graph = (
            Pipeline()
            .with_stage("a", failing())
            .with_stage("b", noop, dependencies=("a",))
            .with_stage("c", noop, dependencies=("b",))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert result["b"].status is StageStatus.SKIPPED
        assert result["b"].reason == "dependency 'a' failed"
        assert result["c"].status is StageStatus.SKIPPED
        assert result["c"].reason == "dependency 'b' was skipped"

    def test_the_first_error_is_the_runs_error(self):
        graph = (
            Pipeline()
            .with_stage("late", failing(2, "late"))
            .with_stage("early", failing(1, "early"))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert str(result.error) == "early"
        assert result.with_status(StageStatus.FAILED) == ("late", "early")

    def test_a_stage_raising_a_base_exception_ends_the_run_by_raising_it(self):
        class Fatal(BaseException):
            pass

        cleaned: list[str] = []

        async def fatal(ctx):
            await asyncio.sleep(1)
            raise Fatal

        async def holds(ctx):
            try:
                await asyncio.sleep(100)
            finally:
                cleaned.append(ctx.stage)

        graph = Pipeline().with_stage("fatal", fatal).with_stage("holds", holds).build()

        # timeout= only keeps a regression from hanging the suite.
        with pytest.raises(Fatal):
            run(graph, Engine(fail_fast=False), timeout=50)
        assert cleaned == ["holds"]


class TestEngineFailFast:
    def _graph(self):
        #  boom (fails at t=1)      slow (runs 10s) -> after_slow
        #  boom -> after_boom
        return (
            Pipeline()
            .with_stage("boom", failing(1))
            .with_stage("slow", sleeper(10, done=True))
            .with_stage("after_boom", noop, dependencies=("boom",))
            .with_stage("after_slow", noop, dependencies=("slow",))
            .build()
        )

    def test_fail_fast_cancels_running_stages_and_starts_no_new_ones(self):
        result = run(self._graph(), Engine(fail_fast=True))

        assert result.status is RunStatus.FAILED
        assert result["boom"].status is StageStatus.FAILED
        assert result["slow"].status is StageStatus.CANCELLED
        assert result["slow"].reason == "stage 'boom' failed (fail_fast)"
        assert result["slow"].ended == pytest.approx(1)
        assert result["after_boom"].status is StageStatus.SKIPPED
        assert result["after_slow"].status is StageStatus.SKIPPED
        assert result["after_slow"].reason == "not started: stage 'boom' failed (fail_fast)"
        assert result.duration == pytest.approx(1)

    def test_fail_fast_is_the_default(self):
        result = run(self._graph())

        assert result["slow"].status is StageStatus.CANCELLED

    def test_fail_fast_runs_the_finally_blocks_of_cancelled_stages(self):
        cleaned: list[str] = []

        async def holds_a_resource(ctx):
            try:
                await asyncio.sleep(10)
            finally:
                cleaned.append(ctx.stage)

        graph = (
            Pipeline()
            .with_stage("boom", failing(1))
            .with_stage("r1", holds_a_resource)
            .with_stage("r2", holds_a_resource)
            .build()
        )

        run(graph)

        assert sorted(cleaned) == ["r1", "r2"]

    def test_fail_fast_leaves_queued_stages_unstarted(self):
        calls: list[str] = []

        async def record(ctx):
            calls.append(ctx.stage)
            await asyncio.sleep(5)

        graph = (
            Pipeline()
            .with_stage("boom", failing(1))
            .with_stage("q1", record)
            .with_stage("q2", record)
            .build()
        )

        result = run(graph, Engine(max_parallel=2))

        assert calls == ["q1"]
        assert result["q1"].status is StageStatus.CANCELLED
        assert result["q2"].status is StageStatus.SKIPPED
        assert result["q2"].attempts == 0

    def test_without_fail_fast_independent_branches_complete(self):
        result = run(self._graph(), Engine(fail_fast=False))

        assert result.status is RunStatus.FAILED
        assert result["slow"].ok
        assert result["slow"].data == {"done": True}
        assert result["after_slow"].ok
        assert result.duration == pytest.approx(10)

    def test_without_fail_fast_exactly_the_descendants_are_skipped(self):
        graph = (
            Pipeline()
            .with_stage("root", noop)
            .with_stage("bad", failing(1), dependencies=("root",))
            .with_stage("child", noop, dependencies=("bad",))
            .with_stage("grandchild", noop, dependencies=("child", "side"))
            .with_stage("side", sleeper(3))
            .with_stage("side_child", noop, dependencies=("side",))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        skipped = set(result.with_status(StageStatus.SKIPPED))
        assert skipped == graph.descendants("bad") == {"child", "grandchild"}
        assert result.with_status(StageStatus.COMPLETED) == ("root", "side", "side_child")


class TestRaiseForStatus:
    def test_returns_the_result_itself_when_the_run_completed(self):
        result = run(Pipeline().with_stage("a", noop).build())

        assert result.raise_for_status() is result

    def test_raises_run_failed_error_naming_the_failed_stages(self):
        graph = (
            Pipeline("etl")
            .with_stage("a", failing(1, "first"))
            .with_stage("b", failing(2, "second"))
            .with_stage("c", noop)
            .build()
        )
        result = run(graph, Engine(fail_fast=False), run_id="r-7")

        with pytest.raises(RunFailedError) as info:
            result.raise_for_status()

        assert info.value.failed == ("a", "b")
        assert info.value.run_id == "r-7"
        assert info.value.__cause__ is result["a"].error
        assert "'r-7'" in str(info.value)
        assert "'etl'" in str(info.value)
        assert "a: ValueError: first" in str(info.value)
        assert "b: ValueError: second" in str(info.value)
        assert isinstance(info.value, StageflowError)

    def test_names_at_most_five_failures_in_the_message(self):
        pipeline = Pipeline()
        for i in range(7):
            pipeline = pipeline.with_stage(f"s{i}", failing())
        result = run(pipeline.build(), Engine(fail_fast=False))

        with pytest.raises(RunFailedError) as info:
            result.raise_for_status()

        assert len(info.value.failed) == 7
        assert "(and 2 more)" in str(info.value)
        assert "s5:" not in str(info.value)

    def test_raises_the_timeout_error_of_a_run_that_timed_out(self):
        result = run(Pipeline().with_stage("a", sleeper(10)).build(), timeout=1)

        with pytest.raises(RunTimeoutError) as info:
            result.raise_for_status()

        assert info.value is result.error
        assert isinstance(info.value, RunCancelledError)


class TestEngineTimeout:
    def test_a_run_past_its_timeout_ends_cancelled_with_a_timeout_error(self):
        graph = (
            Pipeline()
            .with_stage("quick", sleeper(1))
            .with_stage("long", sleeper(100))
            .with_stage("after", noop, dependencies=("long",))
            .build()
        )

        result = run(graph, timeout=5, run_id="r-1")

        assert result.status is RunStatus.CANCELLED
        assert isinstance(result.error, RunTimeoutError)
        assert isinstance(result.error, TimeoutError)
        assert result.error.timeout == 5
        assert result.error.run_id == "r-1"
        assert str(result.error) == "run 'r-1' exceeded its timeout of 5s"
        assert result.duration == pytest.approx(5)
        assert result["quick"].ok
        assert result["long"].status is StageStatus.CANCELLED
        assert result["long"].reason == "the run timed out (5s)"
        assert result["after"].status is StageStatus.SKIPPED
        assert result["after"].reason == "not started: the run timed out (5s)"
        assert len(result) == 3

    def test_a_run_within_its_timeout_is_unaffected(self):
        result = run(Pipeline().with_stage("a", sleeper(4, x=1)).build(), timeout=5)

        assert result.ok
        assert result["a"].data == {"x": 1}

    def test_a_stages_own_timeout_error_fails_only_that_stage(self):
        async def calls_a_slow_service(ctx):
            async with asyncio.timeout(1):
                await asyncio.sleep(10)

        result = run(
            Pipeline().with_stage("call", calls_a_slow_service).build(),
            Engine(fail_fast=False),
            timeout=100,
        )

        assert result.status is RunStatus.FAILED
        assert isinstance(result["call"].error, TimeoutError)
        assert result.duration == pytest.approx(1)

    def test_a_run_under_an_outer_timeout_raises_timeout_error(self):
        async def main():
            async with asyncio.timeout(2):
                await Engine().run(Pipeline().with_stage("a", sleeper(10)).build())

        with pytest.raises(TimeoutError):
            run_virtual(main())


class TestEngineCancellation:
    def test_cancelling_the_run_cancels_stages_emits_run_cancelled_and_reraises(self):
        cleaned: list[str] = []
        started = asyncio.Event()

        async def holds(ctx):
            started.set()
            try:
                await asyncio.sleep(100)
            finally:
                cleaned.append(ctx.stage)

        graph = (
            Pipeline()
            .with_stage("a", holds)
            .with_stage("b", holds)
            .with_stage("c", noop, dependencies=("a",))
            .build()
        )
        sink = RecordingSink()

        async def main():
            task = asyncio.create_task(Engine(sink=sink).run(graph))
            await started.wait()
            await asyncio.sleep(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return asyncio.all_tasks()

        remaining = run_virtual(main())

        assert sorted(cleaned) == ["a", "b"]
        assert len(remaining) == 1  # only main() itself
        assert sink.types()[-1] == "run.cancelled"
        assert sink.events[-1].data["status"] == "cancelled"
        assert sink.events[-1].data["cancelled"] == 2
        assert sink.events[-1].data["skipped"] == 1
        assert [e.stage for e in sink.of_type("stage.cancelled")] == ["a", "b"]
        cancelled = sink.of_type("stage.cancelled")[0]
        assert cancelled.data["reason"] == "the run was cancelled"
        assert sink.of_type("stage.skipped")[0].stage == "c"

    def test_a_cancelled_run_leaves_the_caller_able_to_go_on(self):
        async def main():
            task = asyncio.create_task(Engine().run(Pipeline().with_stage("a", sleeper(9)).build()))
            await asyncio.sleep(1)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.sleep(1)  # the current task was not left cancelled
            return await Engine().run(Pipeline().with_stage("b", sleeper(1)).build())

        assert run_virtual(main()).ok

    def test_a_stage_raising_cancelled_error_by_itself_fails_and_the_run_ends(self):
        async def rogue(ctx):
            await asyncio.sleep(1)
            raise asyncio.CancelledError

        graph = (
            Pipeline()
            .with_stage("rogue", rogue)
            .with_stage("after", noop, dependencies=("rogue",))
            .with_stage("other", sleeper(2))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        error = result["rogue"].error
        assert result.status is RunStatus.FAILED
        assert result["rogue"].status is StageStatus.FAILED
        assert isinstance(error, StageCancelledError)
        assert error.stage == "rogue"
        assert "'rogue'" in str(error)
        assert result["after"].status is StageStatus.SKIPPED
        assert result["other"].ok

    def test_a_stage_cancelling_its_own_task_fails_and_the_run_goes_on(self):
        async def cancels_itself(ctx):
            asyncio.current_task().cancel()
            await asyncio.sleep(1)

        graph = (
            Pipeline()
            .with_stage("self_cancel", cancels_itself)
            .with_stage("other", sleeper(3, x=1))
            .with_stage("later", sleeper(1), dependencies=("other",))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert isinstance(result["self_cancel"].error, StageCancelledError)
        assert result["other"].data == {"x": 1}
        assert result["later"].ok
        assert result.duration == pytest.approx(4)

    def test_cancellation_with_a_timeout_still_reraises_cancelled_error(self):
        async def main():
            task = asyncio.create_task(
                Engine().run(Pipeline().with_stage("a", sleeper(100)).build(), timeout=50)
            )
            await asyncio.sleep(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return task.cancelled()

        assert run_virtual(main()) is True


def test_run_result_is_returned_not_raised_for_failures():
    result = run(Pipeline().with_stage("a", failing()).build())

    assert isinstance(result, RunResult)
    assert result.ok is False


class TestEngineInternalErrors:
    def test_an_error_inside_stageflow_is_raised_by_run_instead_of_hanging(self, monkeypatch):
        from stageflow._scheduler import RunState

        finish = RunState.finish

        def broken_finish(self, i, code):
            if self.outcomes.names[i] == "a":
                raise LookupError("bookkeeping bug")
            return finish(self, i, code)

        monkeypatch.setattr(RunState, "finish", broken_finish)
        cancelled = []

        async def slow(ctx):
            try:
                await asyncio.sleep(100)
            except asyncio.CancelledError:
                cancelled.append(ctx.stage)
                raise

        graph = Pipeline().with_stage("a", noop).with_stage("slow", slow).build()

        async def main():
            with pytest.raises(LookupError, match="bookkeeping bug"):
                await Engine().run(graph)
            return asyncio.all_tasks()

        left = run_virtual(main())
        assert cancelled == ["slow"]  # the other stages were stopped first
        assert len(left) == 1  # only main itself: no orphaned stage task

    def test_a_sync_stage_returning_a_coroutine_fails_with_a_hint(self):
        async def real(ctx):
            return {}

        def wrapper(ctx):
            return real(ctx)

        result = run(Pipeline().with_stage("w", wrapper).build())

        error = result["w"].error
        assert isinstance(error, InvalidOutputError)
        assert "declare it with async def" in str(error)
        assert "wrapper" in str(error)

    def test_a_run_aborted_by_a_base_exception_still_ends_its_event_stream(self):
        class Fatal(BaseException):
            pass

        async def fatal(ctx):
            raise Fatal

        sink = RecordingSink()
        graph = Pipeline().with_stage("f", fatal).with_stage("slow", sleeper(100)).build()

        async def main():
            with pytest.raises(Fatal):
                await Engine(sink=sink).run(graph)

        run_virtual(main())
        assert sink.types()[-1] == "run.failed"
        assert sink.types("slow")[-1] == "stage.cancelled"
        assert sink.for_stage("f")[-1].type == "stage.failed"
