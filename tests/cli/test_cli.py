"""The ``stageflow`` command in process, through typer's CliRunner, on a temporary store."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stageflow import Engine, Event, Pipeline, RunStatus
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.cli import EXIT_CANCELLED, EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE, app
from stageflow.cli._errors import CliError
from stageflow.cli._files import parse_data as _parse_data

FLOW = """
import asyncio

from stageflow import Pipeline, StageOutput


async def a(ctx):
    return {"n": ctx.data.get("n", 1)}


async def b(ctx):
    if ctx.data.get("fail"):
        raise RuntimeError("boom")
    ctx.usage.report(model="m", input_tokens=10, output_tokens=5, cost=0.5)
    return {"twice": ctx.inputs.get_from("a", "n") * 2}


async def slow(ctx):
    await asyncio.sleep(float(ctx.data.get("sleep", 0)))
    ctx.emit("progress", note="slept")
    return {}


async def skipper(ctx):
    return StageOutput.skip("nothing to do")


pipeline = (
    Pipeline("tiny")
    .with_stage("a", a)
    .with_stage("b", b, dependencies=("a",))
    .with_stage("c", skipper, dependencies=("a",))
)
graph = pipeline.build()
sleepy = Pipeline("sleepy").with_stage("slow", slow)


async def broken(ctx):
    raise RuntimeError("boom")


branches = Pipeline("branches").with_stage("broken", broken).with_stage("slow", slow)
other = Pipeline("tiny").with_stage("a", a)
cyclic = Pipeline("bad").with_stage("x", a, dependencies=("y",)).with_stage(
    "y", a, dependencies=("x",)
)
number = 3
builtin = max


def make():
    return pipeline


def needs_argument(x):
    return pipeline


def raises():
    raise LookupError("no pipeline today")


def drop_events(ctx):
    import sqlite3

    with sqlite3.connect(ctx.data["db"]) as db:
        db.execute("DROP TABLE stageflow_events")
    db.close()
    return {}


dropper = Pipeline("dropper").with_stage("drop", drop_events)


class NotOne:
    pass
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def flow(tmp_path: Path) -> str:
    path = tmp_path / "flow.py"
    path.write_text(FLOW)
    return str(path)


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def as_json(result) -> object:
    return json.loads(result.stdout)


def start(runner: CliRunner, url: str, target: str, *args: str) -> dict:
    result = invoke(runner, "run", target, "--store", url, "--json", *args)
    return as_json(result)


def _stored(url: str, run_id: str) -> list[Event]:
    """The run's events in the store's event log."""

    async def read() -> list[Event]:
        store = SQLAlchemyStore(url)
        try:
            return await store.read_events(run_id)
        finally:
            await store.aclose()

    return asyncio.run(read())


# ----------------------------------------------------------------------------- run


class TestRun:
    def test_a_completed_run_prints_progress_and_a_summary_and_exits_0(
        self, runner, url, flow, tmp_path
    ):
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "-d", "n=3")

        assert result.exit_code == EXIT_COMPLETED, result.output
        lines = result.stdout.splitlines()
        assert lines[0].startswith("running 'tiny' (3 stages) as run ")
        assert any(line.startswith("done      a  1 attempt") for line in lines)
        assert any(line.startswith("skipped   c") and "nothing to do" in line for line in lines)
        assert "completed: run " in result.stdout
        assert "stages: 2 completed, 1 skipped" in result.stdout
        assert "usage: 15 tokens (10 in, 5 out), cost $0.50" in result.stdout
        assert "resume" not in result.stdout

    def test_json_is_one_object_with_each_stage(self, runner, url, flow):
        out = start(runner, url, f"{flow}:pipeline", "--run-id", "r-1")

        assert out["run_id"] == "r-1"
        assert (out["pipeline"], out["status"], out["error"]) == ("tiny", "completed", None)
        assert set(out["stages"]) == {"a", "b", "c"}
        assert out["stages"]["b"]["status"] == "completed"
        assert out["stages"]["b"]["attempts"] == 1
        assert out["stages"]["c"] == {
            "status": "skipped",
            "attempts": 1,
            "duration": out["stages"]["c"]["duration"],
            "error": None,
        }
        assert out["usage"] == {"tokens": 15, "cost": 0.5}
        assert out["duration"] >= 0

    def test_a_failed_stage_exits_1_and_says_how_to_resume(self, runner, url, flow):
        result = invoke(
            runner, "run", f"{flow}:pipeline", "--store", url, "-d", "fail=true", "--run-id", "f1"
        )

        assert result.exit_code == EXIT_FAILED
        assert "failed: run f1" in result.stdout
        assert "  b: RuntimeError: boom" in result.stdout
        assert f"resume with  stageflow resume f1 --store {url}" in result.stdout
        assert "Traceback" not in result.output

    @pytest.mark.parametrize(
        ("flag", "slow"),
        [
            ((), {"cancelled", "skipped"}),  # stopped, or never started
            (("--fail-fast",), {"cancelled", "skipped"}),
            (("--no-fail-fast",), {"completed"}),
        ],
    )
    def test_fail_fast_decides_whether_independent_branches_go_on(
        self, runner, url, flow, flag, slow
    ):
        result = invoke(runner, "run", f"{flow}:branches", "--store", url, "--json",
                        "-d", "sleep=0.2", *flag)  # fmt: skip

        assert result.exit_code == EXIT_FAILED
        out = as_json(result)
        assert out["stages"]["broken"]["status"] == "failed"
        assert out["stages"]["slow"]["status"] in slow

    def test_failed_json_names_the_error(self, runner, url, flow):
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "--json", "-d",
                        "fail=true")  # fmt: skip

        assert result.exit_code == EXIT_FAILED
        out = as_json(result)
        assert out["status"] == "failed"
        assert out["error"] == "RuntimeError: boom"
        assert out["stages"]["b"]["error"] == "RuntimeError: boom"

    def test_verbose_shows_a_failed_stage_traceback(self, runner, url, flow):
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "-d", "fail=true",
                        "--verbose")  # fmt: skip

        assert result.exit_code == EXIT_FAILED
        assert "Traceback" in result.stdout
        assert 'raise RuntimeError("boom")' in result.stdout

    def test_data_values_are_json_when_they_parse(self, runner, url, flow):
        # "false" read as JSON is False: the stage does not fail. As a string, it would.
        assert start(runner, url, f"{flow}:pipeline", "-d", "fail=false")["status"] == "completed"
        assert start(runner, url, f"{flow}:pipeline", "-d", "fail=no")["status"] == "failed"

    def test_a_timeout_cancels_the_run_and_exits_130(self, runner, url, flow):
        result = invoke(runner, "run", f"{flow}:sleepy", "--store", url, "--timeout", "0.05",
                        "-d", "sleep=0.2", "--run-id", "t1")  # fmt: skip

        assert result.exit_code == EXIT_CANCELLED
        assert "cancelled: run t1" in result.stdout
        assert "RunTimeoutError" in result.stdout
        assert f"cancelled: resume with  stageflow resume t1 --store {url}" in result.stdout
        shown = as_json(invoke(runner, "show", "t1", "--store", url, "--json"))
        assert shown["status"] == "cancelled"

    def test_a_timeout_with_json_exits_130_and_hints_on_stderr(self, runner, url, flow):
        result = invoke(runner, "run", f"{flow}:sleepy", "--store", url, "--timeout", "0.05",
                        "-d", "sleep=0.2", "--json", "--run-id", "t2")  # fmt: skip

        assert result.exit_code == EXIT_CANCELLED
        assert as_json(result)["status"] == "cancelled"
        assert "cancelled: resume with  stageflow resume t2" in result.stderr

    def test_the_default_store_is_a_file_under_dot_stageflow(self, runner, flow, tmp_path):
        result = invoke(runner, "run", f"{flow}:pipeline", "--run-id", "d1")

        assert result.exit_code == 0, result.output
        assert (tmp_path / ".stageflow" / "runs.db").is_file()
        assert not (tmp_path / ".stageflow" / "events").exists()  # they are in the store
        assert "resume" not in result.stdout
        events = invoke(runner, "events", "d1", "--json").stdout.splitlines()
        assert json.loads(events[-1])["type"] == "run.completed"

    def test_the_store_comes_from_the_environment_and_keeps_the_events(
        self, runner, url, flow, tmp_path, monkeypatch
    ):
        monkeypatch.setenv("STAGEFLOW_STORE", url)

        assert invoke(runner, "run", f"{flow}:pipeline", "--run-id", "e1").exit_code == 0
        assert (tmp_path / "runs.db").is_file()
        assert not (tmp_path / ".stageflow").exists()
        assert not (tmp_path / "events").exists()
        stored = _stored(url, "e1")
        assert (stored[0].type, stored[-1].type) == ("run.started", "run.completed")
        shown = invoke(runner, "events", "e1", "--json").stdout.splitlines()
        assert [json.loads(line)["seq"] for line in shown] == [e.seq for e in stored]

    @pytest.mark.parametrize("attr", ["pipeline", "graph", "make"])
    def test_a_target_may_be_a_pipeline_a_graph_or_a_function(self, runner, url, flow, attr):
        assert start(runner, url, f"{flow}:{attr}")["status"] == "completed"

    def test_a_module_target_is_imported_from_the_current_folder(self, runner, url, flow):
        assert start(runner, url, "flow:pipeline")["status"] == "completed"

    def test_max_parallel_is_passed_on(self, runner, url, flow):
        assert start(runner, url, f"{flow}:pipeline", "--max-parallel", "1")["status"] == (
            "completed"
        )

    def test_the_live_view_renders_on_a_terminal(self, runner, url, flow, monkeypatch):
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "-d", "fail=true")

        assert result.exit_code == EXIT_FAILED
        assert "stages" in result.stdout
        assert "RuntimeError: boom" in result.stdout
        assert "done      a" not in result.stdout  # no plain lines on a terminal


class TestRunRefuses:
    @pytest.mark.parametrize("item", ["novalue", "=3", " =x"])
    def test_malformed_data(self, runner, url, flow, item):
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "-d", item)

        assert result.exit_code == EXIT_USAGE
        assert f"malformed --data {item!r}: expected KEY=VALUE" in result.stderr

    def test_a_run_id_that_exists(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "--run-id", "dup")
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "--run-id", "dup")

        assert result.exit_code == EXIT_USAGE
        assert "run 'dup' exists" in result.stderr
        assert "stageflow resume dup" in result.stderr

    def test_a_malformed_run_id(self, runner, url, flow):
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "--run-id", "a b")

        assert result.exit_code == EXIT_USAGE
        assert "run_id must be" in result.stderr

    @pytest.mark.parametrize("value", ["0", "-1"])
    def test_a_timeout_that_is_not_positive(self, runner, url, flow, value):
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "--timeout", value)

        assert result.exit_code == EXIT_USAGE
        assert "timeout must be a positive number" in result.stderr

    def test_max_parallel_below_one(self, runner, url, flow):
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "--max-parallel", "0")

        assert result.exit_code == EXIT_USAGE

    def test_a_lease_ttl_out_of_range(self, runner, url, flow):
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "--lease-ttl", "-1")

        assert result.exit_code == EXIT_USAGE
        assert "lease_ttl" in result.stderr


# ----------------------------------------------------------------------------- TARGET


def _broken(tmp_path: Path, source: str) -> str:
    (tmp_path / "broken.py").write_text(textwrap.dedent(source))
    return str(tmp_path / "broken.py")


TARGET_ERRORS = [
    ("{flow}:pipelin", "has no attribute 'pipelin'; did you mean 'pipeline'?"),
    ("{flow}:zzz", "has no attribute 'zzz'; did you mean "),
    ("{flow}:number", "is a int, not a pipeline"),
    ("{flow}:NotOne", "is the class NotOne, not a pipeline"),
    ("{flow}:needs_argument", "is a callable that takes arguments"),
    ("{flow}:raises", "calling {flow}:raises raised LookupError: no pipeline today"),
    ("{flow}:builtin", "calling {flow}:builtin raised TypeError: "),
    ("{flow}:cyclic", "invalid graph 'bad': "),
    ("{tmp}/missing.py:pipeline", "missing.py: not found"),
    ("{tmp}:pipeline", ": a directory, not a file"),
    ("no_such_module_xyz:pipeline", "no module named 'no_such_module_xyz'"),
    ("no_such_pkg_xyz.mod:pipeline", "no module named 'no_such_pkg_xyz'"),
    ("{flow}", "TARGET must be 'path/to/file.py:attribute'"),
    ("{flow}:", "TARGET must be"),
]


class TestTargets:
    @pytest.mark.parametrize("command", ["run", "graph", "validate", "resume"])
    @pytest.mark.parametrize(("target", "said"), TARGET_ERRORS)
    def test_a_bad_target_is_one_line_and_exit_2(
        self, runner, url, flow, tmp_path, command, target, said
    ):
        target = target.format(flow=flow, tmp=tmp_path)
        if command == "resume":
            start(runner, url, f"{flow}:pipeline", "--run-id", "r1")
            args = ["resume", "r1", "--target", target, "--store", url]
        else:
            args = [command, target] + (["--store", url] if command == "run" else [])

        result = invoke(runner, *args)

        assert result.exit_code == EXIT_USAGE, result.output
        assert said.format(flow=flow) in result.stderr
        assert result.stderr.startswith("error: ")
        assert "Traceback" not in result.output
        assert result.stdout == ""

    @pytest.mark.parametrize("command", ["run", "graph", "validate"])
    def test_an_import_error_in_the_users_module_is_short_unless_verbose(
        self, runner, url, tmp_path, command
    ):
        target = _broken(tmp_path, "x = 1\nraise ValueError('no config')\n") + ":pipeline"
        extra = ["--store", url] if command == "run" else []

        short = invoke(runner, command, target, *extra)
        verbose = invoke(runner, command, target, *extra, "--verbose")

        for result in (short, verbose):
            assert result.exit_code == EXIT_USAGE
            assert "raised ValueError: no config" in result.stderr
        assert "Traceback" not in short.stderr
        assert "(--verbose shows the traceback)" in short.stderr
        assert "Traceback" in verbose.stderr
        assert "raise ValueError('no config')" in verbose.stderr

    def test_a_missing_import_in_the_users_module_is_its_error(self, runner, tmp_path):
        target = _broken(tmp_path, "import no_such_dependency_xyz\n") + ":pipeline"

        result = invoke(runner, "validate", target)

        assert result.exit_code == EXIT_USAGE
        assert "raised ModuleNotFoundError: No module named 'no_such_dependency_xyz'" in (
            result.stderr
        )

    def test_a_missing_import_in_a_module_target_is_its_error(self, runner, tmp_path):
        _broken(tmp_path, "import no_such_dependency_xyz\n")

        result = invoke(runner, "validate", "broken:pipeline")

        assert result.exit_code == EXIT_USAGE
        assert "importing broken raised ModuleNotFoundError" in result.stderr

    def test_a_module_target_that_raises(self, runner, tmp_path):
        (tmp_path / "raising_mod.py").write_text("raise OSError('disk')\n")

        result = invoke(runner, "validate", "raising_mod:pipeline")

        assert result.exit_code == EXIT_USAGE
        assert "importing raising_mod raised OSError: disk" in result.stderr

    def test_the_graph_error_of_validate_says_what_is_wrong(self, runner, flow):
        result = invoke(runner, "validate", f"{flow}:cyclic", "--verbose")

        assert result.exit_code == EXIT_USAGE
        assert "invalid graph 'bad'" in result.stderr
        assert "cycle" in result.stderr.lower()
        assert "CycleError" in result.stderr  # the traceback, with --verbose


# ----------------------------------------------------------------------------- graph / validate


class TestGraphAndValidate:
    def test_validate_says_ok(self, runner, flow):
        result = invoke(runner, "validate", f"{flow}:pipeline")

        assert result.exit_code == 0
        assert result.stdout == "ok: tiny (3 stages)\n"

    def test_graph_prints_mermaid_by_default(self, runner, flow):
        from stageflow.cli._load import load_graph

        result = invoke(runner, "graph", f"{flow}:pipeline")

        assert result.exit_code == 0
        assert result.stdout == load_graph(f"{flow}:pipeline").to_mermaid() + "\n"

    def test_graph_prints_dot(self, runner, flow):
        result = invoke(runner, "graph", f"{flow}:pipeline", "--format", "dot")

        assert result.exit_code == 0
        assert result.stdout.startswith('digraph "tiny" {')
        assert '"a" -> "b";' in result.stdout

    def test_graph_refuses_an_unknown_format(self, runner, flow):
        result = invoke(runner, "graph", f"{flow}:pipeline", "--format", "png")

        assert result.exit_code == EXIT_USAGE


# ----------------------------------------------------------------------------- resume


class TestResume:
    def test_a_cancelled_run_resumes_with_its_recorded_target(self, runner, url, flow):
        invoke(runner, "run", f"{flow}:sleepy", "--store", url, "--timeout", "0.05",
               "-d", "sleep=0.2", "--run-id", "t1")  # fmt: skip

        bounded = invoke(runner, "resume", "t1", "--store", url)  # the run's own timeout
        result = invoke(runner, "resume", "t1", "--store", url, "--timeout", "30")

        assert bounded.exit_code == EXIT_CANCELLED, bounded.output
        assert result.exit_code == EXIT_COMPLETED, result.output
        assert result.stdout.startswith("resuming 'sleepy' (1 stages) as run t1")
        assert "completed: run t1" in result.stdout
        shown = as_json(invoke(runner, "show", "t1", "--store", url, "--json"))
        assert shown["status"] == "completed"
        assert shown["labels"] == {"stageflow.target": f"{flow}:sleepy"}

    def test_completed_stages_are_restored(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "-d", "fail=true", "--run-id", "f1")

        result = invoke(runner, "resume", "f1", "--store", url, "--json")

        assert result.exit_code == EXIT_FAILED  # the data still says fail
        out = as_json(result)
        assert out["stages"]["a"]["status"] == "completed"
        assert out["stages"]["b"]["error"] == "RuntimeError: boom"
        text = invoke(runner, "resume", "f1", "--store", url)
        assert "restored  a" in text.stdout
        assert "stages: 1 completed, 1 failed, 1 skipped; 1 restored from the store" in text.stdout
        events = invoke(runner, "events", "f1", "--store", url, "--json").stdout.splitlines()
        assert [json.loads(e)["type"] for e in events].count(
            "stage.restored"
        ) == 2  # a, once per resume

    def test_a_completed_run_is_returned_as_it_was(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "--run-id", "c1")

        out = as_json(invoke(runner, "resume", "c1", "--store", url, "--json"))

        assert out["status"] == "completed"

    def test_a_run_started_elsewhere_needs_a_target(self, runner, url, flow, tmp_path):
        from stageflow.cli._load import load_graph

        async def elsewhere() -> None:
            store = SQLAlchemyStore(url)
            graph = load_graph(f"{flow}:pipeline")
            await Engine(store=store).run(graph, {"fail": True}, run_id="api-1")
            await store.aclose()

        asyncio.run(elsewhere())

        refused = invoke(runner, "resume", "api-1", "--store", url)
        assert refused.exit_code == EXIT_USAGE
        assert "was not started by the stageflow command" in refused.stderr
        assert "--target" in refused.stderr
        given = invoke(runner, "resume", "api-1", "--store", url, "--target", f"{flow}:pipeline")
        assert given.exit_code == EXIT_FAILED  # its data says fail: it runs, and fails again

    def test_another_graph_is_refused(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "-d", "fail=true", "--run-id", "f1")

        result = invoke(runner, "resume", "f1", "--store", url, "--target", f"{flow}:other")

        assert result.exit_code == EXIT_USAGE
        assert "stage 'b' removed" in result.stderr

    def test_a_run_driven_by_another_process_is_refused(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "-d", "fail=true", "--run-id", "f1")

        async def hold() -> None:
            store = SQLAlchemyStore(url)
            await store.acquire_lease("f1", "someone-else", 60)
            await store.aclose()

        before = time.time()
        asyncio.run(hold())
        result = invoke(runner, "resume", "f1", "--store", url)

        assert result.exit_code == EXIT_USAGE
        said = re.search(
            r"run 'f1' is driven by someone-else; its lease expires at "
            r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \(local time\), in ([\d.]+)s",
            result.stderr,
        )
        assert said is not None, result.stderr
        expires = datetime.strptime(said.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        assert before + 59 <= expires + 1
        assert expires <= time.time() + 60
        assert 55 <= float(said.group(2)) <= 60
        assert "or now with --take-over if it is known dead" in result.stderr

    def test_take_over_resumes_at_once_and_the_old_lease_writes_nothing(self, runner, url, flow):
        from stageflow import LeaseLostError, StageRecord, StageStatus

        start(runner, url, f"{flow}:pipeline", "-d", "fail=true", "--run-id", "f1")

        async def hold():
            store = SQLAlchemyStore(url)
            try:
                return await store.acquire_lease("f1", "dead-host:1:dead", 600)
            finally:
                await store.aclose()

        dead = asyncio.run(hold())
        result = invoke(runner, "resume", "f1", "--store", url, "--take-over", "--json")

        assert result.exit_code == EXIT_FAILED, result.stderr  # it ran: b fails by its data
        assert as_json(result)["stages"]["b"]["status"] == "failed"

        async def late_writes():
            store = SQLAlchemyStore(url)
            try:
                record = StageRecord("f1", "b", StageStatus.COMPLETED, "{}", 1, 0.0, 0.1)
                with pytest.raises(LeaseLostError):
                    await store.record_stage(dead, record)
                with pytest.raises(LeaseLostError):
                    await store.set_status(dead, RunStatus.COMPLETED)
                free = await store.acquire_lease("f1", "next", 30)  # released at the end
                return (await store.get_run("f1")).status, free
            finally:
                await store.aclose()

        status, free = asyncio.run(late_writes())
        assert status == RunStatus.FAILED
        assert free.token > dead.token


# ----------------------------------------------------------------------------- runs / show


class TestRunsAndShow:
    def test_runs_lists_newest_first(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "--run-id", "r1")
        start(runner, url, f"{flow}:pipeline", "--run-id", "r2", "-d", "fail=true")
        start(runner, url, f"{flow}:sleepy", "--run-id", "r3")

        result = invoke(runner, "runs", "--store", url)

        assert result.exit_code == 0
        rows = result.stdout.splitlines()
        assert rows[0].split() == ["run", "id", "pipeline", "status", "created", "updated"]
        assert [row.split()[:3] for row in rows[1:]] == [
            ["r3", "sleepy", "completed"],
            ["r2", "tiny", "failed"],
            ["r1", "tiny", "completed"],
        ]

    def test_runs_filters_and_json(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "--run-id", "r1")
        start(runner, url, f"{flow}:pipeline", "--run-id", "r2", "-d", "fail=true")
        start(runner, url, f"{flow}:sleepy", "--run-id", "r3")

        def ids(*args: str) -> list[str]:
            result = invoke(runner, "runs", "--store", url, "--json", *args)
            assert result.exit_code == 0
            return [r["run_id"] for r in as_json(result)]

        assert ids() == ["r3", "r2", "r1"]
        assert ids("--status", "failed") == ["r2"]
        assert ids("--pipeline", "tiny") == ["r2", "r1"]
        assert ids("--limit", "1") == ["r3"]
        (first,) = as_json(invoke(runner, "runs", "--store", url, "--json", "--limit", "1"))
        assert set(first) == {
            "run_id", "pipeline", "status", "created_at", "updated_at", "error", "labels",
        }  # fmt: skip

    def test_runs_of_a_store_that_does_not_exist_yet_is_empty_and_creates_nothing(
        self, runner, tmp_path
    ):
        result = invoke(runner, "runs")

        assert result.exit_code == 0
        assert result.stdout.startswith("no runs in sqlite:///./.stageflow/runs.db")
        assert as_json(invoke(runner, "runs", "--json")) == []
        assert not (tmp_path / ".stageflow").exists()

    def test_runs_refuses_an_unknown_status(self, runner, url):
        assert invoke(runner, "runs", "--store", url, "--status", "nope").exit_code == EXIT_USAGE

    def test_show_prints_the_record_stages_and_usage(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "--run-id", "s1", "-d", "fail=true")
        start(runner, url, f"{flow}:pipeline", "--run-id", "s2")

        failed = invoke(runner, "show", "s1", "--store", url)
        done = invoke(runner, "show", "s2", "--store", url)

        assert failed.exit_code == done.exit_code == 0
        assert failed.stdout.startswith("run s1 of 'tiny': failed")
        assert "error: RuntimeError: boom" in failed.stdout
        assert f"label stageflow.target = {flow}:pipeline" in failed.stdout
        stages = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[4:]}
        assert stages["a"][:2] == ["completed", "1"]
        assert stages["b"][:2] == ["completed", "1"]
        assert stages["b"][3:5] == ["15", "$0.50"]  # tokens and cost of the stage
        assert "usage: 15 tokens (10 in, 5 out), cost $0.50" in done.stdout

    def test_show_json(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "--run-id", "s1", "-d", "fail=true")
        start(runner, url, f"{flow}:pipeline", "--run-id", "s2")

        failed = as_json(invoke(runner, "show", "s1", "--store", url, "--json"))
        done = as_json(invoke(runner, "show", "s2", "--store", url, "--json"))

        assert failed["status"] == "failed"
        assert failed["error"] == "RuntimeError: boom"
        assert list(failed["stages"]) == ["a", "b", "c"]  # graph order
        assert failed["stages"]["b"]["status"] == "pending"  # will run on resume
        assert done["stages"]["a"]["status"] == "completed"
        assert done["stages"]["a"]["duration"] >= 0
        assert done["stages"]["c"]["status"] == "skipped"
        assert done["stages"]["c"]["reason"] == "nothing to do"
        assert done["usage"]["tokens"] == 15
        assert done["usage"]["cost"] == 0.5
        assert done["usage"]["by_stage"] == {
            "b": {"tokens": 15, "input_tokens": 10, "output_tokens": 5, "cost": 0.5}
        }
        assert done["created_at"] <= done["updated_at"]


# ----------------------------------------------------------------------------- events


class TestEvents:
    def test_events_prints_a_table_of_every_stored_event(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "--run-id", "e1")

        result = invoke(runner, "events", "e1", "--store", url)

        assert result.exit_code == 0
        header, *rows = result.stdout.splitlines()
        assert re.fullmatch(r"-- run started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", header)
        assert rows[0].split() == ["seq", "time", "type", "stage", "attempt", "data"]
        assert rows[1].split()[0:3] == ["1", rows[1].split()[1], "run.started"]
        assert rows[-1].split()[2] == "run.completed"
        assert any("stage.skipped" in row and "reason=nothing to do" in row for row in rows)
        stored = _stored(url, "e1")
        assert [(row.split()[0], row.split()[2]) for row in rows[1:]] == [
            (str(e.seq), e.type) for e in stored
        ]

    def test_events_json_is_one_line_per_stored_event(self, runner, url, flow):
        start(runner, url, f"{flow}:pipeline", "--run-id", "e1")

        result = invoke(runner, "events", "e1", "--store", url, "--json")

        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[0]["type"] == "run.started"
        assert events[-1]["type"] == "run.completed"
        assert events == [e.to_dict() for e in _stored(url, "e1")]
        assert result.stdout.splitlines()[0].startswith('{"type":"run.started","run_id":"e1"')

    def test_more_events_than_a_page_are_all_printed(self, runner, url, flow, monkeypatch):
        from stageflow.cli import _commands

        start(runner, url, f"{flow}:pipeline", "--run-id", "e1")
        stored = _stored(url, "e1")
        monkeypatch.setattr(_commands, "PAGE", 2)

        lines = invoke(runner, "events", "e1", "--store", url, "--json").stdout.splitlines()
        followed = invoke(runner, "events", "e1", "--store", url, "--json", "--follow")

        assert [json.loads(line)["seq"] for line in lines] == [e.seq for e in stored]
        assert followed.stdout.splitlines() == lines

    def test_follow_on_a_finished_run_returns_at_once(self, runner, url, flow):
        start(runner, url, f"{flow}:sleepy", "--run-id", "e1")

        table = invoke(runner, "events", "e1", "--store", url, "--follow")
        lines = invoke(runner, "events", "e1", "--store", url, "--follow", "--json")

        assert table.exit_code == lines.exit_code == 0
        assert "custom.progress" in table.stdout
        assert "note=slept" in table.stdout
        assert table.stdout.splitlines()[-1].split()[2] == "run.completed"
        assert json.loads(lines.stdout.splitlines()[-1])["type"] == "run.completed"

    def test_follow_prints_the_events_as_they_are_stored_until_the_run_ends(
        self, runner, url, monkeypatch
    ):
        from stageflow.cli import _commands

        # Driven here without an event log; the test stores its events in two parts, as a
        # driver in another process does, while the looks of the command say it runs.
        events = _driven(url, "e1")
        _append(url, events[:3])
        looks = []

        async def running_then_done(store, run_id, url):
            record = await store.get_run(run_id)
            looks.append(record)
            if len(looks) == 1:
                return replace(record, status=RunStatus.RUNNING)
            if len(looks) == 2:
                await store.append_events(events[3:])  # the rest arrives as the run ends
            return replace(record, updated_at=time.time())  # it stopped just now

        monkeypatch.setattr(_commands, "_get_run", running_then_done)
        monkeypatch.setattr(_commands, "POLL", 0.0)
        result = invoke(runner, "events", "e1", "--store", url, "--follow", "--json")

        assert result.exit_code == 0
        assert [json.loads(line) for line in result.stdout.splitlines()] == [
            e.to_dict() for e in events
        ]
        assert len(looks) == 3  # running; stopped, with the rest; nothing new: the end

    @pytest.mark.parametrize(("ago", "looks"), [(60.0, 1), (0.0, 2)])
    def test_follow_of_a_stopped_run_looks_again_unless_it_stopped_a_while_ago(
        self, runner, url, flow, monkeypatch, ago, looks
    ):
        from stageflow.cli import _commands

        start(runner, url, f"{flow}:pipeline", "--run-id", "e1")
        seen = []

        async def stopped(store, run_id, url):
            record = await store.get_run(run_id)
            seen.append(record)
            return replace(record, updated_at=time.time() - ago)

        monkeypatch.setattr(_commands, "_get_run", stopped)
        monkeypatch.setattr(_commands, "POLL", 0.0)
        result = invoke(runner, "events", "e1", "--store", url, "--follow", "--json")

        assert result.exit_code == 0
        assert len(result.stdout.splitlines()) == len(_stored(url, "e1"))
        assert len(seen) == looks

    def test_follow_ends_on_a_stopped_run_whose_events_never_reached_the_log(self, runner, url):
        _driven(url, "e1")  # without an event log: the run's end is in no event

        result = invoke(runner, "events", "e1", "--store", url, "--follow")

        assert result.exit_code == 0
        assert result.stdout == ""

    def test_a_run_without_events_says_so(self, runner, url):
        _driven(url, "e1")

        result = invoke(runner, "events", "e1", "--store", url)

        assert result.exit_code == 0
        assert result.stdout == ""
        assert result.stderr.startswith(f"no events of run 'e1' in the store {url} ")

    def test_a_store_of_an_older_schema_without_events_is_upgraded(self, runner, url, flow):
        import sqlite3

        start(runner, url, f"{flow}:pipeline", "--run-id", "old")
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:  # back to version 5
            db.execute("DROP TABLE stageflow_events")
            db.execute("UPDATE stageflow_meta SET value = '5' WHERE key = 'schema_version'")
        db.close()

        before = invoke(runner, "events", "old", "--store", url)
        again = start(runner, url, f"{flow}:pipeline", "--run-id", "new")
        after = invoke(runner, "events", "new", "--store", url, "--json")

        assert before.exit_code == 0, before.output
        assert "no events of run 'old' in the store" in before.stderr
        assert again["status"] == "completed"
        assert json.loads(after.stdout.splitlines()[-1])["type"] == "run.completed"
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            version = db.execute("SELECT value FROM stageflow_meta").fetchone()
        db.close()
        assert version == ("7",)

    def test_events_the_store_could_not_keep_are_said_to_be_missing(self, runner, url, flow):
        # The stage drops the events table under the running driver: its writes fail.
        path = url.removeprefix("sqlite:///")

        result = invoke(runner, "run", f"{flow}:dropper", "--store", url, "--json",
                        "--run-id", "x1", "-d", f"db={path}")  # fmt: skip

        assert result.exit_code == EXIT_COMPLETED  # the run is not the log's
        assert as_json(result)["status"] == "completed"
        assert re.search(
            r"^warning: \d+ events of run x1 could not be written to the store's event log; "
            r"`stageflow events` will not show them$",
            result.stderr,
            re.M,
        )

    def test_the_event_log_of_the_targets_engine_gets_the_events_too(self, runner, url, tmp_path):
        (tmp_path / "logged.py").write_text(LOGGED)

        result = invoke(runner, "run", "logged.py:pipeline", "--store", url, "--run-id", "o1")

        assert result.exit_code == EXIT_COMPLETED, result.output
        own = [json.loads(line) for line in (tmp_path / "own.jsonl").read_text().splitlines()]
        assert own == [e.to_dict() for e in _stored(url, "o1")]


LOGGED = """
import json
from pathlib import Path

from stageflow import Engine, Pipeline


class FileLog:  # an EventLog of the target's own, writing lines to a file
    async def append_events(self, events):
        with Path(__file__).with_name("own.jsonl").open("a") as file:
            for event in events:
                file.write(json.dumps(event.to_dict()) + "\\n")

    async def read_events(self, run_id, *, after=0, limit=None):
        return []

    async def last_event_seq(self, run_id):
        return 0


async def one(ctx):
    return {}


engine = Engine(event_log=FileLog())
pipeline = Pipeline("logged").with_stage("one", one)
"""


async def _one(ctx) -> dict:
    return {}


def _driven(url: str, run_id: str) -> list[Event]:
    """Drive a run from Python, without an event log; its events, as a sink got them."""
    from stageflow.testing import RecordingSink

    sink = RecordingSink()

    async def drive() -> None:
        store = SQLAlchemyStore(url)
        try:
            graph = Pipeline("py").with_stage("one", _one).build()
            await Engine(store=store, sink=sink).run(graph, run_id=run_id)
        finally:
            await store.aclose()

    asyncio.run(drive())
    return list(sink.events)


def _append(url: str, events: list[Event]) -> None:
    async def append() -> None:
        store = SQLAlchemyStore(url)
        try:
            await store.append_events(events)
        finally:
            await store.aclose()

    asyncio.run(append())


# ----------------------------------------------------------------------------- bad input


class TestBadInput:
    @pytest.mark.parametrize(
        "args", [["show", "nope"], ["resume", "nope"], ["events", "nope"],
                 ["events", "nope", "--follow"]],
    )  # fmt: skip
    @pytest.mark.parametrize("existing", [True, False], ids=["store", "no-store"])
    def test_an_unknown_run_id(self, runner, url, flow, args, existing):
        if existing:
            start(runner, url, f"{flow}:pipeline")

        result = invoke(runner, *args, "--store", url)

        assert result.exit_code == EXIT_USAGE
        assert result.stderr == f"error: no run 'nope' in {url}\n"

    @pytest.mark.parametrize(
        "args",
        [["run", "{flow}:pipeline"], ["resume", "r1"], ["runs"], ["show", "r1"],
         ["events", "r1"], ["events", "r1", "--follow"]],
    )  # fmt: skip
    @pytest.mark.parametrize(
        ("store", "said"),
        [
            ("nosuch://x", "bad store URL: SQLAlchemyStore supports sqlite:// and postgresql://"),
            ("sqlite://", "bad store URL: a SQLite store needs a file"),
            ("not a url", "bad store URL: not a database URL"),
        ],
    )
    def test_a_bad_store_url(self, runner, flow, args, store, said):
        args = [a.format(flow=flow) for a in args]

        result = invoke(runner, *args, "--store", store)

        assert result.exit_code == EXIT_USAGE
        assert result.stderr.startswith(f"error: {said}")
        assert len(result.stderr.splitlines()) == 1

    def test_a_sqlite_file_that_cannot_be_created(self, runner, flow, tmp_path):
        (tmp_path / "afile").write_text("")
        store = f"sqlite:///{tmp_path}/afile/runs.db"

        result = invoke(runner, "run", f"{flow}:pipeline", "--store", store)

        assert result.exit_code == EXIT_USAGE
        assert result.stdout == ""
        assert "cannot be used as a store" in result.stderr

    def test_a_file_that_is_no_database(self, runner, tmp_path):
        (tmp_path / "runs.db").write_text("not a database, " * 100)

        result = invoke(runner, "runs", "--store", f"sqlite:///{tmp_path}/runs.db")

        assert result.exit_code == EXIT_USAGE
        assert "cannot be used as a store" in result.stderr

    def test_an_unreachable_database(self, runner):
        result = invoke(runner, "runs", "--store", "postgresql://nobody@127.0.0.1:9/none")

        assert result.exit_code == EXIT_USAGE
        assert result.stderr.startswith("error: postgresql://nobody@127.0.0.1:9/none ")
        assert len(result.stderr.splitlines()) == 1

    @pytest.mark.parametrize(
        "args", [[], ["run"], ["show"], ["nosuchcommand"], ["runs", "--limit", "0"]]
    )
    def test_usage_errors_of_the_parser_exit_2(self, runner, args):
        result = runner.invoke(app, args)

        assert result.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    ("items", "data"),
    [
        (["n=3"], {"n": 3}),
        (["topic=owls"], {"topic": "owls"}),
        (['tags=["a"]'], {"tags": ["a"]}),
        (["x=null", "y=true", "z=1.5"], {"x": None, "y": True, "z": 1.5}),
        (["url=a=b"], {"url": "a=b"}),
        (["s="], {"s": ""}),
        (['q="quoted"'], {"q": "quoted"}),
        (["n=1", "n=2"], {"n": 2}),
    ],
)
def test_data_items_are_parsed(items, data):
    assert _parse_data(items) == data


def test_a_malformed_data_item_is_named():
    with pytest.raises(CliError, match="malformed --data 'oops'"):
        _parse_data(["oops"])


def test_a_pipeline_built_in_the_test_is_a_target_too(runner, url, tmp_path, monkeypatch):
    import sys
    import types

    module = types.ModuleType("cli_inline_flow")

    async def one(ctx):
        return {}

    module.flow = Pipeline("inline").with_stage("one", one)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cli_inline_flow", module)

    assert start(runner, url, "cli_inline_flow:flow")["status"] == "completed"


# ----------------------------------------------------------------------------- Ctrl-C, entry points


def _interrupt(coroutine):
    coroutine.close()  # never started: as if Ctrl-C came at once
    raise KeyboardInterrupt


class TestInterrupted:
    def test_ctrl_c_exits_130_with_the_resume_hint(self, runner, url, flow, monkeypatch):
        from stageflow.cli import _commands

        monkeypatch.setattr(_commands.asyncio, "run", _interrupt)
        result = invoke(runner, "run", f"{flow}:pipeline", "--store", url, "--run-id", "i1")

        assert result.exit_code == EXIT_CANCELLED
        assert result.stdout.endswith(
            f"cancelled: resume with  stageflow resume i1 --store {url}\n"
        )

    def test_ctrl_c_with_json_prints_what_was_known(self, runner, flow, monkeypatch):
        from stageflow.cli import _commands

        monkeypatch.setattr(_commands.asyncio, "run", _interrupt)
        result = invoke(runner, "run", f"{flow}:pipeline", "--json", "--run-id", "i1")

        assert result.exit_code == EXIT_CANCELLED
        out = as_json(result)
        assert (out["run_id"], out["pipeline"], out["status"]) == ("i1", "tiny", "cancelled")
        assert out["stages"]["a"] == {
            "status": "pending", "attempts": 0, "duration": None, "error": None,
        }  # fmt: skip
        assert result.stderr == "cancelled: resume with  stageflow resume i1\n"

    def test_ctrl_c_ends_follow_with_130(self, runner, url, flow, monkeypatch):
        from stageflow.cli import _commands

        start(runner, url, f"{flow}:pipeline", "--run-id", "e1")
        monkeypatch.setattr(_commands.asyncio, "run", _interrupt)

        assert invoke(runner, "events", "e1", "--store", url, "--follow").exit_code == 130


def test_main_is_the_command(flow, monkeypatch, capsys):
    import runpy
    import sys

    from stageflow.cli import main

    monkeypatch.setattr(sys, "argv", ["stageflow", "validate", f"{flow}:pipeline"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    assert capsys.readouterr().out == "ok: tiny (3 stages)\n"
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("stageflow.cli", run_name="__main__")
    assert exited.value.code == 0
    assert capsys.readouterr().out == "ok: tiny (3 stages)\n"


def test_the_progress_view_tracks_each_stage():
    from rich.console import Console

    from stageflow import Event
    from stageflow.cli._progress import ProgressView

    console = Console(record=True, width=120, force_terminal=False)
    view = ProgressView(("a", "b", "c"), console, lines=True)

    def event(type_, stage, attempt=1, data=None):
        view.try_emit(Event(type_, "r", "p", stage, 1, 1.0, attempt, data or {}))

    event("run.started", None, 0, {"stages": 3})
    event("stage.started", "a")
    event("stage.retrying", "a", 1, {"attempt": 2, "delay": 0.5, "error": "OSError",
                                     "message": "down"})  # fmt: skip
    event("stage.started", "b")
    event("custom.step", "b", 1, {"done": 3})
    event("stage.started", "zz")  # not a stage of the graph: ignored
    assert view.stages["a"].status == "retrying"
    assert view.stages["a"].note == "attempt 2 in 0.50s after OSError: down"
    assert view.stages["b"].note == "done=3"
    assert view.stages["b"].elapsed() > 0  # running: the time since it started
    event("stage.started", "a", 2)
    event("stage.completed", "a", 2, {"duration": 0.25})
    event("stage.failed", "b", 1, {"duration": 0.1, "reason": "ValueError: bad"})
    asyncio.run(view.emit(Event("stage.skipped", "r", "p", "c", 1, 1.0, 0, {"reason": "x"})))

    assert view.counts() == {"done": 1, "failed": 1, "skipped": 1}
    assert view.stages["a"].attempts == 2
    assert view.stages["a"].elapsed() == 0.25
    console.print(view)
    text = console.export_text()
    assert "done      a  2 attempts  0.25s" in text
    assert "failed    b  1 attempt  0.10s  ValueError: bad" in text
    assert "skipped   c  0 attempts  0.00s  x" in text
    assert "3/3" in text  # the progress bar of the live view


def test_a_url_that_is_none_is_shown_as_given():
    from stageflow.cli._store import shown, sqlite_path

    assert shown("not a url") == "not a url"
    assert sqlite_path("not a url") is None
    assert sqlite_path("postgresql://u@h/db") is None
