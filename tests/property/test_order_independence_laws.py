"""Laws of declaration order: how a run ends does not depend on the order stages were declared."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ._harness import MAX_PARALLEL, Plan, Run, permuted, plans, run_plan

MIXED = st.sampled_from(["ok", "ok", "raise", "skip"])


def _outcome(run: Run) -> dict[str, tuple[str, dict[str, object]]]:
    return {r.stage: (r.status.value, dict(r.data)) for r in run.result}


class TestRunsIgnoreDeclarationOrder:
    """Permuting the declaration of a plan's stages changes nothing a run reports."""

    @given(data=st.data(), plan=plans(behaviours=MIXED), max_parallel=MAX_PARALLEL)
    def test_statuses_and_outputs_do_not_depend_on_the_declaration_order(
        self, data: st.DataObject, plan: Plan, max_parallel: int | None
    ) -> None:
        other = plan.with_shape(data.draw(permuted(plan.shape)))
        run = run_plan(plan, max_parallel=max_parallel, fail_fast=False)
        other_run = run_plan(other, max_parallel=max_parallel, fail_fast=False)
        assert _outcome(run) == _outcome(other_run)
        assert run.result.status is other_run.result.status
        assert run.calls == other_run.calls

    @given(data=st.data(), plan=plans(behaviours=MIXED))
    def test_without_a_limit_every_stage_runs_at_the_same_times_in_any_declaration_order(
        self, data: st.DataObject, plan: Plan
    ) -> None:
        other = plan.with_shape(data.draw(permuted(plan.shape)))
        run = run_plan(plan, fail_fast=False)
        other_run = run_plan(other, fail_fast=False)
        assert run.starts == other_run.starts
        assert run.ends == other_run.ends
        assert run.result.duration == other_run.result.duration

    @given(plan=plans(behaviours=MIXED), max_parallel=MAX_PARALLEL, fail_fast=st.booleans())
    def test_running_the_same_plan_twice_gives_the_same_outcome(
        self, plan: Plan, max_parallel: int | None, fail_fast: bool
    ) -> None:
        first = run_plan(plan, max_parallel=max_parallel, fail_fast=fail_fast)
        second = run_plan(plan, max_parallel=max_parallel, fail_fast=fail_fast)
        assert _outcome(first) == _outcome(second)
        assert (first.starts, first.ends) == (second.starts, second.ends)
        assert [(e.type, e.stage) for e in first.events] == [
            (e.type, e.stage) for e in second.events
        ]
