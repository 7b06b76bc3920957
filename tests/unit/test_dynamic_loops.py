"""Dynamic graphs: ``with_loop`` and ``with_subgraph`` (virtual time).

The durable tests run each scenario on the in-memory store and on a real SQLite file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from stageflow import (
    Engine,
    GraphError,
    InvalidOptionError,
    LoopExhaustedError,
    LoopInfo,
    Pipeline,
    RunStatus,
    StageContext,
    StageGraph,
    StageOutput,
    StageStatus,
    SubgraphFailedError,
)

from ._helpers import durably, failing, noop, run, run_recorded, sleeper


class Refine:
    """A generate -> critique loop body whose stages count their calls by full name.

    ``draft`` writes version n of the outer ``topic``; ``critique`` scores it n (the
    iteration); ``until`` holds from ``good_at``. ``fail`` names the stages that fail
    on their first call (``"refine[3].critique"``).
    """

    def __init__(self, good_at: int = 3, fail: tuple[str, ...] = ()) -> None:
        self.calls: dict[str, int] = {}
        self.until_calls: list[dict[str, Any]] = []
        self.good_at = good_at
        self.fail = fail
        self.seen: list[LoopInfo | None] = []

    def count(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    async def draft(self, ctx: StageContext) -> dict[str, Any]:
        n = self.count(ctx.stage)
        self.seen.append(ctx.loop)
        await asyncio.sleep(1)
        if ctx.stage in self.fail and n == 1:
            raise ConnectionError(f"{ctx.stage} down")
        assert ctx.loop is not None
        topic = ctx.inputs.get_from("topic", "topic")
        previous = ctx.loop.previous
        return {"text": f"{topic} v{ctx.loop.iteration}", "after": previous and previous["text"]}

    async def critique(self, ctx: StageContext) -> dict[str, Any]:
        n = self.count(ctx.stage)
        await asyncio.sleep(1)
        if ctx.stage in self.fail and n == 1:
            raise ConnectionError(f"{ctx.stage} down")
        assert ctx.loop is not None
        return {"score": ctx.loop.iteration, "text": ctx.inputs["draft"]["text"]}

    async def polish(self, ctx: StageContext) -> dict[str, Any]:
        n = self.count(ctx.stage)
        if ctx.stage in self.fail and n == 1:
            raise ConnectionError(f"{ctx.stage} down")
        return dict(ctx.inputs["critique"])

    def until(self, output: Mapping[str, Any]) -> bool:
        self.until_calls.append(dict(output))
        return output["score"] >= self.good_at

    def body(self, *, polish: bool = False) -> Pipeline:
        body = (
            Pipeline("body")
            .with_stage("draft", self.draft)
            .with_stage("critique", self.critique, dependencies=("draft",))
        )
        if polish:
            body = body.with_stage("polish", self.polish, dependencies=("critique",))
        return body

    def graph(self, max_iterations: int = 5, *, polish: bool = False, **options: Any) -> StageGraph:
        return (
            Pipeline("refining")
            .with_stage("topic", sleeper(1, topic="owls"))
            .with_loop(
                "refine",
                self.body(polish=polish),
                until=self.until,
                max_iterations=max_iterations,
                dependencies=("topic",),
                **options,
            )
            .with_stage("publish", noop, dependencies=("refine",))
            .build()
        )


def outputs(result: Any) -> dict[str, Any]:
    return {name: (str(r.status), dict(r.data)) for name, r in result.stages.items()}


# --------------------------------------------------------------------------- loops


class TestLoopIterations:
    def test_until_ends_the_loop_with_that_iterations_output(self):
        refine = Refine(good_at=3)

        result = run(refine.graph())

        assert result.ok
        assert result["refine"].data == {"score": 3, "text": "owls v3"}
        assert [o["score"] for o in refine.until_calls] == [1, 2, 3]
        assert "refine[4].draft" not in result

    def test_until_holding_at_once_runs_one_iteration(self):
        refine = Refine(good_at=1)

        result = run(refine.graph())

        assert result["refine"].data["score"] == 1
        assert refine.calls == {"refine[1].draft": 1, "refine[1].critique": 1}

    def test_each_iterations_stages_are_named_with_it_in_the_result(self):
        result = run(Refine(good_at=2).graph())

        assert list(result.stages) == [
            "topic",
            "refine",
            "publish",
            "refine[1].draft",
            "refine[1].critique",
            "refine[2].draft",
            "refine[2].critique",
        ]
        assert result["refine[2].critique"].data == {"score": 2, "text": "owls v2"}
        assert result["refine[1].draft"].status is StageStatus.COMPLETED

    def test_ctx_stage_names_the_iteration(self):
        refine = Refine(good_at=2)

        run(refine.graph())

        assert sorted(refine.calls) == [
            "refine[1].critique",
            "refine[1].draft",
            "refine[2].critique",
            "refine[2].draft",
        ]

    def test_ctx_loop_gives_the_iteration_and_the_previous_iterations_output(self):
        refine = Refine(good_at=3)

        run(refine.graph())

        assert refine.seen == [
            LoopInfo(1, None),
            LoopInfo(2, {"score": 1, "text": "owls v1"}),
            LoopInfo(3, {"score": 2, "text": "owls v2"}),
        ]

    def test_ctx_loop_is_none_outside_a_loop(self):
        seen: list[Any] = []

        async def look(ctx: StageContext) -> None:
            seen.append(ctx.loop)

        run(Pipeline().with_stage("plain", look).build())

        assert seen == [None]

    def test_body_stages_see_the_loops_inputs(self):
        refine = Refine(good_at=2)

        result = run(refine.graph())

        assert result["refine[1].draft"].data["text"] == "owls v1"

    def test_the_loops_dependents_see_its_output(self):
        seen: list[Any] = []

        async def publish(ctx: StageContext) -> None:
            seen.append(dict(ctx.inputs["refine"]))

        refine = Refine(good_at=2)
        graph = (
            Pipeline()
            .with_stage("topic", sleeper(0, topic="owls"))
            .with_loop(
                "refine",
                refine.body(),
                until=refine.until,
                max_iterations=4,
                dependencies=("topic",),
            )
            .with_stage("publish", publish, dependencies=("refine",))
            .build()
        )

        run(graph)

        assert seen == [{"score": 2, "text": "owls v2"}]

    def test_iterations_run_one_after_the_other(self):
        result = run(Refine(good_at=3).graph())

        assert result["refine[2].draft"].started == pytest.approx(3)  # topic 1 s, 2 s each
        assert result["refine"].duration == pytest.approx(6)

    def test_each_iteration_has_its_own_idempotency_key(self):
        keys: list[str] = []

        async def step(ctx: StageContext) -> dict[str, int]:
            keys.append(ctx.idempotency_key)
            assert ctx.loop is not None
            return {"n": ctx.loop.iteration}

        graph = (
            Pipeline()
            .with_loop(
                "refine",
                Pipeline().with_stage("step", step),
                until=lambda o: o["n"] == 3,
                max_iterations=3,
            )
            .build()
        )

        run(graph, run_id="r1")

        assert keys == ["r1:refine[1].step", "r1:refine[2].step", "r1:refine[3].step"]

    def test_a_loop_iteration_event_starts_each_iteration(self):
        _, sink = run_recorded(Refine(good_at=3).graph())

        iterations = sink.of_type("loop.iteration")
        assert [(e.stage, e.data["iteration"]) for e in iterations] == [
            ("refine", 1),
            ("refine", 2),
            ("refine", 3),
        ]
        assert sink.types("refine[2].critique") == ["stage.started", "stage.completed"]

    def test_a_body_given_as_a_graph_runs_as_one_given_as_a_pipeline(self):
        refine = Refine(good_at=2)
        graph = (
            Pipeline()
            .with_stage("topic", sleeper(0, topic="owls"))
            .with_loop(
                "refine",
                refine.body().build(),
                until=refine.until,
                max_iterations=3,
                dependencies=("topic",),
            )
            .build()
        )

        assert run(graph)["refine"].data == {"score": 2, "text": "owls v2"}

    def test_output_stage_chooses_the_iterations_output(self):
        refine = Refine(good_at=2)
        seen: list[Any] = []

        def until(output: Mapping[str, Any]) -> bool:
            seen.append(dict(output))
            return output["text"] == "owls v2"

        graph = (
            Pipeline()
            .with_stage("topic", sleeper(0, topic="owls"))
            .with_loop(
                "refine",
                refine.body(),
                until=until,
                max_iterations=3,
                output_stage="draft",
                dependencies=("topic",),
            )
            .build()
        )

        result = run(graph)

        assert result["refine"].data == {"text": "owls v2", "after": "owls v1"}
        assert seen[0] == {"text": "owls v1", "after": None}


class TestLoopExhausted:
    def test_max_iterations_without_until_holding_fails_with_loop_exhausted(self):
        refine = Refine(good_at=99)

        result = run(refine.graph(max_iterations=3))

        assert result.status is RunStatus.FAILED
        error = result["refine"].error
        assert isinstance(error, LoopExhaustedError)
        assert (error.stage, error.iterations) == ("refine", 3)
        assert "'refine'" in str(error)
        assert "3 iterations" in str(error)
        assert len(refine.until_calls) == 3
        assert "refine[4].draft" not in result
        assert result["publish"].status is StageStatus.SKIPPED

    def test_on_exhausted_complete_gives_the_last_iterations_output(self):
        refine = Refine(good_at=99)

        result = run(refine.graph(max_iterations=3, on_exhausted="complete"))

        assert result.ok
        assert result["refine"].data == {"score": 3, "text": "owls v3"}
        assert result["publish"].ok

    def test_max_iterations_one_runs_the_body_once(self):
        refine = Refine(good_at=99)

        result = run(refine.graph(max_iterations=1, on_exhausted="complete"))

        assert refine.calls == {"refine[1].draft": 1, "refine[1].critique": 1}
        assert result["refine"].data["score"] == 1


class TestLoopFailures:
    def test_a_failed_body_stage_fails_the_loop_with_a_subgraph_failed_error(self):
        refine = Refine(good_at=5, fail=("refine[2].critique",))

        result = run(refine.graph())

        assert result.status is RunStatus.FAILED
        error = result["refine"].error
        assert isinstance(error, SubgraphFailedError)
        assert (error.stage, error.inner) == ("refine", "refine[2].critique")
        assert error.reason == "ConnectionError: refine[2].critique down"
        assert isinstance(error.__cause__, ConnectionError)
        assert result["refine[2].critique"].status is StageStatus.FAILED
        assert "refine[3].draft" not in result
        assert len(refine.until_calls) == 1
        assert result["publish"].reason == "not started: stage 'refine' failed (fail_fast)"

    def test_an_until_that_raises_fails_the_loop(self):
        def until(output: Mapping[str, Any]) -> bool:
            raise KeyError("score")

        graph = (
            Pipeline()
            .with_loop("refine", Pipeline().with_stage("step", noop), until=until, max_iterations=3)
            .build()
        )

        result = run(graph)

        assert result["refine"].status is StageStatus.FAILED
        assert isinstance(result["refine"].error, KeyError)

    def test_a_loop_timeout_bounds_the_whole_loop(self):
        refine = Refine(good_at=99)

        result = run(refine.graph(max_iterations=5, timeout=5))

        assert result["refine"].status is StageStatus.FAILED
        assert result["refine"].duration == pytest.approx(5)


# --------------------------------------------------------------------------- durable loops


class TestDurableLoops:
    def test_a_resume_after_a_failure_in_iteration_3_goes_on_from_its_failed_stage(
        self, open_store
    ):
        refine = Refine(good_at=4, fail=("refine[3].critique",))
        graph = refine.graph(polish=True)
        plain = run(Refine(good_at=4).graph(polish=True))

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store).run(graph, run_id="r1")
            until_after_first = len(refine.until_calls)
            second = await Engine(store=store).resume("r1", graph)
            return first, until_after_first, second

        first, until_after_first, second = durably(open_store, scenario)

        assert first.status is RunStatus.FAILED
        assert isinstance(first["refine"].error, SubgraphFailedError)
        assert until_after_first == 2
        assert second.ok
        assert refine.calls == {
            "refine[1].draft": 1,
            "refine[1].critique": 1,
            "refine[1].polish": 1,
            "refine[2].draft": 1,
            "refine[2].critique": 1,
            "refine[2].polish": 1,
            "refine[3].draft": 1,
            "refine[3].critique": 2,
            "refine[3].polish": 1,
            "refine[4].draft": 1,
            "refine[4].critique": 1,
            "refine[4].polish": 1,
        }
        # until is never asked again about an iteration it already judged
        assert [o["score"] for o in refine.until_calls] == [1, 2, 3, 4]
        assert outputs(second) == outputs(plain)

    def test_a_resume_after_a_cancel_in_iteration_3_goes_on_from_where_it_stopped(self, open_store):
        refine = Refine(good_at=4)
        graph = refine.graph()
        plain = run(Refine(good_at=4).graph())

        async def scenario(store: Any) -> Any:
            task = asyncio.create_task(Engine(store=store).run(graph, run_id="r1"))
            await asyncio.sleep(6.5)  # topic 1 s, 2 s an iteration: in iteration 3's critique
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await Engine(store=store).resume("r1", graph)

        second = durably(open_store, scenario)

        assert second.ok
        assert refine.calls == {
            "refine[1].draft": 1,
            "refine[1].critique": 1,
            "refine[2].draft": 1,
            "refine[2].critique": 1,
            "refine[3].draft": 1,
            "refine[3].critique": 2,
            "refine[4].draft": 1,
            "refine[4].critique": 1,
        }
        assert [o["score"] for o in refine.until_calls] == [1, 2, 3, 4]
        assert outputs(second) == outputs(plain)

    def test_each_body_stage_is_stored_under_its_full_name(self, open_store):
        graph = Refine(good_at=2).graph()

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await store.stage_records("r1")

        records = durably(open_store, scenario)

        assert set(records) == {  # the loop's own outcome is its stages'
            "topic",
            "publish",
            "refine[1].draft",
            "refine[1].critique",
            "refine[2].draft",
            "refine[2].critique",
        }

    def test_a_completed_loop_is_restored_whole_on_resume(self, open_store):
        refine = Refine(good_at=2)
        calls = [0]

        async def publish(ctx: StageContext) -> None:
            calls[0] += 1
            if calls[0] == 1:
                raise ConnectionError("down")

        graph = (
            Pipeline()
            .with_stage("topic", sleeper(0, topic="owls"))
            .with_loop(
                "refine",
                refine.body(),
                until=refine.until,
                max_iterations=3,
                dependencies=("topic",),
            )
            .with_stage("publish", publish, dependencies=("refine",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await Engine(store=store).resume("r1", graph)

        second = durably(open_store, scenario)

        assert second.ok
        assert second["refine"].data == {"score": 2, "text": "owls v2"}
        assert len(refine.until_calls) == 2
        assert sum(refine.calls.values()) == 4
        assert calls == [2]

    def test_a_loop_restored_whole_still_reports_its_iterations_stages(self, open_store):
        refine = Refine(good_at=2)
        graph = (
            Pipeline()
            .with_stage("topic", sleeper(0, topic="owls"))
            .with_loop(
                "refine",
                refine.body(),
                until=refine.until,
                max_iterations=3,
                dependencies=("topic",),
            )
            .with_stage("publish", _flaky_once(), dependencies=("refine",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store).run(graph, run_id="r1")
            return first, await Engine(store=store).resume("r1", graph)

        first, second = durably(open_store, scenario)

        assert "refine[2].critique" in first
        assert list(second.stages) == list(first.stages)
        assert second["refine[2].critique"].data == first["refine[2].critique"].data


class TestDurableConditionsOfLoops:
    def test_a_loops_condition_that_held_is_not_asked_again_on_resume(self, open_store):
        refine = Refine(good_at=2)
        asked: list[str] = []

        def when(ctx: StageContext) -> bool:
            asked.append(ctx.stage)
            return len(asked) == 1  # would skip the loop if asked again

        graph = (
            Pipeline()
            .with_stage("topic", sleeper(0, topic="owls"))
            .with_loop(
                "refine",
                refine.body(),
                until=refine.until,
                max_iterations=3,
                dependencies=("topic",),
                when=when,
            )
            .with_stage("publish", _flaky_once(), dependencies=("refine",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await Engine(store=store).resume("r1", graph)

        resumed = durably(open_store, scenario)

        assert resumed.ok
        assert asked == ["refine"]
        assert resumed["refine"].data == {"score": 2, "text": "owls v2"}


def _flaky_once() -> Any:
    calls = [0]

    async def stage(ctx: StageContext) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError("down")

    return stage


# --------------------------------------------------------------------------- subgraphs


class Etl:
    """fetch -> load, a subgraph; fetch reads the enclosing stage's input ``source``."""

    def __init__(self, fail_fetch: int = 0) -> None:
        self.calls: dict[str, int] = {}
        self.fail_fetch = fail_fetch

    def count(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    async def fetch(self, ctx: StageContext) -> dict[str, Any]:
        if self.count(ctx.stage) <= self.fail_fetch:
            raise ConnectionError("source down")
        await asyncio.sleep(1)
        return {"rows": [1, 2, 3], "from": ctx.inputs.get_from("source", "url")}

    async def load(self, ctx: StageContext) -> dict[str, Any]:
        self.count(ctx.stage)
        await asyncio.sleep(1)
        return {"loaded": len(ctx.inputs["fetch"]["rows"])}

    def inner(self) -> Pipeline:
        return (
            Pipeline("etl-body")
            .with_stage("fetch", self.fetch)
            .with_stage("load", self.load, dependencies=("fetch",))
        )

    def graph(self, report: Any = noop, **options: Any) -> StageGraph:
        return (
            Pipeline("outer")
            .with_stage("source", sleeper(0, url="s3://bucket"))
            .with_subgraph("etl", self.inner(), dependencies=("source",), **options)
            .with_stage("report", report, dependencies=("etl",))
            .build()
        )


class TestSubgraphs:
    def test_its_stages_appear_as_name_dot_stage(self):
        etl = Etl()

        result = run(etl.graph())

        assert result.ok
        assert list(result.stages) == ["source", "etl", "report", "etl.fetch", "etl.load"]
        assert result["etl.fetch"].data == {"rows": [1, 2, 3], "from": "s3://bucket"}
        assert sorted(etl.calls) == ["etl.fetch", "etl.load"]

    def test_its_output_is_its_output_stages_and_dependents_see_it(self):
        seen: list[Any] = []

        async def report(ctx: StageContext) -> None:
            seen.append(dict(ctx.inputs["etl"]))

        result = run(Etl().graph(report))

        assert result["etl"].data == {"loaded": 3}
        assert seen == [{"loaded": 3}]

    def test_output_stage_chooses_another_stage_of_the_subgraph(self):
        result = run(Etl().graph(output_stage="fetch"))

        assert result["etl"].data == {"rows": [1, 2, 3], "from": "s3://bucket"}

    def test_its_stages_events_carry_their_full_names(self):
        _, sink = run_recorded(Etl().graph())

        assert sink.types("etl.fetch") == ["stage.started", "stage.completed"]
        assert sink.types("etl") == ["stage.started", "stage.completed"]

    def test_an_inner_failure_fails_the_subgraph_with_a_subgraph_failed_error(self):
        etl = Etl(fail_fetch=1)

        result = run(etl.graph(), Engine(fail_fast=False))

        assert result.status is RunStatus.FAILED
        error = result["etl"].error
        assert isinstance(error, SubgraphFailedError)
        assert (error.stage, error.inner) == ("etl", "etl.fetch")
        assert error.reason == "ConnectionError: source down"
        assert isinstance(error.__cause__, ConnectionError)
        assert "'etl.fetch'" in str(error)
        assert result["etl.load"].reason == "dependency 'etl.fetch' failed"
        assert result["report"].reason == "dependency 'etl' failed"

    def test_a_subgraph_whose_output_stage_is_skipped_is_skipped(self):
        inner = (
            Pipeline()
            .with_stage("fetch", lambda ctx: StageOutput.skip("nothing new"))
            .with_stage("load", noop, dependencies=("fetch",))
        )
        graph = Pipeline().with_subgraph("etl", inner).build()

        result = run(graph)

        assert result.ok
        assert result["etl"].status is StageStatus.SKIPPED
        assert "'etl.load'" in (result["etl"].reason or "")

    def test_a_subgraph_may_be_given_as_a_built_graph(self):
        etl = Etl()
        graph = (
            Pipeline()
            .with_stage("source", sleeper(0, url="u"))
            .with_subgraph("etl", etl.inner().build(), dependencies=("source",))
            .build()
        )

        result = run(graph)

        assert result["etl"].data == {"loaded": 3}
        assert etl.calls == {"etl.fetch": 1, "etl.load": 1}

    def test_the_spec_of_a_nested_stage_is_found_by_its_full_name(self):
        etl = Etl()
        graph = etl.graph()
        refine = Refine().graph()

        assert graph.spec_of("etl.fetch") is not None
        assert graph.spec_of("etl.fetch").name == "fetch"  # type: ignore[union-attr]
        assert refine.spec_of("refine[2].critique").name == "critique"  # type: ignore[union-attr]
        assert graph.spec_of("etl.ghost") is None


class TestDurableSubgraphs:
    def test_a_resume_does_not_run_a_completed_inner_stage_again(self, open_store):
        etl = Etl()
        calls = [0]

        async def flaky_load(ctx: StageContext) -> dict[str, int]:
            calls[0] += 1
            if calls[0] == 1:
                raise ConnectionError("db down")
            return {"loaded": 3}

        inner = (
            Pipeline()
            .with_stage("fetch", etl.fetch)
            .with_stage("load", flaky_load, dependencies=("fetch",))
        )
        graph = (
            Pipeline("outer")
            .with_stage("source", sleeper(0, url="s3://bucket"))
            .with_subgraph("etl", inner, dependencies=("source",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store).run(graph, run_id="r1")
            second = await Engine(store=store).resume("r1", graph)
            return first, second, await store.stage_records("r1")

        first, second, records = durably(open_store, scenario)

        assert first.status is RunStatus.FAILED
        assert second.ok
        assert second["etl"].data == {"loaded": 3}
        assert etl.calls == {"etl.fetch": 1}
        assert calls == [2]
        assert {"etl.fetch", "etl.load"} <= set(records)
        assert "etl" not in records  # a subgraph's outcome is its stages'

    def test_a_subgraph_restored_whole_still_reports_its_stages(self, open_store):
        graph = Etl().graph(_flaky_once())

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store).run(graph, run_id="r1")
            return first, await Engine(store=store).resume("r1", graph)

        first, second = durably(open_store, scenario)

        assert first.status is RunStatus.FAILED
        assert second.ok
        assert list(second.stages) == list(first.stages)
        assert second["etl.fetch"].data == first["etl.fetch"].data


# --------------------------------------------------------------------------- nesting


class TestNesting:
    def test_a_map_inside_a_loop_keeps_its_items_under_its_own_result(self):
        async def score(ctx: StageContext) -> dict[str, Any]:
            return {"v": ctx.item}

        body = Pipeline().with_map("score", score, over=lambda ctx: [ctx.loop.iteration])  # type: ignore[union-attr]
        graph = (
            Pipeline()
            .with_loop(
                "refine", body, until=lambda o: False, max_iterations=2, on_exhausted="complete"
            )
            .build()
        )

        result = run(graph)

        assert result["refine"].items == ()
        assert [r.stage for r in result["refine[1].score"].items] == ["refine[1].score[0]"]
        assert [r.stage for r in result["refine[2].score"].items] == ["refine[2].score[0]"]

    def test_a_map_inside_a_subgraph_keeps_its_items_under_its_own_result(self):
        async def score(ctx: StageContext) -> dict[str, Any]:
            return {"v": ctx.item * 10}

        inner = Pipeline().with_map("score", score, over=lambda ctx: [1, 2])
        result = run(Pipeline().with_subgraph("etl", inner).build())

        assert result["etl"].data == {"results": [{"v": 10}, {"v": 20}]}
        assert [r.stage for r in result["etl.score"].items] == ["etl.score[0]", "etl.score[1]"]

    def test_a_subgraph_inside_a_loop_is_named_with_both(self):
        etl = Etl()
        body = Pipeline().with_subgraph("etl", etl.inner())
        graph = (
            Pipeline()
            .with_stage("source", sleeper(0, url="u"))
            .with_loop(
                "again",
                body,
                until=lambda o: False,
                max_iterations=2,
                on_exhausted="complete",
                dependencies=("source",),
            )
            .build()
        )

        result = run(graph)

        assert result.ok
        assert sorted(etl.calls) == [
            "again[1].etl.fetch",
            "again[1].etl.load",
            "again[2].etl.fetch",
            "again[2].etl.load",
        ]
        assert result["again[2].etl.load"].data == {"loaded": 3}

    def test_a_resume_of_a_map_inside_a_loop_runs_only_its_unfinished_items(self, open_store):
        calls: dict[str, int] = {}

        async def score(ctx: StageContext) -> dict[str, Any]:
            calls[ctx.stage] = calls.get(ctx.stage, 0) + 1
            if ctx.stage == "again[2].score[1]" and calls[ctx.stage] == 1:
                raise ConnectionError("down")
            return {"v": ctx.item}

        body = Pipeline().with_map("score", score, over=lambda ctx: [1, 2, 3], max_parallel=1)
        graph = (
            Pipeline()
            .with_loop(
                "again", body, until=lambda o: False, max_iterations=2, on_exhausted="complete"
            )
            .build()
        )

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await Engine(store=store).resume("r1", graph)

        second = durably(open_store, scenario)

        assert second.ok
        assert calls == {
            "again[1].score[0]": 1,
            "again[1].score[1]": 1,
            "again[1].score[2]": 1,
            "again[2].score[0]": 1,
            "again[2].score[1]": 2,
            "again[2].score[2]": 1,
        }
        assert second["again"].data == {"results": [{"v": 1}, {"v": 2}, {"v": 3}]}


# --------------------------------------------------------------------------- bad input


def refused(build: Callable[[], object]) -> InvalidOptionError:
    with pytest.raises(InvalidOptionError) as caught:
        build()
    assert isinstance(caught.value, GraphError)
    return caught.value


BODY = Pipeline("body").with_stage("step", noop)


def done(output: Mapping[str, Any]) -> bool:
    return True


class TestBadLoops:
    @pytest.mark.parametrize("limit", [None, 0, -1, 2.5, "3", True], ids=repr)
    def test_max_iterations_missing_below_one_or_no_int_is_refused(self, limit):
        error = refused(
            lambda: Pipeline().with_loop("refine", BODY, until=done, max_iterations=limit)
        )

        assert (error.stage, error.option, error.value) == ("refine", "max_iterations", limit)
        assert "bounded" in str(error)

    @pytest.mark.parametrize("until", [None, True, "done", 3, dict], ids=repr)
    def test_an_until_that_is_not_callable_is_refused(self, until):
        error = refused(lambda: Pipeline().with_loop("refine", BODY, until=until, max_iterations=3))

        assert (error.stage, error.option, error.value) == ("refine", "until", until)

    @pytest.mark.parametrize("body", [noop, None, [BODY], "body"], ids=repr)
    def test_a_loop_body_that_is_not_a_graph_is_refused(self, body):
        error = refused(lambda: Pipeline().with_loop("refine", body, until=done, max_iterations=3))

        assert (error.stage, error.option, error.value) == ("refine", "body", body)
        assert "StageGraph" in str(error)

    def test_an_empty_loop_body_is_refused(self):
        with pytest.raises(GraphError):
            Pipeline().with_loop("refine", Pipeline("empty"), until=done, max_iterations=3)

    @pytest.mark.parametrize("policy", ["retry", "FAIL", None], ids=repr)
    def test_an_unknown_on_exhausted_is_refused(self, policy):
        error = refused(
            lambda: Pipeline().with_loop(
                "refine", BODY, until=done, max_iterations=3, on_exhausted=policy
            )
        )

        assert (error.stage, error.option, error.value) == ("refine", "on_exhausted", policy)
        assert "'complete'" in str(error)

    def test_an_output_stage_of_a_body_ending_in_two_stages_must_be_chosen(self):
        body = Pipeline().with_stage("a", noop).with_stage("b", noop)

        error = refused(lambda: Pipeline().with_loop("refine", body, until=done, max_iterations=3))

        assert (error.stage, error.option, error.value) == ("refine", "output_stage", None)

    def test_an_unknown_option_is_refused(self):
        error = refused(
            lambda: Pipeline().with_loop("refine", BODY, until=done, max_iterations=3, over="x.y")
        )

        assert (error.stage, error.option) == ("refine", "over")


class TestBadSubgraphs:
    @pytest.mark.parametrize("graph", [noop, None, "etl"], ids=repr)
    def test_a_subgraph_that_is_not_a_graph_is_refused(self, graph):
        error = refused(lambda: Pipeline().with_subgraph("etl", graph))

        assert (error.stage, error.option, error.value) == ("etl", "graph", graph)

    def test_output_stage_is_required_when_the_subgraph_ends_in_several_stages(self):
        inner = Pipeline("two").with_stage("a", noop).with_stage("b", noop)

        error = refused(lambda: Pipeline().with_subgraph("etl", inner))

        assert (error.stage, error.option, error.value) == ("etl", "output_stage", None)
        assert "'a'" in str(error)
        assert "'b'" in str(error)
        assert "output_stage=" in str(error)

    def test_output_stage_naming_no_stage_of_the_subgraph_is_refused(self):
        error = refused(lambda: Pipeline().with_subgraph("etl", Etl().inner(), output_stage="nope"))

        assert (error.stage, error.option, error.value) == ("etl", "output_stage", "nope")
        assert "'nope'" in str(error)
        assert "fetch" in str(error)

    def test_a_failure_outside_the_chosen_output_stage_still_fails_the_subgraph(self):
        inner = Pipeline("two").with_stage("a", sleeper(0, a=1)).with_stage("b", failing())

        result = run(Pipeline().with_subgraph("etl", inner, output_stage="a").build())

        assert isinstance(result["etl"].error, SubgraphFailedError)
        assert result["etl"].error.inner == "etl.b"  # type: ignore[union-attr]
