"""Pipeline: the immutable builder, composition, and every shape a stage may take."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any, ClassVar

import pytest

from stageflow import (
    DuplicateStageError,
    Engine,
    GraphError,
    Pipeline,
    StageContext,
    StageKind,
    StageOutput,
    StageSpec,
    StageStatus,
    UnknownDependencyError,
)
from stageflow.interceptors import BaseInterceptor

from ._helpers import noop, run

_request = contextvars.ContextVar("_request", default="unset")


class TestPipeline:
    def test_with_stage_returns_a_new_pipeline_and_leaves_the_old_one_unchanged(self):
        empty = Pipeline("p")
        one = empty.with_stage("a", noop)
        two = one.with_stage("b", noop, dependencies=("a",))

        assert one is not empty
        assert two is not one
        assert len(empty) == 0
        assert [s.name for s in one] == ["a"]
        assert [s.name for s in two] == ["a", "b"]
        assert one.build().names == ("a",)

    def test_branches_from_a_shared_prefix_do_not_see_each_other(self):
        prefix = Pipeline("p").with_stage("load", noop)
        left = prefix.with_stage("left", noop, dependencies=("load",))
        right = prefix.with_stage("right", noop, dependencies=("load",))

        assert left.build().names == ("load", "left")
        assert right.build().names == ("load", "right")
        assert prefix.build().names == ("load",)

    def test_branches_share_the_prefix_specs_themselves(self):
        prefix = Pipeline("p").with_stage("load", noop)
        left = prefix.with_stage("left", noop)
        right = prefix.with_stage("right", noop)

        assert left.stages[0] is prefix.stages[0] is right.stages[0]

    def test_name_defaults_to_pipeline_and_is_kept(self):
        assert Pipeline().name == "pipeline"
        assert Pipeline("etl").with_stage("a", noop).name == "etl"
        assert Pipeline("etl").with_stage("a", noop).build().name == "etl"

    def test_stages_are_specs_in_declaration_order(self):
        pipeline = Pipeline().with_stage("z", noop).with_stage("a", noop).with_stage("m", noop)

        assert all(isinstance(s, StageSpec) for s in pipeline.stages)
        assert [s.name for s in pipeline.stages] == ["z", "a", "m"]
        assert [s.name for s in pipeline] == ["z", "a", "m"]
        assert len(pipeline) == 3

    def test_repr_names_the_pipeline_and_its_stage_count(self):
        assert repr(Pipeline("etl").with_stage("a", noop)) == "<Pipeline 'etl' with 1 stages>"

    def test_spec_keeps_the_options_frozen(self):
        pipeline = (
            Pipeline()
            .with_stage("a", noop)
            .with_stage(
                "b",
                noop,
                StageKind.AGENT,
                dependencies=["a"],
                optional=["a"],
                tags=["llm", "slow"],
                metadata={"model": "small"},
            )
        )
        spec = pipeline.stages[1]

        assert spec.kind is StageKind.AGENT
        assert spec.dependencies == ("a",)
        assert spec.optional == frozenset({"a"})
        assert spec.tags == frozenset({"llm", "slow"})
        assert spec.metadata == {"model": "small"}
        assert spec.stage is noop
        with pytest.raises(TypeError):
            spec.metadata["model"] = "big"  # type: ignore[index]
        with pytest.raises(AttributeError):
            spec.name = "c"  # type: ignore[misc]

    def test_metadata_is_copied_at_declaration(self):
        metadata = {"model": "small"}
        pipeline = Pipeline().with_stage("a", noop, metadata=metadata)
        metadata["model"] = "big"

        assert pipeline.stages[0].metadata["model"] == "small"

    def test_kind_defaults_to_work(self):
        assert Pipeline().with_stage("a", noop).stages[0].kind is StageKind.WORK

    @pytest.mark.parametrize("kind", [k.value for k in StageKind])
    def test_kind_may_be_given_as_its_str_value(self, kind):
        spec = Pipeline().with_stage("a", noop, kind).stages[0]

        assert spec.kind is StageKind(kind)


class TestPipelineCompose:
    def test_compose_appends_the_other_stages_after_this_ones(self):
        first = Pipeline("first").with_stage("a", noop).with_stage("b", noop)
        second = Pipeline("second").with_stage("c", noop).with_stage("d", noop)

        composed = first.compose(second)

        assert [s.name for s in composed] == ["a", "b", "c", "d"]
        assert composed.name == "first"
        assert len(first) == 2
        assert len(second) == 2

    def test_stages_of_the_other_pipeline_may_depend_on_this_ones(self):
        extract = Pipeline("etl").with_stage("extract", noop)
        load = Pipeline("tail").with_stage("load", noop, dependencies=("extract",))

        graph = extract.compose(load).build()

        assert graph.predecessors[graph.index["load"]] == (graph.index["extract"],)

    def test_the_other_pipeline_alone_still_refuses_its_unknown_dependency(self):
        load = Pipeline("tail").with_stage("load", noop, dependencies=("extract",))
        Pipeline("etl").with_stage("extract", noop).compose(load)

        with pytest.raises(UnknownDependencyError) as info:
            load.build()
        assert info.value.dependency == "extract"

    def test_duplicate_names_across_composed_pipelines_are_refused_at_build(self):
        first = Pipeline("first").with_stage("a", noop)
        second = Pipeline("second").with_stage("a", noop)

        composed = first.compose(second)  # accepted: build() checks the whole graph

        with pytest.raises(DuplicateStageError) as info:
            composed.build()
        assert info.value.stages == ("a",)
        assert "'a'" in str(info.value)

    def test_compose_with_an_empty_pipeline_keeps_the_stages(self):
        first = Pipeline("first").with_stage("a", noop)

        assert [s.name for s in first.compose(Pipeline())] == ["a"]
        assert [s.name for s in Pipeline().compose(first)] == ["a"]

    @pytest.mark.parametrize("other", [None, 5, "pipeline", [("a", noop)]])
    def test_compose_with_a_non_pipeline_is_refused_and_names_the_type(self, other):
        with pytest.raises(GraphError) as info:
            Pipeline().compose(other)  # type: ignore[arg-type]

        assert type(other).__name__ in str(info.value)
        assert "Pipeline" in str(info.value)


# --------------------------------------------------------------------------- stage shapes


class _AsyncExecute:
    instances: ClassVar[list[_AsyncExecute]] = []

    def __init__(self) -> None:
        type(self).instances.append(self)

    async def execute(self, ctx: StageContext) -> StageOutput:
        return StageOutput.ok(instance=id(self), stage=ctx.stage)


class _SyncExecute:
    threads: ClassVar[list[threading.Thread]] = []

    def execute(self, ctx: StageContext) -> dict[str, Any]:
        type(self).threads.append(threading.current_thread())
        return {"thread": threading.current_thread().name}


class _InstanceExecute:
    def __init__(self, value: int) -> None:
        self.value = value

    async def execute(self, ctx: StageContext) -> dict[str, int]:
        return {"value": self.value}


class _AsyncCallable:
    def __init__(self, value: int) -> None:
        self.value = value

    async def __call__(self, ctx: StageContext) -> dict[str, int]:
        return {"value": self.value}


class _TwoAttempts(BaseInterceptor):
    """Calls the stage twice, as a retrying interceptor would."""

    def wrap(self, spec, call):
        async def twice(ctx):
            await call(ctx)
            return await call(ctx.with_attempt(2))

        return twice


class TestStageShapes:
    def test_an_async_function_is_called_directly_in_the_loop(self):
        loop_threads: list[threading.Thread] = []

        async def stage(ctx):
            loop_threads.append(threading.current_thread())
            return {"x": 1}

        graph = Pipeline().with_stage("a", stage).build()
        result = run(graph)

        assert graph["a"].call is stage
        assert result["a"].data == {"x": 1}
        assert loop_threads == [threading.main_thread()]

    def test_a_sync_function_runs_in_a_worker_thread_with_the_callers_contextvars(self):
        seen: dict[str, Any] = {}

        def stage(ctx):
            seen["thread"] = threading.current_thread()
            seen["request"] = _request.get()
            seen["stage"] = ctx.stage
            return {"doubled": ctx.data["n"] * 2}

        async def main():
            _request.set("req-42")
            seen["loop"] = threading.current_thread()
            graph = Pipeline().with_stage("a", stage).build()
            return await Engine().run(graph, data={"n": 21})

        result = asyncio.run(main())

        assert result["a"].data == {"doubled": 42}
        assert seen["thread"] is not seen["loop"]
        assert seen["request"] == "req-42"
        assert seen["stage"] == "a"

    def test_a_class_with_async_execute_is_instantiated_for_every_attempt(self):
        _AsyncExecute.instances.clear()
        graph = Pipeline().with_stage("a", _AsyncExecute).build()

        result = run(graph, Engine(interceptors=[_TwoAttempts()]))
        run(graph)

        assert result["a"].ok
        assert len(_AsyncExecute.instances) == 3
        assert len({id(i) for i in _AsyncExecute.instances}) == 3
        assert result["a"].data["instance"] == id(_AsyncExecute.instances[1])

    def test_a_class_with_sync_execute_runs_in_a_worker_thread(self):
        _SyncExecute.threads.clear()
        graph = Pipeline().with_stage("a", _SyncExecute).build()

        result = asyncio.run(Engine().run(graph))

        assert result["a"].ok
        assert _SyncExecute.threads
        assert _SyncExecute.threads[0] is not threading.main_thread()

    def test_an_instance_with_execute_is_used_as_is(self):
        stage = _InstanceExecute(7)
        graph = Pipeline().with_stage("a", stage).build()

        assert run(graph)["a"].data == {"value": 7}
        assert graph["a"].call == stage.execute

    def test_an_instance_with_sync_execute_runs_in_a_worker_thread(self):
        threads: list[threading.Thread] = []

        class Stage:
            def execute(self, ctx):
                threads.append(threading.current_thread())
                return {"ok": True}

        result = asyncio.run(Engine().run(Pipeline().with_stage("a", Stage()).build()))

        assert result["a"].data == {"ok": True}
        assert threads[0] is not threading.main_thread()

    def test_an_async_callable_object_is_awaited(self):
        graph = Pipeline().with_stage("a", _AsyncCallable(3)).build()

        assert run(graph)["a"].data == {"value": 3}

    def test_one_function_may_back_several_stages(self):
        async def stage(ctx):
            return {"name": ctx.stage}

        graph = Pipeline().with_stage("a", stage).with_stage("b", stage).build()
        result = run(graph)

        assert result["a"].data == {"name": "a"}
        assert result["b"].data == {"name": "b"}

    def test_a_stage_may_return_none_a_mapping_or_a_stage_output(self):
        class Frozen(dict):
            pass

        async def returns_none(ctx):
            return None

        async def returns_mapping(ctx):
            return Frozen(x=1)

        async def returns_output(ctx):
            return StageOutput.ok(y=2)

        graph = (
            Pipeline()
            .with_stage("none", returns_none)
            .with_stage("mapping", returns_mapping)
            .with_stage("output", returns_output)
            .build()
        )
        result = run(graph)

        assert [r.status for r in result] == [StageStatus.COMPLETED] * 3
        assert dict(result["none"].data) == {}
        assert dict(result["mapping"].data) == {"x": 1}
        assert dict(result["output"].data) == {"y": 2}
