"""Laws of stopping a run from outside: a run timeout, or cancelling the run's task.

Without a parallelism limit every stage's start and end are known in advance (its
earliest start and finish), so the instant T of the stop decides each stage's fate:
ended before T -> completed, running at T -> cancelled at T, not yet started -> skipped.
T is drawn off the grid of durations, so no stage starts or ends exactly at T.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stageflow import RunStatus, RunTimeoutError, StageStatus

from ._harness import (
    STAGE_TERMINAL,
    Plan,
    critical_path,
    earliest_finish,
    plans,
    run_plan,
    run_plan_and_cancel,
)


def _instant_within(data: st.DataObject, plan: Plan) -> float:
    """An instant between the start and a little past the end of the plan's run."""
    quarters = int(critical_path(plan.shape, plan.durations) * 4)
    return data.draw(st.integers(0, quarters), label="stop after quarters") / 4 + 1 / 8


def _expected_fates(plan: Plan, stop_at: float) -> dict[str, StageStatus]:
    finish = earliest_finish(plan.shape, plan.durations)
    fates = {}
    for name in plan.names:
        start = finish[name] - plan.durations[name]
        if finish[name] < stop_at:
            fates[name] = StageStatus.COMPLETED
        elif start < stop_at:
            fates[name] = StageStatus.CANCELLED
        else:
            fates[name] = StageStatus.SKIPPED
    return fates


class TestRunTimeout:
    """``Engine.run(timeout=T)`` stops the run at T exactly, and says so."""

    @given(data=st.data(), plan=plans())
    def test_a_run_that_outlasts_its_timeout_is_cancelled_at_the_timeout(
        self, data: st.DataObject, plan: Plan
    ) -> None:
        timeout = _instant_within(data, plan)
        run = run_plan(plan, timeout=timeout)
        if critical_path(plan.shape, plan.durations) < timeout:
            assert run.result.status is RunStatus.COMPLETED
            assert run.result.error is None
            return
        assert run.result.status is RunStatus.CANCELLED
        assert isinstance(run.result.error, RunTimeoutError)
        assert run.result.error.timeout == timeout
        assert run.result.duration == pytest.approx(timeout)
        assert run.elapsed == pytest.approx(timeout)

    @given(data=st.data(), plan=plans())
    def test_at_the_timeout_stages_that_ended_completed_running_ones_cancelled_rest_skipped(
        self, data: st.DataObject, plan: Plan
    ) -> None:
        timeout = _instant_within(data, plan)
        run = run_plan(plan, timeout=timeout)
        fates = _expected_fates(plan, timeout)
        assert {r.stage: r.status for r in run.result} == fates
        for name, fate in fates.items():
            assert run.calls[name] == (fate is not StageStatus.SKIPPED), name
            if fate is StageStatus.CANCELLED:
                assert run.ends[name] == pytest.approx(timeout), name
                assert run.result[name].ended == pytest.approx(timeout), name
            terminal = [e.type for e in run.events_of(name) if e.type in STAGE_TERMINAL]
            assert terminal == [f"stage.{fate.value}"], name
        assert [e.seq for e in run.events] == list(range(1, len(run.events) + 1))
        assert run.events[-1].type == f"run.{run.result.status.value}"


class TestRunCancellation:
    """Cancelling the task running a run cancels every running stage and starts no more."""

    @given(data=st.data(), plan=plans())
    def test_cancelling_the_run_cancels_running_stages_and_skips_the_rest(
        self, data: st.DataObject, plan: Plan
    ) -> None:
        cancel_at = _instant_within(data, plan)
        run = run_plan_and_cancel(plan, cancel_at)
        fates = _expected_fates(plan, cancel_at)
        if critical_path(plan.shape, plan.durations) < cancel_at:
            assert not run.cancelled
            assert run.result is not None
            assert run.result.status is RunStatus.COMPLETED
            assert run.events[-1].type == "run.completed"
            return
        assert run.cancelled, "Engine.run must re-raise CancelledError"
        assert run.elapsed == pytest.approx(cancel_at)
        assert run.events[0].type == "run.started"
        assert run.events[-1].type == "run.cancelled"
        assert [e.seq for e in run.events] == list(range(1, len(run.events) + 1))
        for name, fate in fates.items():
            terminal = [e.type for e in run.events if e.stage == name and e.type in STAGE_TERMINAL]
            assert terminal == [f"stage.{fate.value}"], name
            assert run.calls[name] == (fate is not StageStatus.SKIPPED), name
            if fate is StageStatus.CANCELLED:
                assert run.ends[name] == pytest.approx(cancel_at), name

    @given(data=st.data(), plan=plans(), max_parallel=st.integers(1, 4))
    def test_no_stage_starts_after_the_run_is_cancelled(
        self, data: st.DataObject, plan: Plan, max_parallel: int
    ) -> None:
        cancel_at = _instant_within(data, plan)
        run = run_plan_and_cancel(plan, cancel_at, max_parallel=max_parallel)
        assert all(t < cancel_at for t in run.starts.values())
        if not run.cancelled:
            return
        assert run.events[-1].type == "run.cancelled"
        for name in plan.names:
            terminal = [e.type for e in run.events if e.stage == name and e.type in STAGE_TERMINAL]
            assert len(terminal) == 1, name
            if not run.calls[name]:
                assert terminal == ["stage.skipped"], name
            elif terminal == ["stage.cancelled"]:
                assert run.ends[name] == pytest.approx(cancel_at), name
            else:
                assert terminal == ["stage.completed"], name
                assert run.ends[name] < cancel_at, name
