"""Input stages (with_input): runs that wait for a value a person gives, on virtual time.

Each durable scenario runs on a MemoryStore and on a SQLite file (``open_store``); a
"process exit" is the end of one engine's drive: the next drive is another Engine on
the same store, knowing nothing but the store.
"""

from __future__ import annotations

import asyncio
import datetime
from collections import Counter
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from stageflow import (
    Engine,
    InputAlreadyGivenError,
    InputTimeoutError,
    InputValidationError,
    Pipeline,
    RunStatus,
    RunWaitingError,
    StageContext,
    StageGraph,
    StageStatus,
    UnknownInputError,
    UnknownRunError,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.errors import ConfigurationError, InvalidOptionError
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import EPOCH, StoreOpener, VirtualWall, durably, noop


class Approval(BaseModel):
    approved: bool
    note: str = ""


class Calls:
    """Counts the calls of each stage it makes."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()

    def stage(self, name: str, seconds: float = 0.0, **data: Any) -> Any:
        async def stage(ctx: StageContext) -> dict[str, Any]:
            self.count[name] += 1
            await asyncio.sleep(seconds)
            return {"by": name, **data}

        stage.__name__ = name
        return stage

    def sender(self) -> Any:
        async def send(ctx: StageContext) -> dict[str, Any]:
            self.count["send"] += 1
            return {"sent": ctx.inputs["approval"]["approved"]}

        return send


def approval_graph(calls: Calls, **options: Any) -> StageGraph:
    """draft -> approval (input) -> send."""
    return (
        Pipeline("mail")
        .with_stage("draft", calls.stage("draft", text="hello owls"))
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


def engine(store: Any, **options: Any) -> Engine:
    return Engine(store=store, clock=VirtualWall(), **options)


# --------------------------------------------------------------------------- waiting


class TestARunThatWaits:
    def test_it_returns_waiting_with_the_pending_input_and_holds_no_lease(
        self, open_store: StoreOpener
    ) -> None:
        calls = Calls()
        graph = approval_graph(calls, timeout=3600)

        async def scenario(store: Any) -> None:
            result = await engine(store).run(graph, run_id="r1")
            assert result.status is RunStatus.WAITING
            assert not result.ok
            assert [p.name for p in result.waiting_for] == ["approval"]
            pending = result.waiting_for[0]
            assert pending.prompt == "send 'hello owls'?"
            assert pending.schema["required"] == ["approved"]
            assert pending.deadline == pytest.approx(EPOCH + 3600)
            assert result["approval"].status is StageStatus.WAITING
            assert result["send"].status is StageStatus.PENDING
            assert result["draft"].status is StageStatus.COMPLETED
            assert (await store.get_run("r1")).status is RunStatus.WAITING
            # No lease: another owner takes the run at once.
            lease = await store.acquire_lease("r1", "someone-else", 30.0)
            await store.release_lease(lease)
            with pytest.raises(RunWaitingError) as raised:
                result.raise_for_status()
            assert raised.value.waiting_for == ("approval",)

        durably(open_store, scenario)

    def test_send_then_resume_completes_and_no_stage_before_the_input_runs_twice(
        self, open_store: StoreOpener
    ) -> None:
        calls = Calls()
        graph = approval_graph(calls)

        async def scenario(store: Any) -> None:
            assert (await engine(store).run(graph, run_id="r1")).status is RunStatus.WAITING
            # Another process: it knows the graph and the store, nothing else.
            other = engine(store)
            await other.send("r1", "approval", {"approved": True, "note": "fine"}, graph=graph)
            result = await engine(store).resume("r1", graph)
            assert result.status is RunStatus.COMPLETED
            assert result["approval"].data == {"approved": True, "note": "fine"}
            assert result["send"].data == {"sent": True}
            again = await engine(store).resume("r1", graph)  # completed: read back as it was
            assert again["send"].data == {"sent": True}

        durably(open_store, scenario)
        assert calls.count == {"draft": 1, "send": 1}

    def test_a_resume_without_the_value_waits_again_running_nothing(
        self, open_store: StoreOpener
    ) -> None:
        calls = Calls()
        graph = approval_graph(calls)

        async def scenario(store: Any) -> None:
            await engine(store).run(graph, run_id="r1")
            for _ in range(3):
                result = await engine(store).resume("r1", graph)
                assert result.status is RunStatus.WAITING
                assert result.waiting_for[0].prompt == "send 'hello owls'?"

        durably(open_store, scenario)
        assert calls.count == {"draft": 1}

    def test_other_branches_run_to_their_end_before_the_run_waits(self) -> None:
        calls = Calls()
        graph = (
            Pipeline("p")
            .with_input("ok", schema=bool)
            .with_stage("slow", calls.stage("slow", 50.0))
            .with_stage("after_slow", calls.stage("after_slow", 10.0), dependencies=("slow",))
            .with_stage("after_ok", calls.stage("after_ok"), dependencies=("ok",))
            .build()
        )

        async def main() -> Any:
            loop = asyncio.get_running_loop()
            result = await engine(MemoryStore()).run(graph)
            return result, loop.time()

        result, ended = run_virtual(main())
        assert result.status is RunStatus.WAITING
        assert calls.count == {"slow": 1, "after_slow": 1}
        assert ended == pytest.approx(60.0)

    def test_an_input_gives_its_slot_up_while_it_waits(self) -> None:
        """With max_parallel=1 a waiting input would otherwise starve the run."""
        calls = Calls()
        graph = (
            Pipeline("p")
            .with_input("ok", schema=bool)
            .with_stage("other", calls.stage("other", 5.0))
            .with_stage("then", calls.stage("then"), dependencies=("ok", "other"))
            .build()
        )

        async def main() -> Any:
            eng = Engine(max_parallel=1, clock=VirtualWall())
            task = asyncio.ensure_future(eng.run(graph, run_id="r1", wait=True))
            await asyncio.sleep(10)
            assert calls.count == {"other": 1}
            await eng.send("r1", "ok", True)
            return await task

        result = run_virtual(main())
        assert result.ok
        assert result["ok"].data == {"value": True}

    def test_the_events_say_what_it_waits_for_and_when_it_got_it(
        self, open_store: StoreOpener
    ) -> None:
        calls = Calls()
        graph = approval_graph(calls, timeout=60)
        sink = RecordingSink()

        async def scenario(store: Any) -> None:
            await engine(store, sink=sink).run(graph, run_id="r1")
            await engine(store).send("r1", "approval", {"approved": False}, graph=graph)
            await engine(store, sink=sink).resume("r1", graph)

        durably(open_store, scenario)
        types = [str(e.type) for e in sink.events]
        waiting = next(e for e in sink.events if e.type == "input.waiting")
        assert waiting.stage == "approval"
        assert waiting.data == {"prompt": "send 'hello owls'?", "deadline": EPOCH + 60}
        parked = next(e for e in sink.events if e.type == "run.waiting")
        assert parked.data["waiting_for"] == ["approval"]
        assert types.index("input.waiting") < types.index("run.waiting")
        received = next(e for e in sink.events if e.type == "input.received")
        assert received.data["given_at"] == pytest.approx(EPOCH)
        assert types[-1] == "run.completed"
        assert "input.timed_out" not in types


# --------------------------------------------------------------------------- sending


class TestSending:
    def test_a_value_that_fails_validation_is_refused_and_nothing_is_stored(
        self, open_store: StoreOpener
    ) -> None:
        calls = Calls()
        graph = approval_graph(calls)

        async def scenario(store: Any) -> None:
            eng = engine(store)
            await eng.run(graph, run_id="r1")
            with pytest.raises(InputValidationError) as raised:
                await eng.send("r1", "approval", {"approved": "perhaps"})
            error = raised.value
            assert (error.run_id, error.input, error.field, error.value) == (
                "r1", "approval", "approved", "perhaps",
            )  # fmt: skip
            assert "approval" in str(error)
            assert "approved" in str(error)
            assert (await store.load_inputs("r1"))["approval"].value is None
            assert (await eng.resume("r1", graph)).status is RunStatus.WAITING

        durably(open_store, scenario)

    def test_a_second_value_is_refused(self, open_store: StoreOpener) -> None:
        graph = approval_graph(Calls())

        async def scenario(store: Any) -> None:
            eng = engine(store)
            await eng.run(graph, run_id="r1")
            await eng.send("r1", "approval", {"approved": True})
            with pytest.raises(InputAlreadyGivenError):
                await eng.send("r1", "approval", {"approved": False})
            result = await eng.resume("r1", graph)
            assert result["send"].data == {"sent": True}

        durably(open_store, scenario)

    def test_an_unknown_input_or_a_stage_that_is_no_input_is_refused(
        self, open_store: StoreOpener
    ) -> None:
        graph = approval_graph(Calls())

        async def scenario(store: Any) -> None:
            eng = engine(store)
            await eng.run(graph, run_id="r1")
            for name in ("aproval", "draft"):
                with pytest.raises(UnknownInputError) as raised:
                    await eng.send("r1", name, {"approved": True})
                assert raised.value.input == name
                assert raised.value.known == ("approval",)
            with pytest.raises(UnknownRunError):
                await eng.send("nope", "approval", {"approved": True}, graph=graph)

        durably(open_store, scenario)

    def test_a_value_sent_before_the_run_reaches_the_input_is_kept(
        self, open_store: StoreOpener
    ) -> None:
        calls = Calls()
        graph = (
            Pipeline("p")
            .with_stage("slow", calls.stage("slow", 100.0))
            .with_input("ok", schema=bool, dependencies=("slow",))
            .with_stage("then", calls.stage("then"), dependencies=("ok",))
            .build()
        )
        sink = RecordingSink()

        async def scenario(store: Any) -> Any:
            eng = engine(store, sink=sink)
            task = asyncio.ensure_future(eng.run(graph, run_id="r1"))
            await asyncio.sleep(1)  # the run is in "slow"
            await engine(store).send("r1", "ok", True, graph=graph)
            return await task

        result = durably(open_store, scenario)
        assert result.ok
        assert result["ok"].data == {"value": True}
        assert "input.waiting" not in [str(e.type) for e in sink.events]

    def test_parallel_inputs_given_in_the_opposite_order_reach_their_own_stages(
        self, open_store: StoreOpener
    ) -> None:
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

        async def scenario(store: Any) -> Any:
            eng = engine(store)
            waiting = await eng.run(graph, run_id="r1")
            assert [p.name for p in waiting.waiting_for] == ["left", "right"]
            await eng.send("r1", "right", "R")
            partly = await eng.resume("r1", graph)
            assert partly.status is RunStatus.WAITING
            assert [p.name for p in partly.waiting_for] == ["left"]
            assert partly["use_right"].data == {"got": "R"}
            await eng.send("r1", "left", "L")
            return await eng.resume("r1", graph)

        result = durably(open_store, scenario)
        assert result.ok
        assert (result["use_left"].data, result["use_right"].data) == ({"got": "L"}, {"got": "R"})

    def test_send_needs_the_graph_when_the_engine_never_ran_it(self) -> None:
        graph = approval_graph(Calls())

        async def main() -> None:
            store = MemoryStore()
            await engine(store).run(graph, run_id="r1")
            with pytest.raises(ConfigurationError, match="graph="):
                await engine(store).send("r1", "approval", {"approved": True})

        run_virtual(main())

    def test_send_refuses_bad_arguments(self) -> None:
        graph = approval_graph(Calls())

        async def main() -> None:
            eng = engine(MemoryStore())
            await eng.run(graph, run_id="r1")
            with pytest.raises(ConfigurationError, match="run_id"):
                await eng.send("bad id!", "approval", {})
            with pytest.raises(ConfigurationError, match="name"):
                await eng.send("r1", 3, {})  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match="StageGraph") as raised:
                await eng.send("r1", "approval", {}, graph="mail")  # type: ignore[arg-type]
            assert raised.value.field == "graph"

        run_virtual(main())


# --------------------------------------------------------------------------- a live driver


class TestWaitingDrivers:
    def test_a_driver_told_to_wait_finds_a_value_another_process_stored(
        self, open_store: StoreOpener
    ) -> None:
        calls = Calls()
        graph = approval_graph(calls)

        async def scenario(store: Any) -> Any:
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(
                engine(store, input_poll=5.0).run(graph, run_id="r1", wait=True)
            )
            await asyncio.sleep(12)
            assert not task.done()
            await engine(store).send("r1", "approval", {"approved": True}, graph=graph)
            sent = loop.time()
            result = await task
            return result, loop.time() - sent

        result, delay = durably(open_store, scenario)
        assert result.ok
        assert delay <= 5.0  # found at the next poll
        assert calls.count == {"draft": 1, "send": 1}

    def test_without_a_store_send_delivers_to_the_driver_at_once(self) -> None:
        calls = Calls()
        graph = approval_graph(calls)

        async def main() -> Any:
            eng = Engine(clock=VirtualWall())
            task = asyncio.ensure_future(eng.run(graph, run_id="r1", wait=True))
            await asyncio.sleep(1000)
            await eng.send("r1", "approval", Approval(approved=True))
            result = await task
            with pytest.raises(UnknownRunError):  # the drive ended: nothing waits
                await eng.send("r1", "approval", {"approved": True})
            return result

        result = run_virtual(main())
        assert result.ok
        assert result["send"].data == {"sent": True}

    def test_a_run_without_a_store_must_wait_live(self) -> None:
        graph = approval_graph(Calls())
        with pytest.raises(ConfigurationError, match="store") as raised:
            run_virtual(Engine().run(graph))
        assert raised.value.field == "wait"

    def test_a_store_that_keeps_no_inputs_is_refused(self) -> None:
        class Bare:  # the RunStore methods the engine checks, and no InputStore ones
            async def create_run(self, run: Any) -> None: ...
            async def acquire_lease(self, *a: Any, **k: Any) -> Any: ...
            async def record_stage(self, *a: Any) -> None: ...

        graph = approval_graph(Calls())
        with pytest.raises(ConfigurationError, match="InputStore"):
            run_virtual(Engine(store=Bare()).run(graph))  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="wait"):
            run_virtual(Engine(store=MemoryStore()).run(graph, wait="yes"))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- deadlines


class TestDeadlines:
    def test_a_deadline_passed_while_no_driver_ran_fails_the_input_at_resume(
        self, open_store: StoreOpener
    ) -> None:
        calls = Calls()
        graph = approval_graph(calls, timeout=60)

        async def scenario(store: Any) -> Any:
            await engine(store).run(graph, run_id="r1")
            await asyncio.sleep(61)  # nobody drives the run meanwhile
            with pytest.raises(InputTimeoutError):
                await engine(store).send("r1", "approval", {"approved": True}, graph=graph)
            return await engine(store).resume("r1", graph)

        result = durably(open_store, scenario)
        assert result.status is RunStatus.FAILED
        assert isinstance(result["approval"].error, InputTimeoutError)
        assert result["approval"].error.deadline == pytest.approx(EPOCH + 60)
        assert result["send"].status is StageStatus.SKIPPED
        assert calls.count == {"draft": 1}

    def test_on_timeout_completes_with_the_default_at_resume(self, open_store: StoreOpener) -> None:
        calls = Calls()
        graph = approval_graph(calls, timeout=60, on_timeout={"approved": False})
        sink = RecordingSink()

        async def scenario(store: Any) -> Any:
            await engine(store).run(graph, run_id="r1")
            await asyncio.sleep(3600)
            return await engine(store, sink=sink).resume("r1", graph)

        result = durably(open_store, scenario)
        assert result.ok
        assert result["approval"].data == {"approved": False, "note": ""}
        assert result["send"].data == {"sent": False}
        timed_out = next(e for e in sink.events if e.type == "input.timed_out")
        assert timed_out.data == {"deadline": EPOCH + 60, "applied": "default"}

    def test_the_deadline_is_fixed_when_the_stage_first_waits(
        self, open_store: StoreOpener
    ) -> None:
        graph = approval_graph(Calls(), timeout=100)

        async def scenario(store: Any) -> Any:
            first = await engine(store).run(graph, run_id="r1")
            await asyncio.sleep(50)
            second = await engine(store).resume("r1", graph)
            return first.waiting_for[0].deadline, second.waiting_for[0].deadline

        first, second = durably(open_store, scenario)
        assert first == second == pytest.approx(EPOCH + 100)

    def test_a_waiting_driver_applies_the_deadline_as_it_passes(self) -> None:
        graph = approval_graph(Calls(), timeout=30, on_timeout={"approved": False})

        async def main() -> Any:
            loop = asyncio.get_running_loop()
            result = await engine(MemoryStore()).run(graph, wait=True)
            return result, loop.time()

        result, ended = run_virtual(main())
        assert result.ok
        assert result["send"].data == {"sent": False}
        assert ended == pytest.approx(30.0)


# --------------------------------------------------------------------------- values, usage


class TestValues:
    def test_a_model_schema_gives_the_models_fields_and_a_type_gives_value(
        self, open_store: StoreOpener
    ) -> None:
        class Meeting(BaseModel):
            at: datetime.datetime
            room: Literal["red", "blue"]

        seen: dict[str, Any] = {}

        async def book(ctx: StageContext) -> None:
            seen.update(ctx.inputs["when"], count=ctx.inputs["count"]["value"])

        graph = (
            Pipeline("p")
            .with_input("when", schema=Meeting)
            .with_input("count", schema=list[int])
            .with_stage("book", book, dependencies=("when", "count"))
            .build()
        )

        async def scenario(store: Any) -> Any:
            eng = engine(store)
            await eng.run(graph, run_id="r1")
            await eng.send("r1", "when", {"at": "2026-12-02T10:00:00Z", "room": "red"})
            await eng.send("r1", "count", ["1", 2])
            return await engine(store).resume("r1", graph)

        result = durably(open_store, scenario)
        assert result.ok
        assert seen["at"] == datetime.datetime(2026, 12, 2, 10, tzinfo=datetime.UTC)
        assert (seen["room"], seen["count"]) == ("red", [1, 2])

    def test_usage_before_a_wait_counts_after_the_resume(self, open_store: StoreOpener) -> None:
        async def spend(ctx: StageContext) -> None:
            ctx.usage.report(input_tokens=100, output_tokens=10)

        graph = (
            Pipeline("p")
            .with_stage("spend", spend)
            .with_input("ok", schema=bool, dependencies=("spend",))
            .with_stage("more", spend, dependencies=("ok",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            eng = engine(store)
            await eng.run(graph, run_id="r1")
            await eng.send("r1", "ok", True)
            return await engine(store).resume("r1", graph)

        result = durably(open_store, scenario)
        assert result.usage.input_tokens == 200
        assert set(result.usage.by_stage) == {"spend", "more"}


# --------------------------------------------------------------------------- bad input


class TestBadDeclarations:
    @pytest.mark.parametrize(
        ("options", "option", "value"),
        [
            ({"schema": object()}, "schema", None),
            ({"schema": bool, "timeout": -1}, "timeout", -1),
            ({"schema": bool, "timeout": 5, "on_timeout": "maybe"}, "on_timeout", "maybe"),
            ({"schema": bool, "on_timeout": True}, "on_timeout", True),
            ({"schema": bool, "prompt": 3}, "prompt", 3),
            ({"schema": bool, "retry": 3}, "retry", 3),
            (
                {"schema": bool, "circuit_breaker": None, "output": Approval},
                "circuit_breaker",
                None,
            ),
            ({"schema": bool, "colour": "red"}, "colour", "red"),
        ],
    )
    def test_each_bad_option_names_the_stage_the_option_and_the_value(
        self, options: dict[str, Any], option: str, value: Any
    ) -> None:
        with pytest.raises(InvalidOptionError) as raised:
            Pipeline("p").with_input("ask", **options)
        error = raised.value
        assert error.stage == "ask"
        assert error.option == option
        if value is not None:
            assert error.value == value
        assert "'ask'" in str(error)
        assert option in str(error)

    def test_an_input_inside_a_loop_or_subgraph_is_refused(self) -> None:
        body = Pipeline("body").with_input("ask", schema=bool).build()
        with pytest.raises(InvalidOptionError, match="top level") as raised:
            Pipeline("p").with_subgraph("sub", body)
        assert (raised.value.stage, raised.value.option) == ("sub", "graph")
        with pytest.raises(InvalidOptionError, match="top level"):
            Pipeline("p").with_loop("loop", body, until=lambda out: True, max_iterations=2)

    def test_an_unknown_dependency_is_a_graph_error_at_build(self) -> None:
        from stageflow import UnknownDependencyError

        with pytest.raises(UnknownDependencyError):
            Pipeline("p").with_input("ask", schema=bool, dependencies=("nope",)).build()

    def test_the_engine_defaults_for_work_never_reach_an_input_stage(self) -> None:
        """Engine(stage_timeout=, retry=) limit stages that do work, not a person's answer."""
        graph = (
            Pipeline("p")
            .with_input("ask", schema=bool)
            .with_stage("then", noop, dependencies=("ask",))
            .build()
        )

        async def main() -> Any:
            from stageflow import RetryPolicy

            eng = Engine(clock=VirtualWall(), stage_timeout=1.0, retry=RetryPolicy(attempts=3))
            task = asyncio.ensure_future(eng.run(graph, run_id="r1", wait=True))
            await asyncio.sleep(100)
            await eng.send("r1", "ask", False)
            return await task

        result = run_virtual(main())
        assert result.ok
        assert result["ask"].attempts == 1


# --------------------------------------------------------------------------- per item


def review_graph(calls: Calls, **options: Any) -> StageGraph:
    """split (three docs) -> approve (an input per doc, keyed by id) -> publish."""

    async def split(ctx: StageContext) -> dict[str, Any]:
        calls.count["split"] += 1
        return {"docs": [{"id": "doc-1"}, {"id": "doc-17"}, {"id": "doc-3"}]}

    async def publish(ctx: StageContext) -> dict[str, Any]:
        calls.count["publish"] += 1
        return {"approved": [r["value"] for r in ctx.inputs["approve"]["results"]]}

    return (
        Pipeline("review")
        .with_stage("split", split)
        .with_input(
            "approve",
            schema=bool,
            dependencies=("split",),
            over="split.docs",
            key=lambda doc: doc["id"],
            prompt=lambda ctx: f"publish {ctx.item['id']}?",
            **options,
        )
        .with_stage("publish", publish, dependencies=("approve",))
        .build()
    )


class TestAnInputPerItem:
    def test_each_item_waits_by_name_and_key_and_values_come_back_in_item_order(
        self, open_store: StoreOpener
    ) -> None:
        calls = Calls()
        graph = review_graph(calls)

        async def scenario(store: Any) -> Any:
            eng = engine(store)
            waiting = await eng.run(graph, run_id="r1")
            assert [(p.name, p.prompt) for p in waiting.waiting_for] == [
                ("approve[doc-1]", "publish doc-1?"),
                ("approve[doc-17]", "publish doc-17?"),
                ("approve[doc-3]", "publish doc-3?"),
            ]
            assert [str(i.status) for i in waiting["approve"].items] == ["waiting"] * 3
            await eng.send("r1", "approve[doc-17]", False)
            partly = await engine(store).resume("r1", graph)
            assert [p.name for p in partly.waiting_for] == ["approve[doc-1]", "approve[doc-3]"]
            await eng.send("r1", "approve[doc-3]", True)
            await eng.send("r1", "approve[doc-1]", True)
            return await engine(store).resume("r1", graph)

        result = durably(open_store, scenario)
        assert result.ok
        assert result["publish"].data == {"approved": [True, False, True]}
        assert calls.count == {"split": 1, "publish": 1}

    def test_the_whole_input_and_an_unknown_key_are_refused(self, open_store: StoreOpener) -> None:
        graph = review_graph(Calls())

        async def scenario(store: Any) -> None:
            eng = engine(store)
            await eng.run(graph, run_id="r1")
            with pytest.raises(UnknownInputError) as raised:
                await eng.send("r1", "approve", True)
            assert raised.value.known == ("approve[key]",)
            await eng.send("r1", "approve[doc-1]", True)
            with pytest.raises(InputAlreadyGivenError):
                await eng.send("r1", "approve[doc-1]", True)

        durably(open_store, scenario)

    def test_a_live_driver_goes_on_as_items_are_given(self) -> None:
        calls = Calls()
        graph = review_graph(calls)

        async def main() -> Any:
            eng = Engine(clock=VirtualWall())
            task = asyncio.ensure_future(eng.run(graph, run_id="r1", wait=True))
            for key, value in (("doc-3", True), ("doc-1", False), ("doc-17", True)):
                await asyncio.sleep(10)
                assert not task.done()
                await eng.send("r1", f"approve[{key}]", value)
            return await task

        result = run_virtual(main())
        assert result["publish"].data == {"approved": [False, True, True]}

    def test_item_options_need_over(self) -> None:
        with pytest.raises(InvalidOptionError) as raised:
            Pipeline("p").with_input("ask", schema=bool, key=str)
        assert raised.value.option == "key"
        with pytest.raises(InvalidOptionError) as raised:
            Pipeline("p").with_input("ask", schema=bool, over="nope.items")
        assert raised.value.option == "over"


class TestManyCycles:
    def test_budgets_and_usage_hold_across_every_wait_and_resume(
        self, open_store: StoreOpener
    ) -> None:
        from stageflow import Budget, BudgetExceededError

        ran: list[str] = []

        def spend(name: str) -> Any:
            async def stage(ctx: StageContext) -> None:
                ran.append(name)
                ctx.usage.report(input_tokens=400, output_tokens=0)

            return stage

        graph = (
            Pipeline("cycles")
            .with_stage("s1", spend("s1"), estimate=400)
            .with_input("i1", schema=bool, dependencies=("s1",))
            .with_stage("s2", spend("s2"), dependencies=("i1",), estimate=400)
            .with_input("i2", schema=bool, dependencies=("s2",))
            .with_stage("s3", spend("s3"), dependencies=("i2",), estimate=400)
            .build()
        )

        async def scenario(store: Any) -> Any:
            def drive() -> Engine:  # a new process each time, the same settings
                return engine(store, budget=Budget(max_tokens=1000))

            assert (await drive().run(graph, run_id="r1")).status is RunStatus.WAITING
            await drive().send("r1", "i1", True, graph=graph)
            second = await drive().resume("r1", graph)
            assert second.status is RunStatus.WAITING
            assert second.usage.input_tokens == 800
            await drive().send("r1", "i2", True, graph=graph)
            return await drive().resume("r1", graph)

        result = durably(open_store, scenario)
        assert ran == ["s1", "s2"]  # s3 was blocked, none ran twice
        assert result.status is RunStatus.FAILED
        error = result["s3"].error
        assert isinstance(error, BudgetExceededError)
        assert (error.spent, error.requested) == (800, 400)
        assert result.usage.input_tokens == 800


def test_send_refuses_a_graph_that_is_not_the_runs() -> None:
    from stageflow import GraphMismatchError

    graph = approval_graph(Calls())
    other = Pipeline("mail").with_input("approval", schema=bool).build()  # another graph

    async def main() -> None:
        store = MemoryStore()
        await engine(store).run(graph, run_id="r1")
        with pytest.raises(GraphMismatchError):
            await engine(store).send("r1", "approval", {"approved": True}, graph=other)
        assert (await store.load_inputs("r1"))["approval"].value is None

    run_virtual(main())
