"""Input stages (with_input) on a real SQLite file and a real PostgreSQL server.

The durable scenarios of tests/unit/test_input_stages.py, on real I/O: each "process" is
an Engine of its own on a SQLAlchemyStore of its own (its own connections), closed before
the next one opens, knowing nothing but the database. Time is real, but wall time (the
deadlines' clock) is the tests' to move (:class:`Wall`); nothing waits on a sleep: a
driver's progress is awaited through events (stages that say they started, a sink that
says an input waits).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from stageflow import (
    Engine,
    Event,
    InputAlreadyGivenError,
    InputTimeoutError,
    InputValidationError,
    LoopClock,
    Pipeline,
    RunStatus,
    StageContext,
    StageGraph,
    StageStatus,
)
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.testing import RecordingSink

from ._sql import raw

EPOCH = 1_700_000_000.0
INPUT_ROWS = "SELECT name, value, given_at FROM stageflow_inputs WHERE run_id = 'r1' ORDER BY name"


class Wall(LoopClock):
    """The loop's clock for timers and sleeps, its wall time (deadlines) set by the test."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def wall(self) -> float:
        return self.now


class Approval(BaseModel):
    approved: bool
    note: str = ""


class Calls:
    """Counts the calls of each stage it makes."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()

    def draft(self) -> Any:
        async def draft(ctx: StageContext) -> dict[str, Any]:
            self.count["draft"] += 1
            return {"text": "hello owls"}

        return draft

    def sender(self) -> Any:
        async def send(ctx: StageContext) -> dict[str, Any]:
            self.count["send"] += 1
            approval = ctx.inputs["approval"]
            return {"sent": approval["approved"], "note": approval["note"]}

        return send


def approval_graph(calls: Calls, **options: Any) -> StageGraph:
    """draft -> approval (input) -> send."""
    return (
        Pipeline("mail")
        .with_stage("draft", calls.draft())
        .with_input(
            "approval",
            schema=Approval,
            dependencies=("draft",),
            prompt=lambda ctx: f"send {ctx.inputs['draft']['text']!r}?",
            **options,
        )
        .with_stage("send", calls.sender(), dependencies=("approval",))
        .build()
    )


async def as_process(
    url: str,
    act: Callable[[Engine], Awaitable[Any]],
    clock: LoopClock | None = None,
    **options: Any,
) -> Any:
    """``act(engine)`` in a "process" of its own: a new store and engine, closed after."""
    store = SQLAlchemyStore(url)
    try:
        return await act(Engine(store=store, clock=clock or Wall(), **options))
    finally:
        await store.aclose()


class Signal:
    """An EventSink that sets an asyncio.Event when an event of ``wanted`` type comes."""

    def __init__(self, wanted: str) -> None:
        self.wanted = wanted
        self.seen = asyncio.Event()
        self.events: list[Event] = []

    def try_emit(self, event: Event) -> None:
        self.events.append(event)
        if event.type == self.wanted:
            self.seen.set()

    async def emit(self, event: Event) -> None:
        self.try_emit(event)


# --------------------------------------------------------------------------- waiting


def test_a_run_that_waits_completes_in_other_processes_and_nothing_before_it_runs_twice(backend):
    url, where = backend
    calls = Calls()
    graph = approval_graph(calls)

    async def main() -> Any:
        waiting = await as_process(url, lambda e: e.run(graph, run_id="r1"))
        assert waiting.status is RunStatus.WAITING
        assert [(p.name, p.prompt) for p in waiting.waiting_for] == [
            ("approval", "send 'hello owls'?")
        ]
        parked = await raw(where, "SELECT status, lease_owner FROM stageflow_runs")
        # A second resume before the value: waits again, running nothing.
        again = await as_process(url, lambda e: e.resume("r1", graph))
        assert again.status is RunStatus.WAITING
        row = await as_process(
            url,
            lambda e: e.send("r1", "approval", {"approved": True, "note": "fine"}, graph=graph),
        )
        assert row.value is not None
        done = await as_process(url, lambda e: e.resume("r1", graph))
        read_back = await as_process(url, lambda e: e.resume("r1", graph))
        return parked, done, read_back, await raw(where, INPUT_ROWS)

    parked, done, read_back, rows = asyncio.run(main())
    assert parked == [("waiting", None)], "a waiting run holds no lease"
    assert done.status is RunStatus.COMPLETED
    assert done["approval"].data == {"approved": True, "note": "fine"}
    assert done["send"].data == {"sent": True, "note": "fine"}
    assert read_back["send"].data == {"sent": True, "note": "fine"}
    assert calls.count == {"draft": 1, "send": 1}
    assert [(name, value) for name, value, _ in rows] == [
        ("approval", '{"approved":true,"note":"fine"}')
    ]


def test_parallel_inputs_given_in_the_opposite_order_reach_their_own_stages(backend):
    url, _ = backend

    async def use(ctx: StageContext) -> dict[str, Any]:
        return {"got": ctx.inputs[ctx.spec.dependencies[0]]["value"]}

    graph = (
        Pipeline("p")
        .with_input("left", schema=str, prompt="left?")
        .with_input("right", schema=str, prompt="right?")
        .with_stage("use_left", use, dependencies=("left",))
        .with_stage("use_right", use, dependencies=("right",))
        .build()
    )

    async def main() -> Any:
        waiting = await as_process(url, lambda e: e.run(graph, run_id="r1"))
        assert sorted(p.name for p in waiting.waiting_for) == ["left", "right"]  # as they waited
        await as_process(url, lambda e: e.send("r1", "right", "R", graph=graph))
        partly = await as_process(url, lambda e: e.resume("r1", graph))
        assert partly.status is RunStatus.WAITING
        assert [p.name for p in partly.waiting_for] == ["left"]
        assert partly["use_right"].data == {"got": "R"}
        await as_process(url, lambda e: e.send("r1", "left", "L", graph=graph))
        return await as_process(url, lambda e: e.resume("r1", graph))

    result = asyncio.run(main())
    assert result.ok
    assert (result["use_left"].data, result["use_right"].data) == ({"got": "L"}, {"got": "R"})


def test_items_of_an_input_per_item_given_out_of_order_come_back_in_item_order(backend):
    url, where = backend

    async def split(ctx: StageContext) -> dict[str, Any]:
        return {"docs": [{"id": "doc-1"}, {"id": "doc-17"}, {"id": "doc-3"}]}

    async def publish(ctx: StageContext) -> dict[str, Any]:
        return {"approved": [r["value"] for r in ctx.inputs["approve"]["results"]]}

    graph = (
        Pipeline("review")
        .with_stage("split", split)
        .with_input(
            "approve",
            schema=bool,
            dependencies=("split",),
            over="split.docs",
            key=lambda doc: doc["id"],
        )
        .with_stage("publish", publish, dependencies=("approve",))
        .build()
    )

    async def main() -> Any:
        waiting = await as_process(url, lambda e: e.run(graph, run_id="r1"))
        # In the order the items began to wait: on real I/O, the order their rows were marked.
        names = {p.name for p in waiting.waiting_for}
        assert len(waiting.waiting_for) == len(names)
        assert names == {"approve[doc-1]", "approve[doc-17]", "approve[doc-3]"}
        for key, value in (("doc-3", True), ("doc-17", False), ("doc-1", True)):

            async def give(e: Engine, name: str = f"approve[{key}]", value: bool = value) -> Any:
                return await e.send("r1", name, value, graph=graph)

            await as_process(url, give)
        return await as_process(url, lambda e: e.resume("r1", graph)), await raw(where, INPUT_ROWS)

    result, rows = asyncio.run(main())
    assert result.ok
    assert result["publish"].data == {"approved": [True, False, True]}
    given = {name: value for name, value, _ in rows if name != "approve"}
    assert given == {"approve[doc-1]": "true", "approve[doc-17]": "false", "approve[doc-3]": "true"}


# --------------------------------------------------------------------------- sending


def test_a_value_that_fails_validation_stores_nothing(backend):
    url, where = backend
    graph = approval_graph(Calls())

    async def main() -> Any:
        await as_process(url, lambda e: e.run(graph, run_id="r1"))
        with pytest.raises(InputValidationError) as raised:
            await as_process(
                url, lambda e: e.send("r1", "approval", {"approved": "perhaps"}, graph=graph)
            )
        rows = await raw(where, INPUT_ROWS)
        return raised.value, rows, await as_process(url, lambda e: e.resume("r1", graph))

    error, rows, resumed = asyncio.run(main())
    assert (error.run_id, error.input, error.field, error.value) == (
        "r1", "approval", "approved", "perhaps",
    )  # fmt: skip
    assert rows == [("approval", None, None)], "a refused value left something in the store"
    assert resumed.status is RunStatus.WAITING


def test_a_second_value_is_refused_and_the_first_is_the_one_used(backend):
    url, where = backend
    graph = approval_graph(Calls())

    async def main() -> Any:
        await as_process(url, lambda e: e.run(graph, run_id="r1"))
        await as_process(url, lambda e: e.send("r1", "approval", {"approved": True}, graph=graph))
        with pytest.raises(InputAlreadyGivenError) as raised:
            await as_process(
                url, lambda e: e.send("r1", "approval", {"approved": False}, graph=graph)
            )
        rows = await raw(where, INPUT_ROWS)
        return raised.value, rows, await as_process(url, lambda e: e.resume("r1", graph))

    error, rows, result = asyncio.run(main())
    assert "approval" in str(error)
    assert [(name, value) for name, value, _ in rows] == [
        ("approval", '{"approved":true,"note":""}')
    ]
    assert result["send"].data == {"sent": True, "note": ""}


def test_a_value_sent_before_the_run_reaches_the_input_is_kept(backend):
    url, _ = backend
    calls = Calls()
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: StageContext) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"text": "hello owls"}

    graph = (
        Pipeline("mail")
        .with_stage("draft", slow)
        .with_input("approval", schema=Approval, dependencies=("draft",))
        .with_stage("send", calls.sender(), dependencies=("approval",))
        .build()
    )
    sink = RecordingSink()

    async def main() -> Any:
        driving = asyncio.ensure_future(
            as_process(url, lambda e: e.run(graph, run_id="r1"), sink=sink)
        )
        await asyncio.wait_for(started.wait(), 30)  # the run is in "draft"
        await as_process(url, lambda e: e.send("r1", "approval", {"approved": True}, graph=graph))
        release.set()
        return await asyncio.wait_for(driving, 30)

    result = asyncio.run(main())
    assert result.ok
    assert result["send"].data == {"sent": True, "note": ""}
    types = sink.types()
    assert "input.waiting" not in types
    assert "input.received" in types


# --------------------------------------------------------------------------- deadlines


@pytest.mark.parametrize("on_timeout", [{"approved": False, "note": "late"}, "fail"])
def test_a_deadline_passed_while_no_driver_ran_is_applied_at_resume(backend, on_timeout):
    url, where = backend
    calls = Calls()
    graph = approval_graph(calls, timeout=60, on_timeout=on_timeout)
    clock = Wall()
    sink = RecordingSink()

    async def main() -> Any:
        waiting = await as_process(url, lambda e: e.run(graph, run_id="r1"), clock)
        assert waiting.waiting_for[0].deadline == pytest.approx(EPOCH + 60)
        clock.now += 59  # not yet: the deadline holds across processes
        early = await as_process(url, lambda e: e.resume("r1", graph), clock)
        assert early.status is RunStatus.WAITING
        assert early.waiting_for[0].deadline == pytest.approx(EPOCH + 60)
        clock.now += 2  # nobody drives the run meanwhile
        with pytest.raises(InputTimeoutError):
            await as_process(
                url, lambda e: e.send("r1", "approval", {"approved": True}, graph=graph), clock
            )
        rows = await raw(where, INPUT_ROWS)
        return rows, await as_process(url, lambda e: e.resume("r1", graph), clock, sink=sink)

    rows, result = asyncio.run(main())
    assert rows == [("approval", None, None)], "a value past the deadline was stored"
    timed_out = sink.of_type("input.timed_out")
    assert [e.data["deadline"] for e in timed_out] == [pytest.approx(EPOCH + 60)]
    if on_timeout == "fail":
        assert result.status is RunStatus.FAILED
        assert isinstance(result["approval"].error, InputTimeoutError)
        assert result["send"].status is StageStatus.SKIPPED
        assert calls.count == {"draft": 1}
    else:
        assert result.ok
        assert result["approval"].data == {"approved": False, "note": "late"}
        assert result["send"].data == {"sent": False, "note": "late"}
        assert calls.count == {"draft": 1, "send": 1}


# --------------------------------------------------------------------------- a live driver


def test_a_driver_told_to_wait_finds_a_value_another_process_stored(backend):
    url, _ = backend
    calls = Calls()
    graph = approval_graph(calls)
    waits = Signal("input.waiting")

    async def main() -> Any:
        driving = asyncio.ensure_future(
            as_process(
                url, lambda e: e.run(graph, run_id="r1", wait=True), input_poll=0.02, sink=waits
            )
        )
        await asyncio.wait_for(waits.seen.wait(), 30)  # the input waits, its row marked
        assert not driving.done()
        await as_process(url, lambda e: e.send("r1", "approval", {"approved": True}, graph=graph))
        return await asyncio.wait_for(driving, 30)

    result = asyncio.run(main())
    assert result.ok
    assert result["send"].data == {"sent": True, "note": ""}
    assert calls.count == {"draft": 1, "send": 1}
    types = [e.type for e in waits.events]
    assert "run.waiting" not in types, "the driver stopped instead of waiting"
    assert types.index("input.waiting") < types.index("input.received")
