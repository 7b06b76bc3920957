"""RunService: starts, drives, reads and manages the runs of a catalog (on MemoryStore)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from stageflow import (
    Catalog,
    Engine,
    Event,
    Pipeline,
    RunService,
    RunStatus,
    StageContext,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.errors import (
    ConfigurationError,
    GraphMismatchError,
    InputAlreadyGivenError,
    InputTimeoutError,
    InputValidationError,
    RunCancelledError,
    RunExistsError,
    RunLeasedError,
    UnknownInputError,
    UnknownPipelineError,
    UnknownRunError,
)
from stageflow.ports import RunRecord
from stageflow.testing import ManualClock, run_virtual

T = TypeVar("T")


class Numbers(BaseModel):
    n: int = 1


class Decision(BaseModel):
    approved: bool


class World:
    """A RunService on a MemoryStore, with a catalog whose stages the test controls:
    ``hold`` waits for ``self.gate``; ``calls`` lists the stages whose code ran."""

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        changed: bool = False,
        clock: ManualClock | None = None,
    ) -> None:
        self.store = store or MemoryStore()
        self.gate = asyncio.Event()
        self.calls: list[str] = []
        self.engine = Engine(store=self.store, event_log=self.store, clock=clock)
        self.service = RunService(self.engine, self.catalog(changed))

    def catalog(self, changed: bool) -> Catalog:
        async def source(ctx: StageContext) -> dict[str, int]:
            self.calls.append("source")
            ctx.usage.report(model="m", input_tokens=3, output_tokens=2, cost=0.5)
            return {"n": ctx.data["n"]}

        async def double(ctx: StageContext) -> dict[str, int]:
            self.calls.append("double")
            return {"n": ctx.inputs.get_from("source", "n") * 2}

        async def hold(ctx: StageContext) -> dict[str, bool]:
            self.calls.append("hold")
            await self.gate.wait()
            return {"held": True}

        async def sleepy(ctx: StageContext) -> dict[str, bool]:
            await asyncio.sleep(3600)  # virtual: an hour in flight, unless cancelled
            return {"slept": True}

        async def broken(ctx: StageContext) -> dict[str, int]:
            raise RuntimeError("no luck")

        async def publish(ctx: StageContext) -> dict[str, bool]:
            self.calls.append("publish")
            return {"published": ctx.inputs.get_from("approve", "approved")}

        quick = Pipeline("quick").with_stage("source", source)
        quick = quick.with_stage("double", double, dependencies=("source",))
        gated = (
            Pipeline("gated")
            .with_stage("source", source)
            .with_stage("hold", hold, dependencies=("source",))
        )
        if changed:
            gated = gated.with_stage("extra", double, dependencies=("source",))
        approval = (
            Pipeline("approval")
            .with_stage("hold", hold)
            .with_input("approve", schema=Decision, dependencies=("hold",), prompt="Ship it?")
            .with_stage("publish", publish, dependencies=("approve",))
        )
        timed = Pipeline("timed").with_input("approve", schema=Decision, timeout=60)
        long = Pipeline("long")
        for i in range(200):  # 200 stages: more events than the service reads at a time
            long = long.with_stage(f"s{i}", step, dependencies=(f"s{i - 1}",) if i else ())
        return (
            Catalog()
            .add("quick", quick, data=Numbers, description="Doubles n", category="math")
            .add("gated", gated, data=Numbers)
            .add("approval", approval, tags=("human",))
            .add("timed", timed)
            .add("long", long)
            .add("sleepy", Pipeline("sleepy").with_stage("sleep", sleepy))
            .add("failing", Pipeline("failing").with_stage("broken", broken))
            .add(
                "failing_early",
                Pipeline("failing_early")
                .with_stage("broken", broken)
                .with_stage("after", double, dependencies=("broken",)),
            )
        )

    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        async def read() -> list[Event]:
            return [e async for e in await self.service.events(run_id, after=after)]

        return await within(read())

    async def until(
        self, run_id: str, kind: str, stage: str | None = None, *, after: int = 0
    ) -> None:
        """Return once the run's event log holds an event of this type (and stage) after
        the ``after`` seq."""

        async def seen() -> None:
            async for event in await self.service.events(run_id, after=after):
                if event.type == kind and (stage is None or event.stage == stage):
                    return
            raise AssertionError(f"run {run_id} ended without a {kind} event of {stage}")

        await within(seen())

    async def ended(self, run_id: str) -> str:
        """The run's status once its events end (its run.* end event is written)."""
        await self.events(run_id)
        return (await self.service.get(run_id))["status"]


async def within(awaitable: Awaitable[T], seconds: float = 600) -> T:
    """``awaitable``'s result; a TimeoutError (in virtual seconds) rather than a hang."""
    async with asyncio.timeout(seconds):
        return await awaitable


def virtual(main: Callable[[World], Awaitable[T]]) -> T:
    """``main(world)`` on virtual time, the service closed afterwards."""

    async def run() -> T:
        world = World()
        try:
            return await main(world)
        finally:
            await world.service.aclose()

    return run_virtual(run())


class TestConstruction:
    def test_an_engine_without_a_store_is_refused_naming_the_store(self):
        store = MemoryStore()
        with pytest.raises(ConfigurationError, match="RunCatalog") as caught:
            RunService(Engine(event_log=store), {})
        assert caught.value.field == "store"

    def test_a_store_that_cannot_list_runs_is_refused_naming_the_store(self):
        engine = Engine(store=DriveOnlyStore(), event_log=MemoryStore())
        with pytest.raises(ConfigurationError) as caught:
            RunService(engine, {})
        assert caught.value.field == "store"

    def test_an_engine_without_an_event_log_is_refused_naming_it(self):
        with pytest.raises(ConfigurationError, match="event log") as caught:
            RunService(Engine(store=MemoryStore()), {})
        assert caught.value.field == "event_log"

    @pytest.mark.parametrize(
        ("engine", "catalog", "poll", "field"),
        [
            ("engine", {}, 0.5, "engine"),
            (None, 42, 0.5, "catalog"),
            (None, {}, 0, "poll"),
            (None, {}, "1", "poll"),
        ],
    )
    def test_bad_arguments_are_refused_naming_the_field(self, engine, catalog, poll, field):
        store = MemoryStore()
        engine = Engine(store=store, event_log=store) if engine is None else engine
        with pytest.raises(ConfigurationError) as caught:
            RunService(engine, catalog, poll=poll)
        assert caught.value.field == field

    def test_a_mapping_is_taken_as_a_catalog(self):
        store = MemoryStore()
        service = RunService(
            Engine(store=store, event_log=store), {"p": Pipeline("p").with_stage("s", step)}
        )
        assert service.catalog.names == ("p",)
        assert "RunService" in repr(service)

    def test_the_engine_keeps_the_interceptors_given_and_adds_its_own(self):
        store = MemoryStore()
        mine = MarkingInterceptor()
        service = RunService(Engine(store=store, event_log=store, interceptors=[mine]), {})
        names = [ic.name for ic in service.engine.interceptors]
        assert "marking" in names
        assert "stageflow.service" in names
        assert service.engine.event_log is not None


async def step(ctx: StageContext) -> dict[str, bool]:
    return {"ok": True}


class MarkingInterceptor:
    name = "marking"
    priority = 1000

    def wrap(self, spec, call):
        return call


class DriveOnlyStore:
    """A RunStore that is no RunCatalog: it can drive a run but not list runs."""

    def __init__(self) -> None:
        self._store = MemoryStore()

    def __getattr__(self, name: str) -> Any:
        if name in {"list_runs", "usage", "delete_run", "prune"}:
            raise AttributeError(name)
        return getattr(self._store, name)


class TestStart:
    def test_it_returns_once_the_run_is_recorded_and_the_run_goes_on(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("gated", {"n": 2}, labels={"who": "me"})
            record = await world.store.get_run(run_id)  # no yield in between: it is there
            assert (record.pipeline, record.status) == ("gated", RunStatus.RUNNING)
            assert dict(record.labels) == {"who": "me"}
            assert world.service.driven == frozenset({run_id})
            await world.until(run_id, "stage.started", "hold")
            world.gate.set()
            assert await world.ended(run_id) == "completed"
            assert world.service.driven == frozenset()

        virtual(main)

    def test_a_run_id_given_is_the_runs(self):
        async def main(world: World) -> str:
            run_id = await world.service.start("quick", run_id="mine-1")
            return await world.ended(run_id)

        assert virtual(main) == "completed"

    def test_a_cancelled_caller_leaves_its_run_going(self):
        async def main(world: World) -> str:
            caller = asyncio.create_task(world.service.start("gated", run_id="r-1"))
            await asyncio.sleep(0)  # the caller is inside start(), waiting for its run
            caller.cancel()
            await asyncio.wait([caller])
            assert caller.cancelled()
            await world.until("r-1", "stage.started", "hold")
            world.gate.set()
            return await world.ended("r-1")

        assert virtual(main) == "completed"

    def test_an_unknown_pipeline_is_refused(self):
        async def main(world: World) -> None:
            with pytest.raises(UnknownPipelineError, match="'nope'") as caught:
                await world.service.start("nope")
            assert "quick" in caught.value.known
            assert await world.store.list_runs() == []

        virtual(main)

    @pytest.mark.parametrize(
        ("data", "labels", "run_id", "field"),
        [
            ({"n": "many"}, None, None, "data.n"),
            ([1, 2], None, None, "data"),
            (None, {"k": 1}, None, "labels"),
            (None, "k=v", None, "labels"),
            (None, None, "has space", "run_id"),
            (None, None, 17, "run_id"),
        ],
    )
    def test_bad_input_is_refused_naming_the_field_and_nothing_starts(
        self, data, labels, run_id, field
    ):
        async def main(world: World) -> None:
            with pytest.raises(ConfigurationError) as caught:
                await world.service.start("quick", data, labels=labels, run_id=run_id)
            assert caught.value.field == field
            assert await world.store.list_runs() == []
            assert world.service.driven == frozenset()

        virtual(main)

    def test_a_run_id_taken_in_the_store_is_refused_by_the_drive_and_raised_here(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("quick")
            await world.ended(run_id)
            with pytest.raises(RunExistsError):
                await world.service.start("quick", run_id=run_id)
            assert world.service.driven == frozenset()

        virtual(main)

    def test_a_run_id_driven_here_is_refused(self):
        async def main(world: World) -> None:
            await world.service.start("gated", run_id="r-1")
            with pytest.raises(RunExistsError):
                await world.service.start("quick", run_id="r-1")
            world.gate.set()
            assert await world.ended("r-1") == "completed"

        virtual(main)

    def test_a_run_cancelled_before_it_began_is_said_so(self):
        async def main(world: World) -> None:
            caller = asyncio.create_task(world.service.start("quick", run_id="early"))
            await asyncio.sleep(0)  # the caller waits for its drive, which has not run yet
            await world.service.aclose()  # ... and is cancelled before it records the run
            with pytest.raises(RunCancelledError, match="before it began"):
                await caller
            with pytest.raises(UnknownRunError):
                await world.store.get_run("early")

        virtual(main)

    def test_a_closed_service_starts_nothing(self):
        async def main(world: World) -> None:
            await world.service.aclose()
            with pytest.raises(RuntimeError, match="closed"):
                await world.service.start("quick")

        virtual(main)


class TestGet:
    def test_a_completed_run_shows_its_record_stages_and_usage(self):
        async def main(world: World) -> dict[str, Any]:
            run_id = await world.service.start("quick", {"n": 4}, labels={"a": "b"})
            await world.ended(run_id)
            return await world.service.get(run_id)

        shown = virtual(main)
        assert (shown["pipeline"], shown["status"], shown["error"]) == ("quick", "completed", None)
        assert shown["data"] == {"n": 4}
        assert shown["labels"] == {"a": "b"}
        assert shown["driven"] is False
        assert shown["fingerprint"].startswith("sha256:")
        assert [(s["name"], s["status"], s["attempts"]) for s in shown["stages"]] == [
            ("source", "completed", 1),
            ("double", "completed", 1),
        ]
        assert all(s["duration"] is not None and s["error"] is None for s in shown["stages"])
        usage = shown["usage"]
        assert (usage["tokens"], usage["input_tokens"], usage["output_tokens"]) == (5, 3, 2)
        assert usage["cost"] == pytest.approx(0.5)
        assert usage["by_stage"]["source"]["tokens"] == 5
        assert shown["waiting_for"] == []

    def test_a_failed_stage_shows_its_error(self):
        async def main(world: World) -> dict[str, Any]:
            run_id = await world.service.start("failing")
            await world.ended(run_id)
            return await world.service.get(run_id)

        shown = virtual(main)
        assert shown["status"] == "failed"
        (stage,) = shown["stages"]
        assert stage["status"] == "failed"
        assert "no luck" in stage["error"]

    def test_a_stage_in_flight_shows_as_running_and_the_run_as_driven(self):
        async def main(world: World) -> dict[str, Any]:
            run_id = await world.service.start("gated")
            await world.until(run_id, "stage.started", "hold")
            shown = await world.service.get(run_id)
            world.gate.set()
            await world.ended(run_id)
            return shown

        shown = virtual(main)
        assert (shown["status"], shown["driven"]) == ("running", True)
        assert [(s["name"], s["status"], s["attempts"]) for s in shown["stages"]] == [
            ("source", "completed", 1),
            ("hold", "running", 1),
        ]

    def test_stages_skipped_after_a_failure_show_why(self):
        async def main(world: World) -> dict[str, Any]:
            run_id = await world.service.start("failing_early")
            await world.ended(run_id)
            return await world.service.get(run_id)

        shown = virtual(main)
        broken, after = shown["stages"]
        assert (broken["status"], broken["attempts"]) == ("failed", 1)
        assert broken["duration"] is not None
        assert (after["status"], after["error"]) == ("skipped", None)
        assert "broken" in after["reason"]

    def test_a_waiting_run_shows_what_it_waits_for(self):
        async def main(world: World) -> dict[str, Any]:
            world.gate.set()
            run_id = await world.service.start("approval")
            await world.until(run_id, "run.waiting")
            return await world.service.get(run_id)

        shown = virtual(main)
        assert shown["status"] == "waiting"
        assert [(s["name"], s["status"]) for s in shown["stages"]] == [
            ("hold", "completed"),
            ("approve", "waiting"),
            ("publish", "pending"),
        ]
        (pending,) = shown["waiting_for"]
        assert (pending["name"], pending["prompt"], pending["deadline"]) == (
            "approve",
            "Ship it?",
            None,
        )
        assert pending["schema"]["required"] == ["approved"]

    def test_an_unknown_run_is_refused(self):
        async def main(world: World) -> None:
            with pytest.raises(UnknownRunError):
                await world.service.get("nope")
            with pytest.raises(ConfigurationError) as caught:
                await world.service.get("not an id")
            assert caught.value.field == "run_id"

        virtual(main)


class TestOutputs:
    def test_they_are_the_completed_stages_data(self):
        async def main(world: World) -> dict[str, Any]:
            run_id = await world.service.start("quick", {"n": 21})
            await world.ended(run_id)
            return await world.service.outputs(run_id)

        shown = virtual(main)
        assert shown["status"] == "completed"
        assert shown["outputs"] == {"source": {"n": 21}, "double": {"n": 42}}

    def test_a_failed_stage_has_none(self):
        async def main(world: World) -> dict[str, Any]:
            run_id = await world.service.start("failing")
            await world.ended(run_id)
            return await world.service.outputs(run_id)

        assert virtual(main)["outputs"] == {}

    def test_an_unknown_run_is_refused(self):
        async def main(world: World) -> None:
            with pytest.raises(UnknownRunError):
                await world.service.outputs("nope")

        virtual(main)


class TestCancel:
    def test_a_run_driven_here_is_cancelled_and_recorded_so(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("sleepy")
            await world.until(run_id, "stage.started", "sleep")
            assert await world.service.cancel(run_id) == {"run_id": run_id, "status": "cancelled"}
            assert (await world.store.get_run(run_id)).status == RunStatus.CANCELLED
            assert world.service.driven == frozenset()
            assert (await world.events(run_id))[-1].type == "run.cancelled"

        virtual(main)

    def test_a_run_waiting_for_input_is_cancelled_in_the_store_and_its_stream_ends(self):
        async def main(world: World) -> None:
            world.gate.set()
            run_id = await world.service.start("approval")
            follower = asyncio.create_task(world.events(run_id))
            await world.until(run_id, "run.waiting")
            assert await world.service.cancel(run_id) == {"run_id": run_id, "status": "cancelled"}
            record = await world.store.get_run(run_id)
            assert (record.status, record.error) == (
                RunStatus.CANCELLED,
                "cancelled while it waited for input",
            )
            events = await follower
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert (events[-1].type, events[-1].stage) == ("run.cancelled", None)
            assert events[-1].data["reason"] == "cancelled while it waited for input"
            with pytest.raises(UnknownInputError, match="ended"):
                await world.service.send(run_id, "approve", {"approved": True})
            # and it goes on, waiting again, when resumed
            await world.service.resume(run_id)
            await world.until(run_id, "run.waiting", after=events[-1].seq)
            assert (await world.service.get(run_id))["status"] == "waiting"

        virtual(main)

    def test_a_run_whose_driver_died_is_cancelled_once_its_lease_expired(self):
        async def main() -> None:
            clock = ManualClock()
            world = World(MemoryStore(clock=clock), clock=clock)
            store = world.store
            try:
                # What a driver killed mid-run leaves: a running run, leased, no events.
                await store.create_run(
                    RunRecord("dead-1", "sleepy", "sha256:x", "{}", RunStatus.RUNNING,
                              clock(), clock())
                )  # fmt: skip
                await store.acquire_lease("dead-1", "a dead driver", 30)
                with pytest.raises(RunLeasedError) as caught:  # its lease holds for now
                    await world.service.cancel("dead-1")
                assert caught.value.owner == "a dead driver"
                clock.advance(31)
                assert await world.service.cancel("dead-1") == {
                    "run_id": "dead-1",
                    "status": "cancelled",
                }
                record = await store.get_run("dead-1")
                assert record.error == "cancelled after its driver stopped"
                (event,) = await store.read_events("dead-1")
                assert (event.type, event.seq) == ("run.cancelled", 1)
            finally:
                await world.service.aclose()

        run_virtual(main())

    def test_a_run_that_has_ended_is_left_as_it_ended(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("quick")
            await world.ended(run_id)
            before = await world.store.read_events(run_id)
            assert await world.service.cancel(run_id) == {"run_id": run_id, "status": "completed"}
            assert await world.store.read_events(run_id) == before

        virtual(main)

    def test_an_unknown_run_is_refused(self):
        async def main(world: World) -> None:
            with pytest.raises(UnknownRunError):
                await world.service.cancel("nope")

        virtual(main)


class TestResume:
    def test_a_cancelled_run_goes_on_without_redoing_completed_stages(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("gated")
            await world.until(run_id, "stage.started", "hold")
            await world.service.cancel(run_id)
            assert world.calls == ["source", "hold"]
            world.gate.set()
            assert await world.service.resume(run_id) == {"run_id": run_id, "status": "running"}
            assert await world.ended(run_id) == "completed"
            assert world.calls == ["source", "hold", "hold"]  # source restored, not run

        virtual(main)

    def test_a_run_driven_here_is_refused_naming_this_service_as_its_driver(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("gated")
            with pytest.raises(RunLeasedError) as caught:
                await world.service.resume(run_id)
            assert caught.value.owner == world.service.engine.owner
            assert caught.value.expires_at > time.time()  # the lease the drive holds
            world.gate.set()
            assert await world.ended(run_id) == "completed"

        virtual(main)

    def test_a_run_driven_by_another_process_is_refused(self):
        async def main(world: World) -> None:
            other = World(world.store)  # another driver of the same store
            other.gate = world.gate
            try:
                run_id = await other.service.start("gated")
                with pytest.raises(RunLeasedError):
                    await world.service.resume(run_id)
                world.gate.set()
                assert await other.ended(run_id) == "completed"
            finally:
                await other.service.aclose()

        virtual(main)

    def test_a_catalog_whose_graph_changed_is_refused_naming_the_change(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("gated")
            await world.service.cancel(run_id)
            changed = World(world.store, changed=True)
            try:
                with pytest.raises(GraphMismatchError, match="extra"):
                    await changed.service.resume(run_id)
            finally:
                await changed.service.aclose()

        virtual(main)

    def test_a_run_of_a_pipeline_not_in_the_catalog_is_refused(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("failing")
            await world.ended(run_id)
            store = world.store
            service = RunService(Engine(store=store, event_log=store), {})
            with pytest.raises(UnknownPipelineError):
                await service.resume(run_id)

        virtual(main)

    def test_an_unknown_run_is_refused(self):
        async def main(world: World) -> None:
            with pytest.raises(UnknownRunError):
                await world.service.resume("nope")

        virtual(main)


class TestSend:
    def test_an_input_given_to_a_waiting_run_makes_it_go_on_and_complete(self):
        async def main(world: World) -> None:
            world.gate.set()
            run_id = await world.service.start("approval")
            await world.until(run_id, "run.waiting")
            given = await world.service.send(run_id, "approve", {"approved": True})
            assert given["value"] == {"approved": True}
            assert given["resumed"] is True
            assert given["given_at"] is not None
            assert await world.ended(run_id) == "completed"
            assert (await world.service.outputs(run_id))["outputs"]["publish"] == {
                "published": True
            }
            assert world.calls == ["hold", "publish"]  # hold ran once

        virtual(main)

    def test_an_input_given_while_the_run_is_driven_is_not_lost(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("approval")  # hold waits for the gate
            given = await world.service.send(run_id, "approve", {"approved": False})
            assert given["resumed"] is True
            world.gate.set()
            assert await world.ended(run_id) == "completed"
            assert (await world.service.outputs(run_id))["outputs"]["publish"] == {
                "published": False
            }

        virtual(main)

    def test_a_value_that_does_not_match_is_refused_naming_the_field_and_not_stored(self):
        async def main(world: World) -> None:
            world.gate.set()
            run_id = await world.service.start("approval")
            await world.until(run_id, "run.waiting")
            with pytest.raises(InputValidationError) as caught:
                await world.service.send(run_id, "approve", {"approved": "maybe"})
            assert (caught.value.field, caught.value.value) == ("approved", "maybe")
            assert (await world.store.load_inputs(run_id))["approve"].value is None
            assert (await world.service.get(run_id))["status"] == "waiting"

        virtual(main)

    def test_an_input_takes_one_value(self):
        async def main(world: World) -> None:
            world.gate.set()
            run_id = await world.service.start("approval")
            await world.until(run_id, "run.waiting")
            await world.service.send(run_id, "approve", {"approved": True})
            with pytest.raises(InputAlreadyGivenError):
                await world.service.send(run_id, "approve", {"approved": False})
            assert await world.ended(run_id) == "completed"

        virtual(main)

    def test_an_input_past_its_deadline_is_refused(self):
        async def main() -> None:
            clock = ManualClock()  # deadlines are on the engine's and the store's wall clock
            world = World(MemoryStore(clock=clock), clock=clock)
            try:
                run_id = await world.service.start("timed")
                await world.until(run_id, "run.waiting")
                clock.advance(61)  # past the input's 60 s deadline
                with pytest.raises(InputTimeoutError):
                    await world.service.send(run_id, "approve", {"approved": True})
                assert (await world.store.load_inputs(run_id))["approve"].value is None
            finally:
                await world.service.aclose()

        run_virtual(main())

    @pytest.mark.parametrize(
        ("run_id", "name", "error", "field"),
        [
            ("nope", "approve", UnknownRunError, None),
            ("bad id", "approve", ConfigurationError, "run_id"),
            (None, "nothing", UnknownInputError, None),
            (None, 7, ConfigurationError, "name"),
        ],
    )
    def test_bad_input_is_refused(self, run_id, name, error, field):
        async def main(world: World) -> None:
            world.gate.set()
            started = await world.service.start("approval")
            await world.until(started, "run.waiting")
            with pytest.raises(error) as caught:
                await world.service.send(run_id or started, name, {"approved": True})
            if field is not None:
                assert caught.value.field == field

        virtual(main)

    def test_an_input_of_a_run_another_service_drives_is_left_to_that_driver(self):
        async def main(world: World) -> None:
            other = World(world.store)
            other.gate = world.gate
            try:
                run_id = await other.service.start("approval")  # hold waits: it is driven
                given = await world.service.send(run_id, "approve", {"approved": True})
                assert given["resumed"] is False  # not this service's to drive
                world.gate.set()
                assert await other.ended(run_id) == "completed"  # it found the value
            finally:
                await other.service.aclose()

        virtual(main)

    def test_an_ended_run_takes_no_input(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("quick")
            await world.ended(run_id)
            with pytest.raises(UnknownInputError):
                await world.service.send(run_id, "approve", {"approved": True})

        virtual(main)


class TestDelete:
    def test_a_finished_run_is_forgotten_with_its_events(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("quick")
            await world.ended(run_id)
            await world.service.delete(run_id)
            with pytest.raises(UnknownRunError):
                await world.service.get(run_id)
            assert await world.store.read_events(run_id) == []

        virtual(main)

    def test_a_run_being_driven_is_refused(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("gated")
            with pytest.raises(RunLeasedError):
                await world.service.delete(run_id)
            world.gate.set()
            assert await world.ended(run_id) == "completed"

        virtual(main)

    def test_an_unknown_run_is_refused(self):
        async def main(world: World) -> None:
            with pytest.raises(UnknownRunError):
                await world.service.delete("nope")
            with pytest.raises(ConfigurationError):
                await world.service.delete("")

        virtual(main)


class TestList:
    def test_filters_combine(self):
        async def main(world: World) -> dict[str, list[str]]:
            a = await world.service.start("quick", labels={"team": "a"})
            b = await world.service.start("quick", labels={"team": "b"})
            c = await world.service.start("failing", labels={"team": "a"})
            for run_id in (a, b, c):
                await world.ended(run_id)

            async def ids(**filters: Any) -> list[str]:
                return [r["run_id"] for r in (await world.service.list(**filters))["runs"]]

            assert await ids() == [c, b, a]  # newest first
            return {
                "quick": await ids(pipeline="quick"),
                "failed": await ids(status="failed"),
                "team a": await ids(label={"team": "a"}),
                "team a quick": await ids(label={"team": "a"}, pipeline="quick"),
                "none": await ids(status=RunStatus.CANCELLED),
                "expected": [a, b, c],
            }

        found = virtual(main)
        a, b, c = found["expected"]
        assert found["quick"] == [b, a]
        assert found["failed"] == [c]
        assert found["team a"] == [c, a]
        assert found["team a quick"] == [a]
        assert found["none"] == []

    @settings(max_examples=25, deadline=None)
    @given(runs=st.integers(0, 12), page=st.integers(1, 5), labelled=st.booleans())
    def test_pages_follow_each_other_without_gap_or_duplicate(self, runs, page, labelled):
        async def main(world: World) -> tuple[list[str], list[str]]:
            started = [await world.service.start("quick", labels={"k": "v"}) for _ in range(runs)]
            for run_id in started:
                await world.ended(run_id)
            label = {"k": "v"} if labelled else None
            seen: list[str] = []
            cursor = None
            while True:
                listed = await world.service.list(limit=page, cursor=cursor, label=label)
                assert len(listed["runs"]) <= page
                seen += [r["run_id"] for r in listed["runs"]]
                cursor = listed["next"]
                if cursor is None:
                    return seen, started

        seen, started = virtual(main)
        assert seen == list(reversed(started))

    def test_runs_started_after_a_page_come_on_no_later_page(self):
        async def main(world: World) -> None:
            first = [await world.service.start("quick") for _ in range(3)]
            listed = await world.service.list(limit=2)
            late = await world.service.start("quick")
            rest = await world.service.list(limit=2, cursor=listed["next"])
            assert [r["run_id"] for r in listed["runs"] + rest["runs"]] == first[::-1]
            assert late not in [r["run_id"] for r in rest["runs"]]
            for run_id in [*first, late]:
                await world.ended(run_id)

        virtual(main)

    @pytest.mark.parametrize(
        ("filters", "field"),
        [
            ({"status": "sleeping"}, "status"),
            ({"pipeline": 3}, "pipeline"),
            ({"label": {"k": 1}}, "labels"),
            ({"limit": 0}, "limit"),
            ({"limit": 1001}, "limit"),
            ({"limit": "10"}, "limit"),
            ({"cursor": "not-a-cursor"}, "cursor"),
            ({"cursor": "WzEsMl0"}, "cursor"),  # [1,2]: a run id that is no str
            ({"cursor": 12}, "cursor"),
        ],
    )
    def test_bad_filters_are_refused_naming_the_field(self, filters, field):
        async def main(world: World) -> None:
            with pytest.raises(ConfigurationError) as caught:
                await world.service.list(**filters)
            assert caught.value.field == field

        virtual(main)


class TestEvents:
    def test_they_follow_a_run_to_its_end_and_go_on_after_a_seq(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("gated")
            await world.until(run_id, "stage.started", "hold")
            world.gate.set()
            events = await world.events(run_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert events[0].type == "run.started"
            assert events[-1].type == "run.completed"
            for k in range(len(events) + 1):
                assert await world.events(run_id, after=k) == events[k:]

        virtual(main)

    def test_an_ended_run_has_an_empty_ended_stream_after_its_last_event(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("quick")
            events = await world.events(run_id)
            stream = await world.service.events(run_id, after=events[-1].seq)
            assert stream.ended
            assert [e async for e in stream] == []
            earlier = await world.service.events(run_id, after=events[-2].seq)
            assert not earlier.ended
            assert [e async for e in earlier] == events[-1:]

        virtual(main)

    def test_a_run_that_waits_is_followed_through_its_resume(self):
        async def main(world: World) -> None:
            world.gate.set()
            run_id = await world.service.start("approval")
            follower = asyncio.create_task(world.events(run_id))
            await world.until(run_id, "run.waiting")
            await world.service.send(run_id, "approve", {"approved": True})
            types = [e.type for e in await follower]
            assert "run.waiting" in types
            assert types.count("run.started") == 2
            assert types[-1] == "run.completed"

        virtual(main)

    def test_a_resumed_run_is_followed_past_its_earlier_end_to_its_new_one(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("gated")
            await world.until(run_id, "stage.started", "hold")
            await world.service.cancel(run_id)
            first = [e.type for e in await world.events(run_id)]
            assert first[-1] == "run.cancelled"  # it ended: the stream ends there
            await world.service.resume(run_id)  # hold waits for the gate again
            follower = asyncio.create_task(world.events(run_id))
            await world.until(run_id, "stage.restored", "source")
            world.gate.set()
            types = [e.type for e in await follower]
            assert types[: len(first)] == first
            assert types[-1] == "run.completed"

        virtual(main)

    def test_a_run_of_more_events_than_a_read_holds_is_followed_whole(self):
        async def main(world: World) -> list[Event]:
            run_id = await world.service.start("long")
            return await world.events(run_id)

        events = virtual(main)
        assert len(events) > 600
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[-1].type == "run.completed"

    def test_a_stream_left_early_is_closed(self):
        async def main(world: World) -> None:
            run_id = await world.service.start("quick")
            await world.ended(run_id)
            stream = await world.service.events(run_id)
            async for _ in stream:
                break
            await stream.aclose()
            with pytest.raises(StopAsyncIteration):
                await stream.__anext__()

        virtual(main)

    def test_a_run_deleted_while_followed_ends_its_stream(self):
        async def main(world: World) -> list[str]:
            run_id = await world.service.start("quick")
            await world.ended(run_id)
            stream = await world.service.events(run_id)
            first = await stream.__anext__()
            await world.service.delete(run_id)
            return [first.type] + [e.type async for e in stream]  # what was read, then none

        seen = virtual(main)
        assert seen[0] == "run.started"

    def test_an_unknown_run_is_refused_before_any_event(self):
        async def main(world: World) -> None:
            with pytest.raises(UnknownRunError):
                await world.service.events("nope")
            run_id = await world.service.start("quick")
            for after in (-1, "3", 1.5):
                with pytest.raises(ConfigurationError) as caught:
                    await world.service.events(run_id, after=after)
                assert caught.value.field == "after"
            await world.ended(run_id)

        virtual(main)


class TestClose:
    def test_it_cancels_the_runs_it_drives_and_leaves_waiting_ones_waiting(self):
        async def main(world: World) -> None:
            sleepy = await world.service.start("sleepy")
            await world.until(sleepy, "stage.started", "sleep")
            world.gate.set()
            waiting = await world.service.start("approval")
            await world.until(waiting, "run.waiting")
            await world.service.aclose()
            assert world.service.driven == frozenset()
            assert (await world.store.get_run(sleepy)).status == RunStatus.CANCELLED
            assert (await world.store.get_run(waiting)).status == RunStatus.WAITING
            assert (await world.store.read_events(sleepy))[-1].type == "run.cancelled"
            await world.service.aclose()  # again: nothing to do

        virtual(main)

    def test_an_input_given_after_close_resumes_nothing(self):
        async def main(world: World) -> None:
            world.gate.set()
            run_id = await world.service.start("approval")
            await world.until(run_id, "run.waiting")
            await world.service.aclose()
            with pytest.raises(RuntimeError, match="closed"):
                await world.service.send(run_id, "approve", {"approved": True})

        virtual(main)

    def test_it_is_an_async_context_manager(self):
        async def main() -> RunStatus:
            world = World()
            async with world.service as service:
                run_id = await service.start("sleepy")
                await world.until(run_id, "stage.started", "sleep")
            return (await world.store.get_run(run_id)).status

        assert run_virtual(main()) == RunStatus.CANCELLED


class TestPipelines:
    def test_the_catalog_is_listed_in_order(self):
        service = World().service
        listed = service.pipelines()
        assert [p["name"] for p in listed] == [
            "quick",
            "gated",
            "approval",
            "timed",
            "long",
            "sleepy",
            "failing",
            "failing_early",
        ]
        assert listed[0] == {
            "name": "quick",
            "description": "Doubles n",
            "category": "math",
            "tags": [],
            "stages": 2,
        }
        assert listed[2]["tags"] == ["human"]

    def test_a_pipeline_shows_its_stages_drawing_and_schemas(self):
        shown = World().service.pipeline("approval")
        assert [(s["name"], s["kind"], s["dependencies"]) for s in shown["stages"]] == [
            ("hold", "work", []),
            ("approve", "input", ["hold"]),
            ("publish", "work", ["approve"]),
        ]
        assert shown["stages"][1]["input_schema"]["required"] == ["approved"]
        assert "input_schema" not in shown["stages"][0]
        assert "approve" in shown["mermaid"]
        assert shown["data_schema"] == {"type": "object"}
        assert shown["fingerprint"].startswith("sha256:")
        assert World().service.pipeline("quick")["data_schema"]["properties"]["n"]["type"] == (
            "integer"
        )

    def test_an_unknown_pipeline_is_refused(self):
        with pytest.raises(UnknownPipelineError):
            World().service.pipeline("nope")


class TestReady:
    def test_a_reachable_store_is_ready(self):
        async def main(world: World) -> None:
            await world.service.ready()

        virtual(main)
