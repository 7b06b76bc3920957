"""What the property tests share: plans of stage behaviour, a recording run, graph arithmetic.

A :class:`Plan` is a generated graph shape plus, for every stage, how long it sleeps (in
virtual seconds) and how it ends (completes, raises, or skips itself). :func:`run_plan`
runs it on virtual time with a :class:`~stageflow.testing.RecordingSink` and returns a
:class:`Run`: the RunResult, the events, and what the stages themselves recorded (calls,
start and end times on the loop's clock, the peak number running at once).

The arithmetic here (critical path, width, ancestors) is computed from the declared shape
only, independently of :class:`~stageflow.StageGraph`, so that the laws compare the engine
against a second, naive model of the graph.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

from hypothesis import strategies as st

from stageflow import Engine, Event, EventSink, RunResult, StageContext, StageOutput
from stageflow.testing import DagShape, RecordingSink, dag_shapes, run_virtual

Behaviour = Literal["ok", "raise", "skip"]

# Multiples of 1/4 are exact in binary, so sums of durations along a path are exact too.
GRID_DURATIONS = st.integers(0, 12).map(lambda k: k / 4)
# Arbitrary magnitudes, to catch a scheduler that is exact only on "nice" numbers.
FLOAT_DURATIONS = st.one_of(
    st.just(0.0), st.floats(1e-6, 1e3, allow_nan=False, allow_infinity=False)
)
MAX_PARALLEL = st.one_of(st.none(), st.integers(1, 4))
ALWAYS_OK: st.SearchStrategy[Behaviour] = st.just("ok")

# Far beyond any makespan drawn here: if a run ever hangs, virtual time jumps to this
# deadline and the test fails with TimeoutError instead of hanging the suite.
HANG_GUARD = 1e9
STAGE_TERMINAL = frozenset({"stage.completed", "stage.failed", "stage.skipped", "stage.cancelled"})
RUN_TERMINAL = frozenset({"run.completed", "run.failed", "run.cancelled"})


class Boom(Exception):
    """What a stage planned to fail raises; ``stage`` names it."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"{stage} failed as planned")
        self.stage = stage


@dataclasses.dataclass(frozen=True)
class Plan:
    """A shape and, per stage, its virtual duration and how it ends."""

    shape: DagShape
    durations: Mapping[str, float]
    behaviours: Mapping[str, Behaviour]

    @property
    def names(self) -> tuple[str, ...]:
        return self.shape.names

    def with_shape(self, shape: DagShape) -> Plan:
        return dataclasses.replace(self, shape=shape)

    def those(self, behaviour: Behaviour) -> frozenset[str]:
        return frozenset(n for n, b in self.behaviours.items() if b == behaviour)


@st.composite
def plans(
    draw: st.DrawFn,
    *,
    durations: st.SearchStrategy[float] = GRID_DURATIONS,
    behaviours: st.SearchStrategy[Behaviour] = ALWAYS_OK,
    **shape: Any,
) -> Plan:
    """Plans over ``dag_shapes(**shape)``, every stage drawing a duration and a behaviour."""
    dag = draw(dag_shapes(**shape))
    return Plan(
        dag,
        {n: draw(durations, label=f"duration of {n}") for n in dag.names},
        {n: draw(behaviours, label=f"behaviour of {n}") for n in dag.names},
    )


@st.composite
def plans_where_some(
    draw: st.DrawFn,
    behaviour: Behaviour,
    *,
    exactly_one: bool = False,
    durations: st.SearchStrategy[float] = GRID_DURATIONS,
    **shape: Any,
) -> Plan:
    """Plans where a random non-empty subset of stages (or exactly one) has ``behaviour``,
    and every other stage completes."""
    dag = draw(dag_shapes(**shape))
    if exactly_one:
        chosen = {draw(st.sampled_from(dag.names), label=f"the stage that does {behaviour}")}
    else:
        chosen = draw(
            st.sets(st.sampled_from(dag.names), min_size=1), label=f"stages that {behaviour}"
        )
    return Plan(
        dag,
        {n: draw(durations, label=f"duration of {n}") for n in dag.names},
        {n: behaviour if n in chosen else "ok" for n in dag.names},
    )


@st.composite
def permuted(draw: st.DrawFn, shape: DagShape) -> DagShape:
    """The same shape with its stages declared in another order."""
    return DagShape(tuple(draw(st.permutations(shape.stages), label="declaration order")))


def output_of(name: str, inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A completed stage's output: its name applied to its inputs, so that outputs show the
    whole data flow that produced them (and a wrong or missing input changes them)."""
    args = ",".join(f"{dep}={inputs[dep]['value']}" for dep in sorted(inputs))
    return {"value": f"{name}({args})"}


@dataclasses.dataclass
class Run:
    """One run of a plan, as seen by the engine and by the stages themselves.

    Times are on the loop's clock, relative to the moment ``Engine.run`` was called.
    """

    plan: Plan
    result: RunResult
    events: list[Event]
    calls: Counter[str]
    starts: dict[str, float]
    ends: dict[str, float]
    peak: int
    elapsed: float

    def events_of(self, stage: str) -> list[Event]:
        return [e for e in self.events if e.stage == stage]

    def seq_of(self, stage: str, type_: str) -> int:
        (seq,) = (e.seq for e in self.events if e.stage == stage and e.type == type_)
        return seq


class _Recorder:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.calls: Counter[str] = Counter()
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}
        self.live = 0
        self.peak = 0
        self.t0 = 0.0

    def stage(self, name: str) -> Any:
        duration = self.plan.durations[name]
        behaviour = self.plan.behaviours[name]

        async def stage(ctx: StageContext) -> Any:
            loop = asyncio.get_running_loop()
            self.calls[name] += 1
            self.starts[name] = loop.time() - self.t0
            self.live += 1
            self.peak = max(self.peak, self.live)
            try:
                await asyncio.sleep(duration)
            finally:
                self.live -= 1
                self.ends[name] = loop.time() - self.t0
            if behaviour == "raise":
                raise Boom(name)
            if behaviour == "skip":
                return StageOutput.skip(f"{name} skipped itself")
            return output_of(name, {dep: ctx.inputs[dep] for dep in ctx.inputs})

        return stage

    def run(self, result: RunResult, events: list[Event], elapsed: float) -> Run:
        return Run(
            self.plan,
            result,
            list(events),
            self.calls,
            self.starts,
            self.ends,
            self.peak,
            elapsed,
        )


def run_plan(
    plan: Plan,
    *,
    max_parallel: int | None = None,
    fail_fast: bool = True,
    timeout: float | None = None,
    sink: EventSink | None = None,
) -> Run:
    """Run ``plan`` once on virtual time and record everything.

    ``sink`` replaces the RecordingSink (``Run.events`` is then empty).
    """
    recorder = _Recorder(plan)
    recording = RecordingSink()
    graph = plan.shape.pipeline(recorder.stage, per_stage=True).build()
    engine = Engine(
        sink=recording if sink is None else sink, max_parallel=max_parallel, fail_fast=fail_fast
    )

    async def main() -> tuple[RunResult, float]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(HANG_GUARD):
            recorder.t0 = loop.time()
            result = await engine.run(graph, timeout=timeout)
            return result, loop.time() - recorder.t0

    result, elapsed = run_virtual(main)
    return recorder.run(result, recording.events, elapsed)


@dataclasses.dataclass
class CancelledRun:
    """A run whose task was cancelled at some instant: whether ``Engine.run`` returned
    (it ended before) or raised CancelledError, what the stages recorded, the events."""

    plan: Plan
    result: RunResult | None
    cancelled: bool
    events: list[Event]
    calls: Counter[str]
    starts: dict[str, float]
    ends: dict[str, float]
    elapsed: float


def run_plan_and_cancel(
    plan: Plan, cancel_at: float, *, max_parallel: int | None = None
) -> CancelledRun:
    """Run ``plan`` in a task and cancel that task ``cancel_at`` virtual seconds in."""
    recorder = _Recorder(plan)
    sink = RecordingSink()
    graph = plan.shape.pipeline(recorder.stage, per_stage=True).build()
    engine = Engine(sink=sink, max_parallel=max_parallel)

    async def main() -> tuple[RunResult | None, bool, float]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(HANG_GUARD):
            recorder.t0 = loop.time()
            task = asyncio.create_task(engine.run(graph))
            loop.call_later(cancel_at, task.cancel)
            await asyncio.wait([task])
            elapsed = loop.time() - recorder.t0
            if task.cancelled():
                return None, True, elapsed
            return task.result(), False, elapsed

    result, cancelled, elapsed = run_virtual(main)
    return CancelledRun(
        plan,
        result,
        cancelled,
        list(sink.events),
        recorder.calls,
        recorder.starts,
        recorder.ends,
        elapsed,
    )


# --------------------------------------------------------------------------- graph arithmetic


def ancestors(shape: DagShape, name: str) -> frozenset[str]:
    """Every stage ``name`` depends on, directly or not."""
    seen: set[str] = set()
    stack = list(shape.dependencies(name))
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(shape.dependencies(n))
    return frozenset(seen)


def descendants_of_any(shape: DagShape, names: frozenset[str]) -> frozenset[str]:
    """Every stage that depends, directly or not, on one of ``names``."""
    return frozenset().union(*(shape.descendants(n) for n in names))


def earliest_finish(shape: DagShape, durations: Mapping[str, float]) -> dict[str, float]:
    """When each stage ends on an unlimited machine that starts every stage as soon as
    its dependencies end: its duration plus the latest earliest-finish of its dependencies."""
    finish: dict[str, float] = {}

    def visit(name: str) -> float:
        if name not in finish:
            ready = max((visit(d) for d in shape.dependencies(name)), default=0.0)
            finish[name] = ready + durations[name]
        return finish[name]

    for name in shape.names:
        visit(name)
    return finish


def critical_path(shape: DagShape, durations: Mapping[str, float]) -> float:
    """The length of the longest path, summing durations."""
    return max(earliest_finish(shape, durations).values())


def width(shape: DagShape) -> int:
    """The size of the largest set of mutually independent stages (an antichain).

    By Dilworth's theorem it is the fewest chains covering the graph: the number of
    stages minus a maximum matching of "u precedes v" pairs (Kuhn's algorithm).
    """
    later = {n: shape.descendants(n) for n in shape.names}
    match: dict[str, str] = {}

    def augment(u: str, seen: set[str]) -> bool:
        for v in later[u]:
            if v not in seen:
                seen.add(v)
                if v not in match or augment(match[v], seen):
                    match[v] = u
                    return True
        return False

    matched = sum(augment(u, set()) for u in shape.names)
    return len(shape.names) - matched


def edges(shape: DagShape) -> frozenset[tuple[str, str]]:
    """The declared dependency relation as ``(dependency, dependent)`` pairs."""
    return frozenset((dep, name) for name, deps in shape.stages for dep in deps)
