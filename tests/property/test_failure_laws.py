"""Laws of failures and skips: who is skipped, who is cancelled, how the run ends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stageflow import RunResult, RunStatus, StageStatus

from ._harness import (
    MAX_PARALLEL,
    Boom,
    Plan,
    ancestors,
    descendants_of_any,
    plans,
    plans_where_some,
    run_plan,
)


def statuses(result: RunResult) -> dict[str, StageStatus]:
    return {r.stage: r.status for r in result}


def status_of(name: str, *, skipped: frozenset[str], failed: frozenset[str]) -> StageStatus:
    if name in skipped:
        return StageStatus.SKIPPED
    return StageStatus.FAILED if name in failed else StageStatus.COMPLETED


class TestFailuresWithoutFailFast:
    """With ``fail_fast=False`` a failure skips exactly its descendants; the rest go on."""

    @given(plan=plans_where_some("raise"), max_parallel=MAX_PARALLEL)
    def test_exactly_the_descendants_of_failed_stages_are_skipped(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel, fail_fast=False)
        failing = plan.those("raise")
        # A planned failure below another one never starts, so it is skipped, not failed.
        skipped = descendants_of_any(plan.shape, failing)
        failed = failing - skipped
        expected = {n: status_of(n, skipped=skipped, failed=failed) for n in plan.names}
        assert statuses(run.result) == expected
        assert run.result.status is RunStatus.FAILED
        assert isinstance(run.result.error, Boom)
        assert run.result.error.stage in failed
        for name in failed:  # each failed stage carries the exception it raised
            error = run.result[name].error
            assert isinstance(error, Boom)
            assert error.stage == name

    @given(plan=plans_where_some("raise"), max_parallel=MAX_PARALLEL)
    def test_skipped_descendants_are_never_called_and_everything_else_is_called_once(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel, fail_fast=False)
        skipped = descendants_of_any(plan.shape, plan.those("raise"))
        assert run.calls == {n: 1 for n in plan.names if n not in skipped}
        for name in skipped:
            assert run.result[name].attempts == 0
            assert run.result[name].started is None
            assert "dependency" in (run.result[name].reason or "")


class TestSkipsPropagate:
    """A stage that skips itself skips exactly its descendants, and the run still completes."""

    @given(plan=plans_where_some("skip"), max_parallel=MAX_PARALLEL, fail_fast=st.booleans())
    def test_exactly_the_self_skipping_stages_and_their_descendants_are_skipped(
        self, plan: Plan, max_parallel: int | None, fail_fast: bool
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel, fail_fast=fail_fast)
        skipping = plan.those("skip")
        skipped = skipping | descendants_of_any(plan.shape, skipping)
        assert statuses(run.result) == {
            n: status_of(n, skipped=skipped, failed=frozenset()) for n in plan.names
        }
        assert run.result.status is RunStatus.COMPLETED
        assert run.result.error is None

    @given(plan=plans_where_some("skip"), max_parallel=MAX_PARALLEL)
    def test_only_stages_whose_dependencies_all_completed_are_called(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel)
        below = descendants_of_any(plan.shape, plan.those("skip"))
        assert run.calls == {n: 1 for n in plan.names if n not in below}

    @given(
        plan=plans(behaviours=st.sampled_from(["ok", "ok", "raise", "skip"])),
        max_parallel=MAX_PARALLEL,
    )
    def test_with_failures_and_skips_mixed_a_stage_runs_iff_all_its_ancestors_completed(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel, fail_fast=False)
        stopping = plan.those("raise") | plan.those("skip")
        below = descendants_of_any(plan.shape, stopping)
        failed = plan.those("raise") - below
        skipped = below | plan.those("skip")
        assert statuses(run.result) == {
            n: status_of(n, skipped=skipped, failed=failed) for n in plan.names
        }
        assert run.result.status is (RunStatus.FAILED if failed else RunStatus.COMPLETED)
        assert run.calls == {n: 1 for n in plan.names if n not in below}


class TestFailFast:
    """With ``fail_fast=True`` the first failure stops the run at once: running stages are
    cancelled, no stage starts after it, and stages that never started are skipped."""

    @given(plan=plans_where_some("raise", exactly_one=True), max_parallel=MAX_PARALLEL)
    def test_no_stage_starts_after_the_failure(self, plan: Plan, max_parallel: int | None) -> None:
        run = run_plan(plan, max_parallel=max_parallel, fail_fast=True)
        (failing,) = plan.those("raise")
        failed_at = run.ends[failing]
        failed_seq = run.seq_of(failing, "stage.failed")
        assert all(t <= failed_at for t in run.starts.values())
        assert all(e.seq < failed_seq for e in run.events if e.type == "stage.started")

    @given(plan=plans_where_some("raise", exactly_one=True), max_parallel=MAX_PARALLEL)
    def test_stages_that_never_started_are_skipped_and_those_running_are_cancelled(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel, fail_fast=True)
        (failing,) = plan.those("raise")
        failed_at = run.ends[failing]
        for name in plan.names:
            stage_result = run.result[name]
            status = stage_result.status
            assert run.calls[name] <= 1
            if not run.calls[name]:
                assert status is StageStatus.SKIPPED, name
                assert stage_result.attempts == 0
            elif status is StageStatus.CANCELLED:
                # it was running when the failure happened, and was stopped right then
                assert run.starts[name] <= failed_at
                assert run.starts[name] + plan.durations[name] >= failed_at
                assert run.ends[name] == pytest.approx(failed_at)
                assert stage_result.ended == pytest.approx(failed_at)
            elif name != failing:
                assert status is StageStatus.COMPLETED, name
                assert run.ends[name] <= failed_at

    @given(plan=plans_where_some("raise", exactly_one=True), max_parallel=MAX_PARALLEL)
    def test_ancestors_of_the_failure_completed_and_its_descendants_are_skipped(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel, fail_fast=True)
        (failing,) = plan.those("raise")
        for name in ancestors(plan.shape, failing):
            assert run.result[name].status is StageStatus.COMPLETED, name
        for name in plan.shape.descendants(failing):
            assert run.result[name].status is StageStatus.SKIPPED, name
            assert run.calls[name] == 0

    @given(plan=plans_where_some("raise", exactly_one=True), max_parallel=MAX_PARALLEL)
    def test_the_run_fails_the_instant_the_failing_stage_fails(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel, fail_fast=True)
        (failing,) = plan.those("raise")
        assert run.result.status is RunStatus.FAILED
        assert run.result[failing].status is StageStatus.FAILED
        assert isinstance(run.result.error, Boom)
        assert run.result.error.stage == failing
        assert run.result.duration == pytest.approx(run.ends[failing])
        assert run.elapsed == pytest.approx(run.ends[failing])
