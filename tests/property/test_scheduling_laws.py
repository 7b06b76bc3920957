"""Laws of scheduling that hold for every graph: order, exactly-once, limits, timing, events."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stageflow import Event, RunStatus, StageStatus

from ._harness import (
    FLOAT_DURATIONS,
    MAX_PARALLEL,
    RUN_TERMINAL,
    STAGE_TERMINAL,
    Plan,
    critical_path,
    earliest_finish,
    plans,
    run_plan,
    width,
)

# Virtual time is exact up to float rounding; this absorbs the rounding of long sums.
TIME = {"rel": 1e-9, "abs": 1e-9}


class TestDependencyOrder:
    """A stage starts only after every one of its dependencies has completed."""

    @given(plan=plans(), max_parallel=MAX_PARALLEL)
    def test_a_stage_starts_after_its_dependencies_end_on_the_clock(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel)
        for name in plan.names:
            for dep in plan.shape.dependencies(name):
                assert run.starts[name] >= run.ends[dep], (dep, name)

    @given(plan=plans(), max_parallel=MAX_PARALLEL)
    def test_a_stage_is_started_after_its_dependencies_are_completed_in_the_event_order(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel)
        for name in plan.names:
            started = run.seq_of(name, "stage.started")
            for dep in plan.shape.dependencies(name):
                assert run.seq_of(dep, "stage.completed") < started, (dep, name)


class TestExactlyOnce:
    """Each stage is called exactly once and has exactly one result."""

    @given(plan=plans(), max_parallel=MAX_PARALLEL)
    def test_every_stage_is_called_exactly_once(self, plan: Plan, max_parallel: int | None) -> None:
        run = run_plan(plan, max_parallel=max_parallel)
        assert run.calls == dict.fromkeys(plan.names, 1)

    @given(plan=plans(), max_parallel=MAX_PARALLEL)
    def test_every_stage_has_one_completed_result_in_declaration_order(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel)
        assert run.result.status is RunStatus.COMPLETED
        assert list(run.result.stages) == list(plan.names)
        for name, stage_result in run.result.stages.items():
            assert stage_result.stage == name
            assert stage_result.status is StageStatus.COMPLETED
            assert stage_result.attempts == 1


class TestParallelismLimit:
    """``max_parallel`` bounds how many stages run at once, and wastes no free slot."""

    @given(plan=plans(), max_parallel=MAX_PARALLEL)
    def test_never_more_than_max_parallel_stages_run_at_once(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel)
        if max_parallel is not None:
            assert run.peak <= max_parallel

    @given(plan=plans(), max_parallel=MAX_PARALLEL)
    def test_no_more_stages_run_at_once_than_the_graph_has_independent_stages(
        self, plan: Plan, max_parallel: int | None
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel)
        assert run.peak <= width(plan.shape)

    @given(plan=plans(), max_parallel=st.integers(1, 4))
    def test_a_ready_stage_waits_only_while_every_slot_is_busy(
        self, plan: Plan, max_parallel: int
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel)
        instants = sorted({*run.starts.values(), *run.ends.values()})
        for name in plan.names:
            ready = max((run.ends[d] for d in plan.shape.dependencies(name)), default=0.0)
            waited = [
                (a + b) / 2
                for a, b in itertools.pairwise(instants)
                if ready <= a and b <= run.starts[name]
            ]
            for t in waited:
                running = sum(run.starts[n] <= t < run.ends[n] for n in plan.names)
                assert running == max_parallel, (name, ready, run.starts[name], t)

    @given(plan=plans())
    def test_with_one_slot_the_makespan_is_the_sum_of_the_durations(self, plan: Plan) -> None:
        run = run_plan(plan, max_parallel=1)
        assert run.result.duration == pytest.approx(sum(plan.durations.values()), **TIME)

    @given(plan=plans(), max_parallel=st.integers(1, 4))
    def test_the_makespan_is_within_grahams_list_scheduling_bound(
        self, plan: Plan, max_parallel: int
    ) -> None:
        # Any schedule that never idles a slot while a stage is ready ends within
        # W/k + (1 - 1/k) * L (Graham, 1966), and no schedule ends before max(W/k, L).
        run = run_plan(plan, max_parallel=max_parallel)
        work = sum(plan.durations.values())
        longest = critical_path(plan.shape, plan.durations)
        k = max_parallel
        assert run.result.duration >= max(work / k, longest) - 1e-9
        assert run.result.duration <= work / k + (1 - 1 / k) * longest + 1e-9


class TestAsSoonAsReady:
    """Without a limit, a stage starts the instant its last dependency ends: no layers, no
    polling, so the run takes exactly as long as its critical path."""

    @given(plan=plans(durations=FLOAT_DURATIONS))
    def test_the_makespan_is_the_critical_path(self, plan: Plan) -> None:
        run = run_plan(plan)
        expected = critical_path(plan.shape, plan.durations)
        assert run.result.duration == pytest.approx(expected, **TIME)
        assert run.elapsed == pytest.approx(expected, **TIME)

    @given(plan=plans(durations=FLOAT_DURATIONS))
    def test_a_stage_starts_when_its_last_dependency_ends(self, plan: Plan) -> None:
        run = run_plan(plan)
        for name in plan.names:
            ready = max((run.ends[d] for d in plan.shape.dependencies(name)), default=0.0)
            assert run.starts[name] == ready, name
            stage_result = run.result[name]
            assert stage_result.started == pytest.approx(run.starts[name], **TIME)
            assert stage_result.ended == pytest.approx(run.ends[name], **TIME)

    @given(plan=plans(durations=FLOAT_DURATIONS))
    def test_every_stage_ends_at_its_earliest_possible_finish(self, plan: Plan) -> None:
        run = run_plan(plan)
        finish = earliest_finish(plan.shape, plan.durations)
        for name in plan.names:
            assert run.ends[name] == pytest.approx(finish[name], **TIME), name


class TestEventStream:
    """Whatever happens in a run, its events form one well-formed stream."""

    @given(
        plan=plans(behaviours=st.sampled_from(["ok", "ok", "raise", "skip"])),
        max_parallel=MAX_PARALLEL,
        fail_fast=st.booleans(),
    )
    def test_events_form_a_well_formed_stream(
        self, plan: Plan, max_parallel: int | None, fail_fast: bool
    ) -> None:
        run = run_plan(plan, max_parallel=max_parallel, fail_fast=fail_fast)
        events, result = run.events, run.result

        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[0].type == "run.started"
        assert events[-1].type == f"run.{result.status.value}"
        run_events = [e for e in events if e.type.startswith("run.")]
        assert run_events == [events[0], events[-1]]
        assert events[-1].type in RUN_TERMINAL
        assert all(e.stage is None for e in run_events)
        assert {(e.run_id, e.pipeline) for e in events} == {(result.run_id, result.pipeline)}

        stage_events = [e for e in events if not e.type.startswith("run.")]
        assert {e.stage for e in stage_events} <= set(plan.names)
        for name in plan.names:
            types = [e.type for e in run.events_of(name)]
            terminal = f"stage.{result[name].status.value}"
            assert [t for t in types if t in STAGE_TERMINAL] == [terminal], name
            if run.calls[name]:
                assert types == ["stage.started", terminal], name
            else:
                assert types == [terminal], name


class _FlakySink:
    """An EventSink that raises on every event of the given types (after recording it)."""

    def __init__(self, fails_on: frozenset[str]) -> None:
        self.fails_on = fails_on
        self.events: list[Event] = []
        self.raised = 0

    def try_emit(self, event: Event) -> None:
        self.events.append(event)
        if event.type in self.fails_on:
            self.raised += 1
            raise RuntimeError(f"sink refuses {event.type}")

    async def emit(self, event: Event) -> None:
        self.try_emit(event)


class TestSinkFailures:
    """A sink that raises never changes a run: the errors are only counted."""

    @given(
        plan=plans(behaviours=st.sampled_from(["ok", "ok", "raise", "skip"])),
        max_parallel=MAX_PARALLEL,
        fail_fast=st.booleans(),
        fails_on=st.frozensets(
            st.sampled_from(
                ["run.started", "run.completed", "run.failed", "stage.started", "stage.completed",
                 "stage.failed", "stage.skipped", "stage.cancelled"]
            )
        ),
    )  # fmt: skip
    def test_a_raising_sink_changes_nothing_but_the_error_count(
        self, plan: Plan, max_parallel: int | None, fail_fast: bool, fails_on: frozenset[str]
    ) -> None:
        sink = _FlakySink(fails_on)
        flaky = run_plan(plan, max_parallel=max_parallel, fail_fast=fail_fast, sink=sink)
        calm = run_plan(plan, max_parallel=max_parallel, fail_fast=fail_fast)
        assert flaky.result.status is calm.result.status
        assert {r.stage: (r.status, dict(r.data)) for r in flaky.result} == {
            r.stage: (r.status, dict(r.data)) for r in calm.result
        }
        assert (flaky.starts, flaky.ends) == (calm.starts, calm.ends)
        assert flaky.result.sink_errors == sink.raised
        assert [(e.type, e.stage, e.seq) for e in sink.events] == [
            (e.type, e.stage, e.seq) for e in calm.events
        ]
