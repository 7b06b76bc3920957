"""Laws of stopping and resuming durable runs of dynamic graphs.

For graphs of :func:`~stageflow.testing.strategies.dynamic_graphs` (conditions, ROUTE
stages, maps over generated items, bounded loops, subgraphs, with planned failures),
a durable run is stopped after a drawn number of events (a sink cancels the run's
task once it has seen that many), resumed and stopped again, several times, then
resumed to its end. Compared with one uninterrupted run of the same graph:

- the final result is the same: every stage's, item's and iteration's status, output,
  reason, error type and attempts;
- nothing whose outcome a drive stored (a stage's or item's ``checkpoint.saved``, a
  map's ``stage.completed``, a condition found false), nor anything inside it, is
  called again, nor is its condition asked again, by a later drive; within one drive
  nothing is called twice;
- on the MemoryStore, which never suspends a write, exactly once: every call that
  returned a kept outcome in one drive is never made again, every one the
  uninterrupted run makes is made (so those in flight at a stop ran again), and a
  loop's ``until`` is asked as often in all drives together as in one run;
- the same on a real SQLite file, for a sample (stored events only: a write there
  may be in flight when the run stops);
- a run without a store gives the same result, with the same calls, as a durable one.

Everything runs on virtual time: the stages' sleeps decide the interleavings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import signal
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, event, find, given, settings
from hypothesis import strategies as st

from stageflow import (
    Engine,
    Event,
    Pipeline,
    RouteError,
    RunResult,
    RunStatus,
    StageGraph,
    StageKind,
    StageOutput,
    StageStatus,
)
from stageflow._dynamic import MapSpec
from stageflow.adapters.memory import MemoryStore
from stageflow.ports import RunStore
from stageflow.testing import run_virtual
from stageflow.testing.strategies import DynamicGraph, DynamicStage, dynamic_graphs

RUN = "dynamic-1"
# Far beyond any run drawn here: a hang fails the example with TimeoutError instead.
# (Not 1e9: past 1e8 virtual seconds the loop spins, see
# test_virtual_time_goes_on_past_a_hundred_million_seconds.)
HANG_GUARD = 1e6
LAWS = settings(max_examples=max(10, settings.default.max_examples))
SAMPLE = settings(max_examples=max(4, settings.default.max_examples // 4))
GRAPHS = st.one_of(  # small graphs shrink well; larger ones nest deeper, map more
    dynamic_graphs(min_stages=3, max_stages=6),
    dynamic_graphs(min_stages=6, max_stages=10, max_items=6, max_iterations=4, max_depth=3),
)
CONDITION_FALSE = "condition false"
_WHICH_DEPENDENCY = re.compile(r"^dependency '[^']*' (failed|was skipped)$")


RUN_END = frozenset({"run.completed", "run.failed", "run.cancelled"})


class StopAfter:
    """A sink that keeps the events of one drive and, once it has seen ``n`` of them,
    cancels the task running the drive (``n=None``: never).

    Unless the ``n``-th is the run's last event: a cancel then lands while the run is
    finishing, where it leaves the lease held (see
    test_a_cancel_as_the_run_ends_leaves_its_lease_held).
    """

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.events: list[Event] = []
        self.task: asyncio.Task[RunResult] | None = None

    def try_emit(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) == self.n and self.task is not None and event.type not in RUN_END:
            self.task.cancel()

    async def emit(self, event: Event) -> None:
        self.try_emit(event)


@dataclasses.dataclass
class Drive:
    """One drive of the run: its result (None: it was stopped), events and calls."""

    result: RunResult | None
    events: list[Event]
    log: list[tuple[str, str]]

    def logged(self, what: str) -> Counter[str]:
        return Counter(name for kind, name in self.log if kind == what)

    def stored(self, graph: StageGraph) -> set[str]:
        """What this drive stored the outcome of, as its events say: a stage's or an
        item's checkpoint, a map's completion, a condition found false."""
        checkpoints = {e.stage for e in self.events if e.type == "checkpoint.saved"}
        maps = {
            e.stage
            for e in self.events
            if e.type == "stage.completed" and e.stage and _is_map(graph, e.stage)
        }
        false = {
            e.stage
            for e in self.events
            if e.type == "stage.skipped" and e.data.get("reason") == CONDITION_FALSE
        }
        return {s for s in checkpoints | maps | false if s is not None}


def _is_map(graph: StageGraph, name: str) -> bool:
    spec = graph.spec_of(name)
    return spec is not None and isinstance(spec.dynamic, MapSpec)


StoreFactory = Callable[[], Awaitable[RunStore]]


async def _memory() -> RunStore:
    return MemoryStore()


def _drives(
    spec: DynamicGraph,
    stops: list[int],
    store: StoreFactory | None,
    max_parallel: int | None = None,
) -> list[Drive]:
    """Drive the run: stopped after ``stops[k]`` events in drive k, then to its end.

    Without a store, one run (``stops`` must be empty).
    """

    async def main() -> list[Drive]:
        # Opened before the guard is armed: SQLite opens in a worker thread, and while
        # a thread works, virtual time jumps to the next timer.
        opened = None if store is None else await store()
        try:
            async with asyncio.timeout(HANG_GUARD):
                return await drive(opened)
        finally:
            if opened is not None:
                await opened.aclose()

    async def drive(opened: RunStore | None) -> list[Drive]:
        drives = []
        for k, n in enumerate([*stops, None]):
            sink = StopAfter(n)
            engine = Engine(store=opened, sink=sink, fail_fast=False, max_parallel=max_parallel)
            mark = spec.mark()
            if k == 0:
                task = asyncio.create_task(engine.run(spec.graph, run_id=RUN))
            else:
                task = asyncio.create_task(engine.resume(RUN, spec.graph))
            sink.task = task
            await asyncio.wait([task])
            result = None if task.cancelled() else task.result()
            drives.append(Drive(result, sink.events, spec.log[mark:]))
            if result is not None:
                return drives
        raise AssertionError("the last drive was stopped")  # pragma: no cover

    return run_virtual(main)


def _outcome(result: RunResult) -> dict[str, tuple[Any, ...]]:
    """Every stage's, item's and iteration's outcome, by name."""
    outcome = {}
    for name, r in result.stages.items():
        items = tuple((i.stage, *_one(i)) for i in r.items)
        outcome[name] = (*_one(r), items)
    return outcome


def _one(r: Any) -> tuple[Any, ...]:
    data = dict(r.data)  # a failed stage's too
    error = None if r.error is None else type(r.error).__name__
    return (r.status, data, _reason(r.reason), error, r.attempts)


def _reason(reason: str | None) -> str | None:
    """A reason, but of a stage skipped because of a dependency, not which one nor how
    it ended: of two dependencies that did not complete, it names the first to end,
    and restored ones end sooner."""
    if reason is None:
        return None
    return _WHICH_DEPENDENCY.sub("a dependency did not complete", reason)


def _drawn_stops(data: st.DataObject, events: int) -> list[int]:
    """One to three stops, each after 1 to ``events`` events of its drive."""
    stops = st.lists(st.integers(1, events), min_size=1, max_size=3)
    return data.draw(stops, label="stop after events")


def _restored_whole(drive: Drive) -> set[str]:
    return {e.stage for e in drive.events if e.type == "stage.restored" and e.stage}


def _inside(name: str, outer: str) -> bool:
    """Whether ``name`` is a stage or item inside ``outer`` (``s1[2].t0``, ``s4.t1``)."""
    return name.startswith(outer) and name[len(outer) : len(outer) + 1] in (".", "[")


def _assert_same_outcome(final: Drive, expected: dict[str, tuple[Any, ...]]) -> None:
    """The final result equals ``expected``: the same stages, items and iterations,
    each with the same outcome; except that a failed item of a map the last drive
    restored whole is compared by its status only (see
    test_a_map_restored_whole_reports_its_failed_items_as_they_failed)."""
    assert final.result is not None
    got = _outcome(final.result)
    assert set(got) == set(expected)  # nested ones are listed in the order they ran
    restored = _restored_whole(final)
    for name, want in expected.items():
        if name in restored and want[-1]:
            items = tuple(
                (mine[0], mine[1]) if theirs[1] is StageStatus.FAILED else mine
                for mine in got[name][-1]
                for theirs in [next(t for t in want[-1] if t[0] == mine[0])]
            )
            items_wanted = tuple(
                (t[0], t[1]) if t[1] is StageStatus.FAILED else t for t in want[-1]
            )
            assert (got[name][:-1], items) == (want[:-1], items_wanted), name
        else:
            assert got[name] == want, name


class TestResumingGivesTheUninterruptedResult:
    @LAWS
    @given(spec=GRAPHS, data=st.data(), max_parallel=st.sampled_from([None, 1, 2]))
    def test_on_a_memory_store_every_call_is_made_exactly_once(
        self, spec: DynamicGraph, data: st.DataObject, max_parallel: int | None
    ) -> None:
        (reference,) = _drives(spec, [], _memory, max_parallel)
        assert reference.result is not None
        stops = _drawn_stops(data, len(reference.events))
        drives = _drives(spec, stops, _memory, max_parallel)
        final = drives[-1]
        event(f"drives: {len(drives)}")
        event(f"restored in the last drive: {bool(_restored_whole(final))}")
        event(f"run: {reference.result.status}")

        _assert_same_outcome(final, _outcome(reference.result))
        assert final.result is not None
        assert final.result.status is reference.result.status
        _assert_stored_outcomes_are_never_redone(spec.graph, drives)
        # Exactly once: a kept outcome is never made again; each call of the
        # uninterrupted run is made (in flight at a stop: made again, to its end).
        done = Counter[str]()
        for k, drive in enumerate(drives):
            for later in drives[k + 1 :]:
                again = set(drive.logged("done")) & set(later.logged("call"))
                assert not again, f"completed, then called again: {sorted(again)}"
            done += drive.logged("done")
        assert done == reference.logged("done")
        called = set().union(*(set(d.logged("call")) for d in drives))
        assert called == set(reference.logged("call"))
        verdicts = sum((d.logged("until") for d in drives), Counter[str]())
        assert verdicts == reference.logged("until")

    @SAMPLE
    @given(spec=GRAPHS, data=st.data())
    def test_on_a_sqlite_file_stored_outcomes_are_never_redone(
        self, spec: DynamicGraph, data: st.DataObject
    ) -> None:
        from stageflow.adapters.sqlalchemy import SQLAlchemyStore

        (reference,) = _drives(spec, [], _memory)
        assert reference.result is not None
        stops = _drawn_stops(data, len(reference.events))
        with tempfile.TemporaryDirectory() as folder:

            async def sqlite() -> RunStore:
                store = SQLAlchemyStore(f"sqlite:///{Path(folder) / 'runs.db'}")
                await store.open()
                return store

            drives = _drives(spec, stops, sqlite)
        final = drives[-1]

        _assert_same_outcome(final, _outcome(reference.result))
        _assert_stored_outcomes_are_never_redone(spec.graph, drives)
        done = sum((d.logged("done") for d in drives), Counter[str]())
        assert set(done) == set(reference.logged("done"))  # at least once each
        called = set().union(*(set(d.logged("call")) for d in drives))
        assert called == set(reference.logged("call"))

    @LAWS
    @given(spec=GRAPHS)
    def test_a_run_without_a_store_gives_the_result_of_a_durable_one(
        self, spec: DynamicGraph
    ) -> None:
        (durable,) = _drives(spec, [], _memory)
        (bare,) = _drives(spec, [], None)
        assert durable.result is not None
        assert bare.result is not None

        assert _routes_refused(_outcome(bare.result)) == _routes_refused(_outcome(durable.result))
        assert bare.result.status is durable.result.status
        # The same calls (in an order that may differ where calls end at one instant).
        assert Counter(bare.log) == Counter(durable.log)
        assert all(n == 1 for n in bare.logged("call").values())


def _routes_refused(outcome: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """``outcome``, but without the data of ROUTE stages whose choice was refused (see
    test_a_refused_route_choice_keeps_its_data_with_a_store_too)."""
    return {
        name: (o[0], None, *o[2:]) if o[3] == "RouteError" else o for name, o in outcome.items()
    }


def _assert_stored_outcomes_are_never_redone(graph: StageGraph, drives: list[Drive]) -> None:
    """What a drive stored is neither called nor asked its condition in a later drive,
    nor is anything inside it; no drive calls anything twice."""
    for k, drive in enumerate(drives):
        assert all(n == 1 for n in drive.logged("call").values()), drive.logged("call")
        stored = drive.stored(graph)
        for later in drives[k + 1 :]:
            for what in ("call", "when"):
                redone = {
                    name
                    for name in later.logged(what)
                    if any(name == s or _inside(name, s) for s in stored)
                }
                assert not redone, f"stored in drive {k + 1}, then {what}: {sorted(redone)}"


# --------------------------------------------------------------------------- the kit itself


def _kinds(stages: tuple[DynamicStage, ...]) -> set[str]:
    return {s.kind for s in _walk(stages)}


def _walk(stages: tuple[DynamicStage, ...]) -> list[DynamicStage]:
    found = []
    for stage in stages:
        found.append(stage)
        found.extend(_walk(stage.body))
    return found


class TestDynamicGraphs:
    """What dynamic_graphs generates: every construct, deterministic, logged."""

    @pytest.mark.parametrize(
        ("construct", "found"),
        [
            ("a ROUTE stage", lambda s: s.kind == "route"),
            ("a map over a dependency's field", lambda s: s.kind == "map" and s.over),
            ("a map over a callable, keyed", lambda s: s.kind == "map" and s.keyed),
            ("a loop", lambda s: s.kind == "loop"),
            ("a subgraph", lambda s: s.kind == "subgraph"),
            ("a subgraph in a loop", lambda s: s.kind == "loop" and _kinds(s.body) & {"subgraph"}),
            ("a condition false", lambda s: s.when is False),
            ("a condition true", lambda s: s.when is True),
        ],
    )
    def test_every_construct_is_generated(
        self, construct: str, found: Callable[[DynamicStage], bool]
    ) -> None:
        spec = find(
            dynamic_graphs(),
            lambda g: any(found(s) for s in _walk(g.stages)),
            settings=settings(phases=[Phase.generate], database=None),  # no shrinking
        )
        assert any(found(s) for s in _walk(spec.stages)), construct

    @settings(max_examples=50)
    @given(spec=dynamic_graphs(failures=False))
    def test_without_failures_no_stage_fails(self, spec: DynamicGraph) -> None:
        result = run_virtual(Engine(fail_fast=False).run(spec.graph))
        assert result.status is RunStatus.COMPLETED, result.with_status("failed")
        assert not spec.failed()

    @settings(max_examples=30)
    @given(spec=dynamic_graphs(max_depth=0))
    def test_max_depth_0_has_no_loop_and_no_subgraph(self, spec: DynamicGraph) -> None:
        assert {s.kind for s in spec.stages} <= {"stage", "route", "map"}

    def test_a_hand_written_plan_runs_and_logs_its_calls(self) -> None:
        spec = DynamicGraph(
            (
                DynamicStage("s0", items=(3, 5)),
                DynamicStage("s1", "map", ("s0",), over="s0.items", keyed=True),
                DynamicStage("s2", "route", ("s0",), routes=("s3", "s4"), chosen=("s4",)),
                DynamicStage("s3", dependencies=("s2",)),
                DynamicStage("s4", dependencies=("s2",), when=True),
                DynamicStage(
                    "s5",
                    "loop",
                    ("s4",),
                    body=(DynamicStage("t0"),),
                    output_stage="t0",
                    max_iterations=3,
                    done_at=2,
                ),
            )
        )
        result = run_virtual(Engine().run(spec.graph))

        assert result.ok
        assert [i.stage for i in result["s1"].items] == ["s1[k3]", "s1[k5]"]
        assert result["s3"].reason == "not routed by 's2'"
        assert result["s5"].data["iteration"] == 2
        assert spec.calls() == Counter(
            ["s0", "s1[k3]", "s1[k5]", "s2", "s4", "s5[1].t0", "s5[2].t0"]
        )
        assert spec.conditions() == Counter(["s4"])
        assert spec.verdicts() == Counter({"s5": 2})

    def test_the_plan_shows_only_what_differs_from_the_defaults(self) -> None:
        assert repr(
            DynamicStage("s1", "map", ("s0",), item_plan=(("ok", 0.0), ("raise", 0.5)))
        ) == ("DynamicStage('s1', kind='map', dependencies=('s0',), item_plan={1: ('raise', 0.5)})")


# --------------------------------------------------------------------------- bugs found


async def _fast(ctx: Any) -> dict[str, str]:
    return {"stage": ctx.stage}


class _CancelAtTheEnd:
    """Cancels the run's task when the run emits its last event."""

    task: asyncio.Task[RunResult] | None = None

    def try_emit(self, event: Event) -> None:
        if event.type in RUN_END and self.task is not None:
            self.task.cancel()

    async def emit(self, event: Event) -> None:
        self.try_emit(event)


def test_a_cancel_as_the_run_ends_leaves_its_lease_held() -> None:
    graph = Pipeline("p").with_stage("a", _fast).build()

    async def main() -> tuple[bool, RunResult]:
        store = MemoryStore()
        sink = _CancelAtTheEnd()
        running = asyncio.create_task(Engine(store=store, sink=sink).run(graph, run_id="r"))
        sink.task = running
        await asyncio.wait([running])
        return running.cancelled(), await Engine(store=store).resume("r", graph)

    cancelled, resumed = run_virtual(main)

    assert cancelled  # the caller was told: the task was cancelled
    assert resumed.ok  # today: RunLeasedError, until the lease expires


async def _item(ctx: Any) -> dict[str, int]:
    if ctx.item == 1:
        raise ValueError("bad item")
    return {"x": ctx.item}


async def _slow(ctx: Any) -> dict[str, str]:
    await asyncio.sleep(2)
    return {"stage": ctx.stage}


@pytest.mark.parametrize("policy", ["skip", "collect"])
def test_a_map_restored_whole_reports_its_failed_items_as_they_failed(policy: str) -> None:
    graph = (
        Pipeline("p")
        .with_map("m", _item, over=lambda ctx: [0, 1], on_item_error=policy)
        .with_stage("slow", _slow, dependencies=("m",))
        .build()
    )

    async def main() -> tuple[RunResult, RunResult]:
        store = MemoryStore()
        running = asyncio.create_task(Engine(store=store).run(graph, run_id="r"))
        await asyncio.sleep(1)  # "m" completed and was stored; "slow" is running
        running.cancel()
        await asyncio.wait([running])
        return await Engine(store=store).resume("r", graph), await Engine().run(graph)

    resumed, uninterrupted = run_virtual(main)

    def failed_item(result: RunResult) -> tuple[Any, ...]:
        item = result["m"].items[1]
        return item.status, item.reason, item.attempts

    assert failed_item(uninterrupted) == (StageStatus.FAILED, "ValueError: bad item", 1)
    assert failed_item(resumed) == failed_item(uninterrupted)


def _spinning(signum: int, frame: object) -> None:
    raise TimeoutError("the virtual-time loop spins instead of running a timer that is due")


def test_virtual_time_goes_on_past_a_hundred_million_seconds() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1e8)  # about three years
        before = loop.time()
        await asyncio.sleep(0.25)
        return before, loop.time()

    previous = signal.signal(signal.SIGALRM, _spinning)
    signal.setitimer(signal.ITIMER_REAL, 2.0)  # real seconds: a working loop takes ms
    try:
        times = run_virtual(main)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    assert times == (1e8, 1e8 + 0.25)


async def _chooses_none(ctx: Any) -> StageOutput:
    return StageOutput.route(score=1)  # no target: a RouteError


def test_a_refused_route_choice_has_no_data_with_or_without_a_store() -> None:
    graph = (
        Pipeline("p")
        .with_stage("r", _chooses_none, StageKind.ROUTE, routes=("b",))
        .with_stage("b", _fast, dependencies=("r",))
        .build()
    )

    bare = run_virtual(Engine().run(graph))
    durable = run_virtual(Engine(store=MemoryStore()).run(graph))

    assert isinstance(bare["r"].error, RouteError)
    assert isinstance(durable["r"].error, RouteError)
    assert dict(durable["r"].data) == dict(bare["r"].data) == {}
