"""Bad input at every public entry point: a StageflowError that names what is wrong."""

from __future__ import annotations

import gc
import io
import math
import sys
from typing import Any

import pytest

from stageflow import (
    ConfigurationError,
    CycleError,
    DuplicateDependencyError,
    DuplicateStageError,
    Engine,
    FanOutSink,
    GraphError,
    InvalidOptionError,
    InvalidOutputError,
    InvalidStageError,
    InvalidStageNameError,
    JsonLinesSink,
    LoggingSink,
    Pipeline,
    SelfDependencyError,
    StageflowError,
    StageOutput,
    StageStatus,
    UnknownDependencyError,
)
from stageflow.interceptors import BaseInterceptor
from stageflow.testing import RecordingSink, VirtualTimeLoop, run_virtual

from ._helpers import noop, run


class TestStageNameValidation:
    @pytest.mark.parametrize(
        "name",
        ["", "has space", "a" * 129, "1abc", "-abc", "dotted.name", "tab\t", "ünïcode", "a/b"],
    )
    def test_an_invalid_stage_name_is_refused_and_named(self, name):
        with pytest.raises(InvalidStageNameError) as info:
            Pipeline().with_stage(name, noop)

        assert info.value.name == name
        assert repr(name) in str(info.value)
        assert "stage name" in str(info.value)
        assert isinstance(info.value, GraphError)
        assert isinstance(info.value, ValueError)

    @pytest.mark.parametrize("name", [None, 5, b"abc", ("a",)])
    def test_a_non_str_stage_name_is_refused_with_its_type(self, name):
        with pytest.raises(InvalidStageNameError) as info:
            Pipeline().with_stage(name, noop)  # type: ignore[arg-type]

        assert info.value.name is name
        assert type(name).__name__ in str(info.value)
        assert "must be a str" in str(info.value)

    @pytest.mark.parametrize("name", ["a", "_private", "A-b_c9", "a" * 128])
    def test_identifier_like_names_up_to_128_chars_are_accepted(self, name):
        assert Pipeline().with_stage(name, noop).stages[0].name == name

    @pytest.mark.parametrize("name", ["", "has space", "9lives", 5, None])
    def test_an_invalid_pipeline_name_is_refused_and_named(self, name):
        with pytest.raises(InvalidStageNameError) as info:
            Pipeline(name)  # type: ignore[arg-type]

        assert info.value.name == name
        assert repr(name) in str(info.value)
        assert "pipeline name" in str(info.value)


class _NoExecute:
    pass


class _NeedsArgs:
    def __init__(self, client: object) -> None:
        self.client = client

    async def execute(self, ctx: Any) -> None:
        return None


class _ExecuteTakesNothing:
    async def execute(self) -> None:
        return None


async def _no_args() -> None:
    return None


async def _two_args(ctx: Any, other: Any) -> None:
    return None


class TestStageObjectValidation:
    @pytest.mark.parametrize("stage", [None, 42, "fetch", {"execute": 1}])
    def test_a_non_callable_stage_is_refused_and_named(self, stage):
        with pytest.raises(InvalidStageError) as info:
            Pipeline().with_stage("fetch", stage)

        assert info.value.stage == "fetch"
        assert info.value.value is stage
        assert "'fetch'" in str(info.value)
        assert type(stage).__qualname__ in str(info.value)
        assert isinstance(info.value, TypeError)

    def test_a_class_without_execute_is_refused(self):
        with pytest.raises(InvalidStageError) as info:
            Pipeline().with_stage("fetch", _NoExecute)

        assert info.value.stage == "fetch"
        assert info.value.value is _NoExecute
        assert "_NoExecute has no execute" in str(info.value)

    def test_a_class_whose_constructor_needs_arguments_is_refused(self):
        with pytest.raises(InvalidStageError) as info:
            Pipeline().with_stage("fetch", _NeedsArgs)

        assert info.value.value is _NeedsArgs
        assert "_NeedsArgs" in str(info.value)
        assert "without arguments" in str(info.value)
        assert "'fetch'" in str(info.value)

    def test_an_instance_of_a_class_whose_constructor_needs_arguments_is_accepted(self):
        assert run(Pipeline().with_stage("fetch", _NeedsArgs(object())).build())["fetch"].ok

    @pytest.mark.parametrize(
        ("stage", "label"),
        [
            (_no_args, "_no_args()"),
            (_two_args, "_two_args(ctx: 'Any', other: 'Any')"),
            (lambda: None, "<lambda>()"),
            (lambda ctx, other: None, "<lambda>(ctx, other)"),
        ],
    )
    def test_a_function_not_taking_exactly_the_context_is_refused(self, stage, label):
        with pytest.raises(InvalidStageError) as info:
            Pipeline().with_stage("fetch", stage)

        assert info.value.stage == "fetch"
        assert label in str(info.value)
        assert "exactly one argument" in str(info.value)

    def test_an_execute_method_not_taking_the_context_is_refused(self):
        with pytest.raises(InvalidStageError) as info:
            Pipeline().with_stage("fetch", _ExecuteTakesNothing)

        assert "_ExecuteTakesNothing.execute" in str(info.value)

    def test_extra_optional_parameters_are_accepted(self):
        async def stage(ctx, retries=3, *rest, **options):
            return {"retries": retries}

        assert run(Pipeline().with_stage("a", stage).build())["a"].data == {"retries": 3}


class TestStageOptionValidation:
    def test_dependencies_as_a_lone_str_is_refused_with_a_hint(self):
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("a", noop).with_stage("b", noop, dependencies="a")  # type: ignore[arg-type]

        assert info.value.stage == "b"
        assert info.value.option == "dependencies"
        assert info.value.value == "a"
        assert "('a',)" in str(info.value)
        assert "dependencies" in str(info.value)

    @pytest.mark.parametrize("dependencies", [("a", 1), [None], (b"a",), 5, {"a": 1}.values()])
    def test_dependencies_with_non_str_items_are_refused(self, dependencies):
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("b", noop, dependencies=dependencies)

        assert info.value.stage == "b"
        assert info.value.option == "dependencies"
        assert info.value.value is dependencies
        assert "'b'" in str(info.value)

    @pytest.mark.parametrize("dependencies", [("a",), ["a"], {"a"}, frozenset({"a"})])
    def test_dependencies_may_be_any_tuple_list_or_set_of_names(self, dependencies):
        spec = Pipeline().with_stage("b", noop, dependencies=dependencies).stages[0]

        assert spec.dependencies == ("a",)

    def test_optional_not_among_dependencies_is_refused(self):
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("a", noop).with_stage(
                "b", noop, dependencies=("a",), optional=("a", "c")
            )

        assert info.value.stage == "b"
        assert info.value.option == "optional"
        assert info.value.value == ("a", "c")
        assert "['c']" in str(info.value)

    def test_optional_as_a_lone_str_is_refused(self):
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("b", noop, dependencies=("a",), optional="a")  # type: ignore[arg-type]

        assert info.value.option == "optional"
        assert "('a',)" in str(info.value)

    @pytest.mark.parametrize("kind", ["nope", 5, None, "WORK"])
    def test_an_unknown_kind_is_refused_listing_the_valid_ones(self, kind):
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("a", noop, kind)  # type: ignore[arg-type]

        assert info.value.stage == "a"
        assert info.value.option == "kind"
        assert info.value.value == kind
        assert repr(kind) in str(info.value)
        assert "transform" in str(info.value)

    @pytest.mark.parametrize("metadata", [[("k", "v")], "k=v", 5, {1: "v"}])
    def test_metadata_that_is_not_a_str_keyed_mapping_is_refused(self, metadata):
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("a", noop, metadata=metadata)

        assert info.value.stage == "a"
        assert info.value.option == "metadata"
        assert info.value.value is metadata
        assert repr(metadata) in str(info.value)

    @pytest.mark.parametrize(
        ("option", "hint"),
        [("dependency", "did you mean 'dependencies'?"), ("priority", "options: dependencies")],
    )
    def test_an_unknown_option_is_refused_with_a_suggestion(self, option, hint):
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("a", noop, **{option: ("x",)})

        assert info.value.stage == "a"
        assert info.value.option == option
        assert info.value.value == ("x",)
        assert f"unknown option {option!r}" in str(info.value)
        assert hint in str(info.value)

    @pytest.mark.parametrize("tags", ["llm", ("llm", 1), 5, {"llm": True}])
    def test_tags_of_the_wrong_type_are_refused(self, tags):
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("a", noop, tags=tags)

        assert info.value.stage == "a"
        assert info.value.option == "tags"
        assert info.value.value is tags


def _cycle_message(exc: BaseException) -> str:
    return str(exc).rsplit(": ", 1)[-1]


class TestBuildValidation:
    def test_duplicate_stage_names_are_refused(self):
        pipeline = Pipeline("etl").with_stage("a", noop).with_stage("a", noop)

        with pytest.raises(DuplicateStageError) as info:
            pipeline.build()

        assert info.value.stage == "a"
        assert info.value.stages == ("a",)
        assert "'a'" in str(info.value)
        assert "'etl'" in str(info.value)

    def test_an_unknown_dependency_is_refused_naming_both_stages(self):
        pipeline = Pipeline("etl").with_stage("a", noop).with_stage("b", noop, dependencies=("x",))

        with pytest.raises(UnknownDependencyError) as info:
            pipeline.build()

        assert info.value.stage == "b"
        assert info.value.dependency == "x"
        assert info.value.stages == ("b", "x")
        assert "'b'" in str(info.value)
        assert "'x'" in str(info.value)

    def test_a_self_dependency_is_refused(self):
        pipeline = Pipeline().with_stage("a", noop, dependencies=("a",))

        with pytest.raises(SelfDependencyError) as info:
            pipeline.build()

        assert info.value.stage == "a"
        assert info.value.stages == ("a",)
        assert "'a' depends on itself" in str(info.value)

    def test_a_dependency_listed_twice_is_refused(self):
        pipeline = Pipeline().with_stage("a", noop).with_stage("b", noop, dependencies=("a", "a"))

        with pytest.raises(DuplicateDependencyError) as info:
            pipeline.build()

        assert (info.value.stage, info.value.dependency) == ("b", "a")
        assert info.value.stages == ("b", "a")
        assert "'b'" in str(info.value)
        assert "'a' more than once" in str(info.value)

    def test_a_dependency_listed_twice_apart_is_refused(self):
        pipeline = (
            Pipeline()
            .with_stage("a", noop)
            .with_stage("x", noop)
            .with_stage("b", noop, dependencies=("a", "x", "a"))
        )

        with pytest.raises(DuplicateDependencyError) as info:
            pipeline.build()

        assert info.value.stages == ("b", "a")

    def test_a_two_stage_cycle_is_named(self):
        pipeline = (
            Pipeline()
            .with_stage("a", noop, dependencies=("b",))
            .with_stage("b", noop, dependencies=("a",))
        )

        with pytest.raises(CycleError) as info:
            pipeline.build()

        assert set(info.value.cycle) == {"a", "b"}
        assert len(info.value.cycle) == 3
        assert info.value.cycle[0] == info.value.cycle[-1]

    def test_a_cycle_is_named_in_data_flow_order_from_its_first_declared_stage(self):
        # b reads a, c reads b, a reads c: the data flows a -> b -> c -> a.
        pipeline = (
            Pipeline()
            .with_stage("a", noop, dependencies=("c",))
            .with_stage("b", noop, dependencies=("a",))
            .with_stage("c", noop, dependencies=("b",))
        )

        with pytest.raises(CycleError) as info:
            pipeline.build()

        assert info.value.cycle == ("a", "b", "c", "a")
        assert _cycle_message(info.value) == "a -> b -> c -> a"
        assert info.value.stages == ("a", "b", "c")

    def test_a_cycle_behind_an_acyclic_prefix_names_only_the_cycle(self):
        pipeline = (
            Pipeline()
            .with_stage("root", noop)
            .with_stage("x", noop, dependencies=("root", "z"))
            .with_stage("y", noop, dependencies=("x",))
            .with_stage("z", noop, dependencies=("y",))
            .with_stage("tail", noop, dependencies=("z",))
        )

        with pytest.raises(CycleError) as info:
            pipeline.build()

        assert info.value.cycle == ("x", "y", "z", "x")
        assert "x -> y -> z -> x" in str(info.value)

    def test_every_graph_error_is_a_stageflow_error_and_a_value_error(self):
        for error in (
            DuplicateStageError,
            DuplicateDependencyError,
            UnknownDependencyError,
            SelfDependencyError,
            CycleError,
        ):
            assert issubclass(error, GraphError)
            assert issubclass(error, StageflowError)
            assert issubclass(error, ValueError)


class _NoWrap:
    name = "nowrap"
    priority = 1


class _FloatPriority(BaseInterceptor):
    priority = 1.5  # type: ignore[assignment]


class _BoolPriority(BaseInterceptor):
    priority = True


class _NoName:
    name = None
    priority = 1

    def wrap(self, spec, call):
        return call


class _ReturnsNothing(BaseInterceptor):
    def wrap(self, spec, call):
        return None  # type: ignore[return-value]


class TestEngineConfiguration:
    @pytest.mark.parametrize(
        ("interceptor", "words"),
        [
            (_NoWrap(), "no wrap(spec, call)"),
            ("retry", "no wrap(spec, call)"),
            (_FloatPriority(), "priority must be an int, not 1.5"),
            (_BoolPriority(), "priority must be an int, not True"),
            (_NoName(), "name must be a str"),
        ],
    )
    def test_a_bad_interceptor_is_refused_and_named(self, interceptor, words):
        with pytest.raises(ConfigurationError) as info:
            Engine(interceptors=[BaseInterceptor(name="ok"), interceptor])

        assert info.value.field == "interceptors"
        assert info.value.value is interceptor
        assert "interceptors[1]" in str(info.value)
        assert words in str(info.value)

    @pytest.mark.parametrize("interceptors", ["retry", b"retry", 5, BaseInterceptor()])
    def test_interceptors_that_are_not_a_sequence_are_refused(self, interceptors):
        with pytest.raises(ConfigurationError) as info:
            Engine(interceptors=interceptors)

        assert info.value.field == "interceptors"
        assert info.value.value is interceptors
        assert repr(interceptors) in str(info.value)

    def test_an_interceptor_whose_wrap_returns_a_non_callable_is_named(self):
        engine = Engine(interceptors=[_ReturnsNothing(name="broken")])
        graph = Pipeline().with_stage("a", noop).build()

        with pytest.raises(ConfigurationError) as info:
            engine.calls(graph)

        assert info.value.field == "interceptors"
        assert info.value.value.name == "broken"
        assert "'broken'" in str(info.value)
        assert "'a'" in str(info.value)
        with pytest.raises(ConfigurationError):
            run(graph, engine)

    @pytest.mark.parametrize("sink", [object(), "sink", print])
    def test_a_sink_without_try_emit_is_refused(self, sink):
        with pytest.raises(ConfigurationError) as info:
            Engine(sink=sink)

        assert info.value.field == "sink"
        assert info.value.value is sink
        assert "try_emit" in str(info.value)

    @pytest.mark.parametrize("sink", [LoggingSink, RecordingSink])
    def test_a_sink_class_instead_of_an_instance_is_refused(self, sink):
        # LoggingSink.try_emit is callable on the class too, but every event would fail.
        with pytest.raises(ConfigurationError) as info:
            Engine(sink=sink)

        assert info.value.field == "sink"
        assert info.value.value is sink
        assert sink.__name__ in str(info.value)

    def test_an_interceptor_class_instead_of_an_instance_is_refused(self):
        # BaseInterceptor has a callable wrap, an int priority and a str name as a class.
        with pytest.raises(ConfigurationError) as info:
            Engine(interceptors=[BaseInterceptor])

        assert info.value.field == "interceptors"
        assert info.value.value is BaseInterceptor
        assert "interceptors[0]" in str(info.value)

    @pytest.mark.parametrize("max_parallel", [0, -1, True, False, 1.5, "2"])
    def test_max_parallel_must_be_a_positive_int(self, max_parallel):
        with pytest.raises(ConfigurationError) as info:
            Engine(max_parallel=max_parallel)

        assert info.value.field == "max_parallel"
        assert info.value.value is max_parallel
        assert repr(max_parallel) in str(info.value)

    @pytest.mark.parametrize("fail_fast", [0, 1, "yes", None])
    def test_fail_fast_must_be_a_bool(self, fail_fast):
        with pytest.raises(ConfigurationError) as info:
            Engine(fail_fast=fail_fast)

        assert info.value.field == "fail_fast"
        assert info.value.value is fail_fast
        assert repr(fail_fast) in str(info.value)

    @pytest.mark.parametrize("clock", [object(), "clock", 5])
    def test_a_clock_without_monotonic_wall_and_sleep_is_refused(self, clock):
        with pytest.raises(ConfigurationError) as info:
            Engine(clock=clock)

        assert info.value.field == "clock"
        assert info.value.value is clock
        assert "monotonic()" in str(info.value)


class TestRunArguments:
    graph = Pipeline("p").with_stage("a", noop).build()

    def test_a_pipeline_instead_of_a_graph_asks_for_build(self):
        pipeline = Pipeline("p").with_stage("a", noop)

        with pytest.raises(ConfigurationError) as info:
            run_virtual(Engine().run(pipeline))  # type: ignore[arg-type]

        assert info.value.field == "graph"
        assert info.value.value is pipeline
        assert ".build()" in str(info.value)
        assert "Pipeline" in str(info.value)

    @pytest.mark.parametrize("graph", [None, "graph", [noop]])
    def test_something_else_than_a_graph_is_refused_with_its_type(self, graph):
        with pytest.raises(ConfigurationError) as info:
            run_virtual(Engine().run(graph))

        assert info.value.field == "graph"
        assert type(graph).__name__ in str(info.value)
        assert ".build()" not in str(info.value)

    @pytest.mark.parametrize("data", [[("k", 1)], "data", 5])
    def test_data_must_be_a_mapping(self, data):
        with pytest.raises(ConfigurationError) as info:
            run_virtual(Engine().run(self.graph, data=data))

        assert info.value.field == "data"
        assert info.value.value is data
        assert type(data).__name__ in str(info.value)

    def test_data_keys_must_be_str(self):
        with pytest.raises(ConfigurationError) as info:
            run_virtual(Engine().run(self.graph, data={"ok": 1, 2: "two"}))

        assert info.value.field == "data"
        assert info.value.value == 2
        assert "2 (int)" in str(info.value)

    @pytest.mark.parametrize("run_id", ["", "has space", "a" * 129, "-leading", 5, b"id"])
    def test_a_bad_run_id_is_refused(self, run_id):
        with pytest.raises(ConfigurationError) as info:
            run_virtual(Engine().run(self.graph, run_id=run_id))

        assert info.value.field == "run_id"
        assert info.value.value == run_id
        assert repr(run_id) in str(info.value)

    @pytest.mark.parametrize("timeout", [0, -1, math.nan, -math.inf, True, "5"])
    def test_timeout_must_be_a_positive_number_or_inf(self, timeout):
        with pytest.raises(ConfigurationError) as info:
            run_virtual(Engine().run(self.graph, timeout=timeout))

        assert info.value.field == "timeout"
        assert info.value.value is timeout
        assert repr(timeout) in str(info.value)

    def test_a_refused_run_starts_no_stage(self):
        calls: list[str] = []

        async def stage(ctx):
            calls.append(ctx.stage)

        graph = Pipeline().with_stage("a", stage).build()
        with pytest.raises(ConfigurationError):
            run_virtual(Engine().run(graph, timeout=0))

        assert calls == []


class TestContextMisuse:
    @pytest.mark.parametrize("event_type", ["", "has space", ".progress", "progress.", 5, None])
    def test_emit_with_a_bad_type_fails_the_stage_naming_it(self, event_type):
        async def stage(ctx):
            ctx.emit(event_type, pct=5)

        result = run(Pipeline().with_stage("reporter", stage).build())

        error = result["reporter"].error
        assert result["reporter"].status is StageStatus.FAILED
        assert isinstance(error, ConfigurationError)
        assert error.field == "type"
        assert error.value == event_type
        assert "'reporter'" in str(error)
        assert repr(event_type) in str(error)


class TestStageOutputValidation:
    def test_a_cancelled_output_is_refused(self):
        with pytest.raises(ConfigurationError) as info:
            StageOutput(StageStatus.CANCELLED)

        assert info.value.field == "status"
        assert info.value.value is StageStatus.CANCELLED
        assert "cancelled" in str(info.value)

    @pytest.mark.parametrize("status", ["completed", None, 1])
    def test_a_status_that_is_not_a_stage_status_is_refused(self, status):
        with pytest.raises(ConfigurationError) as info:
            StageOutput(status)  # type: ignore[arg-type]

        assert info.value.field == "status"
        assert info.value.value == status


class TestInvalidOutput:
    @pytest.mark.parametrize(
        ("value", "type_name"),
        [(42, "int"), ([1, 2], "list"), ("done", "str"), ((1,), "tuple"), (b"x", "bytes")],
    )
    def test_a_stage_returning_a_non_output_fails_naming_the_stage_and_the_type(
        self, value, type_name
    ):
        async def stage(ctx):
            return value

        result = run(Pipeline().with_stage("summarize", stage).build())

        error = result["summarize"].error
        assert result.status == "failed"
        assert result["summarize"].status is StageStatus.FAILED
        assert isinstance(error, InvalidOutputError)
        assert isinstance(error, StageflowError)
        assert error.stage == "summarize"
        assert error.value == value
        assert "'summarize'" in str(error)
        assert f"returned {type_name} {value!r}" in str(error)

    def test_the_same_holds_when_interceptors_normalize_the_output(self):
        async def stage(ctx):
            return 42

        class Watch(BaseInterceptor):
            async def after(self, ctx, output):
                return None

        engine = Engine(interceptors=[Watch()])
        result = run(Pipeline().with_stage("summarize", stage).build(), engine)

        assert isinstance(result["summarize"].error, InvalidOutputError)
        assert "returned int 42" in str(result["summarize"].error)

    def test_a_long_value_is_shortened_in_the_message(self):
        async def stage(ctx):
            return ["x" * 10] * 50

        error = run(Pipeline().with_stage("a", stage).build())["a"].error

        assert isinstance(error, InvalidOutputError)
        assert "..." in str(error)
        assert len(str(error)) < 250


class TestSinkConfiguration:
    @pytest.mark.parametrize("bad", [object(), "sink", 5])
    def test_fan_out_refuses_a_non_sink_naming_its_position(self, bad):
        with pytest.raises(ConfigurationError) as info:
            FanOutSink(RecordingSink(), bad)

        assert info.value.field == "sinks"
        assert "try_emit" in str(info.value)
        assert "sinks[1]" in str(info.value) or "sinks[" in str(info.value)

    def test_fan_out_names_the_exact_non_sink(self):
        bad = object()
        with pytest.raises(ConfigurationError) as info:
            FanOutSink(RecordingSink(), bad)

        assert info.value.value is bad
        assert f"sinks[1] = {bad!r}" in str(info.value)

    @pytest.mark.parametrize("target", [5, None, object(), b"events.jsonl"])
    def test_json_lines_refuses_a_target_that_is_no_path_or_file(self, target):
        with pytest.raises(ConfigurationError) as info:
            JsonLinesSink(target)  # type: ignore[arg-type]

        assert info.value.field == "target"
        assert info.value.value is target
        assert repr(target) in str(info.value)

    def test_json_lines_refuses_a_binary_file(self):
        with pytest.raises(ConfigurationError) as info:
            JsonLinesSink(io.BytesIO())  # type: ignore[arg-type]

        assert info.value.field == "target"

    @pytest.mark.parametrize(("option", "value"), [("logger", 5), ("level", "INFO")])
    def test_logging_sink_refuses_a_bad_logger_or_level(self, option, value):
        with pytest.raises(ConfigurationError) as info:
            LoggingSink(**{option: value})

        assert info.value.field == option
        assert info.value.value == value


class TestTestingKitValidation:
    @pytest.mark.parametrize("main", [5, None, "main()"])
    def test_run_virtual_refuses_what_is_neither_a_coroutine_nor_a_function(self, main):
        with pytest.raises(ConfigurationError) as info:
            run_virtual(main)

        assert info.value.field == "main"
        assert info.value.value is main
        assert repr(main) in str(info.value)

    def test_run_virtual_refuses_a_function_that_returns_no_coroutine(self):
        def main():
            return 5

        with pytest.raises(ConfigurationError) as info:
            run_virtual(main)

        assert info.value.value is main
        assert "returned 5, not a coroutine" in str(info.value)

    @pytest.mark.parametrize("threshold", [-1, -0.5, math.nan, True, "0", None])
    def test_virtual_time_loop_refuses_a_bad_threshold(self, threshold):
        unraisable: list[object] = []
        with pytest.raises(ConfigurationError) as info:
            VirtualTimeLoop(threshold)

        assert info.value.field == "autojump_threshold"
        assert info.value.value is threshold
        assert repr(threshold) in str(info.value)
        # The refused loop must not linger half-built and complain when collected.
        hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
        try:
            del info
            gc.collect()
        finally:
            sys.unraisablehook = hook
        assert unraisable == []


class TestErrorHierarchy:
    @pytest.mark.parametrize(
        "error",
        [
            ConfigurationError,
            CycleError,
            DuplicateDependencyError,
            DuplicateStageError,
            InvalidOptionError,
            InvalidOutputError,
            InvalidStageError,
            InvalidStageNameError,
            SelfDependencyError,
            UnknownDependencyError,
        ],
    )
    def test_every_input_error_is_a_stageflow_error(self, error):
        assert issubclass(error, StageflowError)

    def test_type_errors_are_also_builtin_type_errors(self):
        assert issubclass(InvalidStageError, TypeError)
        assert issubclass(InvalidOutputError, TypeError)
        assert issubclass(ConfigurationError, ValueError)


class TestOptionShapes:
    def test_dependencies_may_be_any_iterable_of_names(self):
        pipeline = (
            Pipeline()
            .with_stage("a", noop)
            .with_stage("b", noop, dependencies=iter(["a"]))
            .with_stage("c", noop, dependencies=["a", "b"])
        )

        assert [s.dependencies for s in pipeline.stages] == [(), ("a",), ("a", "b")]

    @pytest.mark.parametrize("option", ["tags", "optional"])
    def test_an_empty_string_is_refused_like_any_string(self, option):
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("a", noop, **{option: ""})

        assert info.value.option == option
        assert info.value.value == ""

    def test_tags_name_what_they_hold(self):
        with pytest.raises(InvalidOptionError, match="tuple of strings"):
            Pipeline().with_stage("a", noop, tags=[1])

    def test_fan_out_refuses_a_string_instead_of_splitting_it(self):
        with pytest.raises(ConfigurationError) as info:
            FanOutSink("ab")  # type: ignore[arg-type]

        assert info.value.value == "ab"
