"""stageflow-core's code runs: its README quickstart verbatim, its names, its event types.

QUICKSTART is the "Quick Start" of stageflow-core's README (v0.9.x, MIT licence;
github.com/Antonio7098/stageflow, README.md), copied character for character.
docs/migration.md holds the same text, and runs it.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import uuid
import warnings
from pathlib import Path

import pytest

import stageflow
from stageflow import (
    Engine,
    Event,
    LegacyEventSink,
    MissingOutputError,
    Pipeline,
    RunStatus,
    StageContext,
    StageOutput,
)
from stageflow.errors import ConfigurationError, StageError
from stageflow.testing import RecordingSink

QUICKSTART = """\
import asyncio
from stageflow import (
    Pipeline,
    Stage,
    StageContext,
    StageOutput,
    StageKind,
    PipelineTimer,
)
from stageflow.context import ContextSnapshot, RunIdentity
from stageflow.stages import StageInputs

# Define a stage
class GreetStage:
    name = "greet"
    kind = StageKind.TRANSFORM

    async def execute(self, ctx: StageContext) -> StageOutput:
        name = ctx.snapshot.input_text or "World"
        return StageOutput.ok(greeting=f"Hello, {name}!")

# Define another stage that depends on the first
class ShoutStage:
    name = "shout"
    kind = StageKind.TRANSFORM

    async def execute(self, ctx: StageContext) -> StageOutput:
        # Access output from dependency via StageInputs
        greeting = ctx.inputs.get_from("greet", "greeting", default="Hello!")
        return StageOutput.ok(shouted=greeting.upper())

# Build the pipeline
pipeline = (
    Pipeline()
    .with_stage("greet", GreetStage, StageKind.TRANSFORM)
    .with_stage("shout", ShoutStage, StageKind.TRANSFORM, dependencies=("greet",))
)

# Execute
async def main():
    graph = pipeline.build()
    snapshot = ContextSnapshot(run_id=RunIdentity(), input_text="World")
    base_inputs = StageInputs(snapshot=snapshot)
    ctx = StageContext(
        snapshot=snapshot,
        inputs=base_inputs,
        stage_name="pipeline_entry",
        timer=PipelineTimer(),
    )
    results = await graph.run(ctx)
    print(results["shout"].data["shouted"])  # "HELLO, WORLD!"

asyncio.run(main())
"""

MIGRATION = Path(__file__).resolve().parents[2] / "docs" / "migration.md"

# What each compat use warns about, and a word of what replaces it.
EXPECTED_WARNINGS = {
    "PipelineTimer()": "result.duration",
    "stageflow.context.ContextSnapshot": "ctx.data",
    "stageflow.context.RunIdentity": "ctx.run_id",
    "stageflow.stages.StageInputs": "ctx.inputs",
    "StageContext(snapshot=, inputs=, stage_name=, timer=)": "graph.run({'input_text'",
    "graph.run(ctx) with a hand-built StageContext": "graph.run({'input_text'",
    "ctx.snapshot": "ctx.data['input_text']",
}


def _deprecations(record: pytest.WarningsRecorder) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DeprecationWarning)]


class TestTheQuickstart:
    def test_it_runs_verbatim_and_prints_hello_world(self, capsys) -> None:
        with pytest.warns(DeprecationWarning, match="stageflow-core") as record:
            exec(compile(QUICKSTART, "quickstart.py", "exec"), {"__name__": "quickstart"})

        assert capsys.readouterr().out == "HELLO, WORLD!\n"
        messages = _deprecations(record)
        assert len(messages) == len(EXPECTED_WARNINGS)  # exactly one per compat use
        for old, new in EXPECTED_WARNINGS.items():
            (message,) = [m for m in messages if m.startswith(f"{old} is stageflow-core's")]
            assert new in message
            assert "docs/migration.md" in message

    def test_each_warning_points_at_the_users_line(self) -> None:
        with pytest.warns(DeprecationWarning, match="stageflow-core") as record:
            exec(compile(QUICKSTART, "quickstart.py", "exec"), {"__name__": "quickstart"})

        assert {w.filename for w in record} == {"quickstart.py"}

    def test_migration_md_holds_it_verbatim(self) -> None:
        page = MIGRATION.read_text(encoding="utf-8")
        assert f"```python\n{QUICKSTART}```\n" in page

    def test_without_warnings_as_errors_it_still_fails_loudly_under_them(self) -> None:
        # pytest runs with filterwarnings = error: the first compat name raises.
        with pytest.raises(DeprecationWarning, match=r"PipelineTimer|ContextSnapshot"):
            exec(compile(QUICKSTART, "quickstart.py", "exec"), {"__name__": "quickstart"})


class TestCompatNames:
    def test_the_modules_list_their_names(self) -> None:
        import stageflow.context
        import stageflow.stages

        assert stageflow.context.__all__ == ["ContextSnapshot", "RunIdentity"]
        assert stageflow.stages.__all__ == ["StageInputs"]
        assert "ContextSnapshot" in dir(stageflow.context)

    @pytest.mark.parametrize(
        ("module", "name"),
        [
            ("stageflow.context", "ContextSnapshot"),
            ("stageflow.context", "RunIdentity"),
            ("stageflow.stages", "StageInputs"),
        ],
    )
    def test_each_access_warns_once_and_the_object_is_documented(self, module, name) -> None:
        import importlib

        mod = importlib.import_module(module)
        with pytest.deprecated_call() as record:
            obj = getattr(mod, name)
        assert len(record) == 1
        assert f"{module}.{name} is stageflow-core's" in str(record[0].message)
        assert obj.__doc__
        assert "deprecated" in obj.__doc__

    def test_an_unknown_name_is_an_attribute_error(self) -> None:
        import stageflow.context
        import stageflow.stages

        with pytest.raises(AttributeError, match="no attribute 'Nope'"):
            stageflow.context.Nope  # noqa: B018
        with pytest.raises(AttributeError, match="no attribute 'Nope'"):
            stageflow.stages.Nope  # noqa: B018

    def test_pipeline_timer_is_not_public_and_warns_when_made(self) -> None:
        assert "PipelineTimer" not in stageflow.__all__
        timer_class = stageflow.PipelineTimer  # no warning: getting the class
        with pytest.deprecated_call() as record:
            timer = timer_class()
        assert len(record) == 1
        assert timer.elapsed_ms() >= 0.0
        assert "PipelineTimer" in repr(timer)

    def test_importing_stageflow_does_not_import_the_compat_code(self) -> None:
        import subprocess
        import sys

        code = (
            "import sys, asyncio, stageflow\n"
            "async def a(ctx): return {'x': 1}\n"
            "asyncio.run(stageflow.Pipeline().with_stage('a', a).build().run())\n"
            "print('stageflow._legacy' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "False"


def _legacy():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from stageflow.context import ContextSnapshot, RunIdentity
        from stageflow.stages import StageInputs
    return ContextSnapshot, RunIdentity, StageInputs


class TestSnapshotAndEntry:
    def test_the_snapshot_becomes_the_runs_data_and_the_run_id(self) -> None:
        ContextSnapshot, RunIdentity, _ = _legacy()
        run_id, user = uuid.uuid4(), uuid.uuid4()
        seen = {}

        async def look(ctx):
            seen["data"] = dict(ctx.data)
            seen["run_id"] = ctx.run_id
            seen["snapshot"] = ctx.snapshot
            return {}

        snapshot = ContextSnapshot(
            run_id=RunIdentity(pipeline_run_id=run_id, user_id=user),
            input_text="hi",
            metadata={"k": 1},
        )
        with pytest.deprecated_call():
            ctx = StageContext(snapshot=snapshot)
            result = asyncio.run(Pipeline().with_stage("look", look).build().run(ctx))

        assert result.ok
        assert seen["run_id"] == str(run_id)
        assert seen["data"] == {
            "pipeline_run_id": str(run_id), "user_id": str(user), "input_text": "hi",
            "metadata": {"k": 1},
        }  # fmt: skip
        assert seen["snapshot"] == snapshot

    def test_ctx_snapshot_works_in_any_run(self) -> None:
        async def greet(ctx):
            return {"text": ctx.snapshot.input_text}

        graph = Pipeline().with_stage("greet", greet).build()
        with pytest.deprecated_call():
            result = asyncio.run(Engine().run(graph, {"input_text": "hey"}, run_id="not-a-uuid"))

        assert result["greet"].data["text"] == "hey"

    def test_the_entry_context_shows_what_it_was_made_with(self) -> None:
        ContextSnapshot, _, _ = _legacy()
        snapshot = ContextSnapshot(input_text="x")
        with pytest.deprecated_call():
            ctx = StageContext(snapshot=snapshot, stage_name="entry")

        assert isinstance(ctx, StageContext)
        assert ctx.snapshot is snapshot
        assert ctx.stage == "entry"
        assert ctx.data == {"input_text": "x"}
        assert len(ctx.inputs) == 0
        assert list(ctx.inputs) == []
        assert ctx.inputs.get_from("a", "b", default=3) == 3
        with pytest.raises(KeyError, match="no dependencies"):
            ctx.inputs["a"]
        assert "entry context" in repr(ctx)
        assert "entry context" in repr(ctx.inputs)

    def test_a_run_id_given_twice_must_agree(self) -> None:
        ContextSnapshot, RunIdentity, _ = _legacy()
        run_id = uuid.uuid4()
        snapshot = ContextSnapshot(run_id=RunIdentity(pipeline_run_id=run_id))
        graph = Pipeline().with_stage("a", lambda ctx: None).build()
        with pytest.deprecated_call():
            ctx = StageContext(snapshot=snapshot)
            with pytest.raises(ConfigurationError, match="pipeline_run_id"):
                asyncio.run(graph.run(ctx, run_id="other"))
            same = asyncio.run(graph.run(ctx, run_id=str(run_id)))
        assert same.run_id == str(run_id)

    def test_stageflow_core_s_input_has_a_stageflow_equivalent(self) -> None:
        async def greet(ctx):
            return StageOutput.ok(greeting=f"Hello, {ctx.data['input_text']}!")

        graph = Pipeline().with_stage("greet", greet).build()
        result = asyncio.run(graph.run({"input_text": "World"}))  # no warning
        assert result["greet"].data["greeting"] == "Hello, World!"


class TestBadInput:
    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"run_id": "abc"}, "run_id"),
            ({"input_text": 3}, "input_text"),
            ({"metadata": [1]}, "metadata"),
        ],
    )
    def test_a_bad_snapshot_field_is_refused(self, kwargs, field) -> None:
        ContextSnapshot, _, _ = _legacy()
        with pytest.raises(ConfigurationError, match=field) as info:
            ContextSnapshot(**kwargs)
        assert info.value.field == field

    def test_a_bad_run_identity_is_refused(self) -> None:
        _, RunIdentity, _ = _legacy()
        with pytest.raises(ConfigurationError, match="user_id"):
            RunIdentity(user_id="not a uuid")

    def test_stage_inputs_needs_a_snapshot(self) -> None:
        _, _, StageInputs = _legacy()
        with pytest.raises(ConfigurationError, match="snapshot"):
            StageInputs(snapshot={"input_text": "x"})
        with pytest.raises(TypeError):
            StageInputs()

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"snapshot": {"input_text": "x"}}, "snapshot"),
            ({"inputs": {}}, "inputs"),
            ({"stage_name": ""}, "stage_name"),
            ({"timer": 1.0}, "timer"),
        ],
    )
    def test_a_bad_entry_context_is_refused(self, kwargs, field) -> None:
        ContextSnapshot, _, _ = _legacy()
        kwargs = {"snapshot": ContextSnapshot(), **kwargs}
        with pytest.raises(ConfigurationError, match=field):
            StageContext(**kwargs)

    def test_a_context_without_a_snapshot_is_refused(self) -> None:
        with pytest.raises(TypeError, match="made by the engine"):
            StageContext()

    def test_graph_run_of_something_else_is_still_the_engines_error(self) -> None:
        graph = Pipeline().with_stage("a", lambda ctx: None).build()
        with pytest.raises(ConfigurationError):
            asyncio.run(graph.run(42))


# --------------------------------------------------------------------------- failed output


def _failed_run():
    async def fetch(ctx):
        raise ValueError("the site is down")

    async def report(ctx):
        return {"text": "never"}

    async def partial(ctx):
        return StageOutput.fail("half done", pages=2)

    graph = (
        Pipeline()
        .with_stage("fetch", fetch)
        .with_stage("report", report, dependencies=("fetch",))
        .with_stage("partial", partial)
        .build()
    )
    return asyncio.run(Engine(fail_fast=False).run(graph))


class TestTheOutputOfAStageThatDidNotComplete:
    def test_a_failed_stages_output_names_the_stage_and_its_error(self) -> None:
        result = _failed_run()

        with pytest.raises(MissingOutputError) as info:
            result["fetch"].data["pages"]

        error = info.value
        assert isinstance(error, KeyError)
        assert isinstance(error, StageError)
        assert (error.stage, error.key, error.status) == ("fetch", "pages", "failed")
        assert "ValueError: the site is down" in str(error)
        assert str(error).startswith("stage 'fetch' failed")
        assert isinstance(error.__cause__, ValueError)

    def test_a_skipped_stages_output_says_why(self) -> None:
        result = _failed_run()

        with pytest.raises(MissingOutputError, match=r"stage 'report' skipped: .*'fetch'"):
            result["report"].data["text"]

    def test_status_error_and_data_a_stage_failed_with_stay_readable(self) -> None:
        result = _failed_run()
        fetch, partial = result["fetch"], result["partial"]

        assert result.status is RunStatus.FAILED
        assert isinstance(fetch.error, ValueError)
        assert fetch.data == {}
        assert len(fetch.data) == 0
        assert fetch.data.get("pages", 0) == 0
        assert "pages" not in fetch.data
        assert partial.data["pages"] == 2
        assert dict(partial.data) == {"pages": 2}
        assert repr(partial.data) == "{'pages': 2}"
        with pytest.raises(MissingOutputError, match="half done"):
            partial.data["other"]

    def test_a_completed_stages_missing_key_is_a_plain_key_error(self) -> None:
        async def a(ctx):
            return {"x": 1}

        result = asyncio.run(Pipeline().with_stage("a", a).build().run())
        with pytest.raises(KeyError) as info:
            result["a"].data["y"]
        assert not isinstance(info.value, MissingOutputError)

    def test_the_error_pickles(self) -> None:
        error = MissingOutputError.of("s", "k", "failed", "boom")
        copy = pickle.loads(pickle.dumps(error))
        assert (copy.stage, copy.key, copy.status, copy.reason) == ("s", "k", "failed", "boom")
        assert str(copy) == str(error)


# --------------------------------------------------------------------------- events


class TestLegacyEventSink:
    def test_it_retypes_events_as_stageflow_core_named_them(self) -> None:
        inner = RecordingSink()

        async def greet(ctx):
            ctx.emit("progress", done=1)
            return {}

        async def boom(ctx):
            raise ValueError("x")

        graph = (
            Pipeline().with_stage("greet", greet).with_stage("boom", boom, dependencies=("greet",))
        ).build()
        asyncio.run(Engine(sink=LegacyEventSink(inner)).run(graph))

        types = [e.type for e in inner.events]
        assert types == [
            "pipeline.started",
            "stage.greet.started",
            "custom.progress",
            "stage.greet.completed",
            "stage.boom.started",
            "stage.boom.failed",
            "pipeline.failed",
        ]
        assert [e.seq for e in inner.events] == sorted(e.seq for e in inner.events)
        assert inner.events[1].stage == "greet"

    def test_emit_retypes_too_and_leaves_other_events_alone(self) -> None:
        inner = RecordingSink()
        sink = LegacyEventSink(inner)
        event = Event("run.cancelled", "r", "p", None, seq=1, ts=0.0)
        other = Event("budget.warning", "r", "p", "s", seq=2, ts=0.0)

        asyncio.run(sink.emit(event))
        sink.try_emit(other)

        assert [e.type for e in inner.events] == ["pipeline.cancelled", "budget.warning"]
        assert inner.events[1] is other

    @pytest.mark.parametrize("inner", [None, RecordingSink, object()])
    def test_a_bad_inner_sink_is_refused(self, inner) -> None:
        with pytest.raises(ConfigurationError, match="inner"):
            LegacyEventSink(inner)


def test_the_migration_page_names_every_compat_name() -> None:
    page = MIGRATION.read_text(encoding="utf-8")
    for name in (
        "ContextSnapshot", "RunIdentity", "StageInputs(snapshot=", "PipelineTimer",
        "StageContext(snapshot=", "graph.run(ctx)", "ctx.snapshot", "stage.{name}.started",
        "LegacyEventSink", "MissingOutputError",
    ):  # fmt: skip
        assert name in page, name
    assert re.search(r"stageflow-core.*README", page)
