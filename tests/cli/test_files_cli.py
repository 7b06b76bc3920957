"""Pipeline files on the command line: validate, run, resume, graph, schema,
pipelines, serve's --pipelines; through typer's CliRunner, on a real SQLite store."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.cli import EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE, app
from stageflow.cli._errors import CliError
from stageflow.cli._files import parse_data
from stageflow.cli._load import file_label, load_object, load_target

pytestmark = pytest.mark.usefixtures("isolated")

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "examples.declarative.handlers"

HELLO = f"""\
name: hello
category: demo
description: Greets and echoes.
parameters:
  times: {{type: integer, default: 1}}
inputs:
  name: {{type: string}}
  n: {{type: integer, default: 2}}
stages:
  - id: greet
    handler: {HANDLERS}.greet
    with: {{name: $inputs.name}}
  - id: echo
    handler: {HANDLERS}.echo
    with: {{text: $greet.greeting, n: $inputs.n, times: $params.times}}
outputs:
  text: $echo.text
  times: $echo.times
"""

FAILING = f"""\
name: failing
stages:
  - id: boom
    handler: {HANDLERS}.fail
    with: {{message: broken}}
"""

# line 4, column 5: the misspelled key `handlr` of the first stage
INVALID = f"""\
name: bad
stages:
  - id: a
    handlr: {HANDLERS}.greet
"""

PYFLOW = """
from stageflow import Pipeline


async def first(ctx):
    return {"n": 1}


pipeline = Pipeline("py").with_stage("first", first)
"""


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example handlers import from the repository's root, wherever the test runs."""
    monkeypatch.syspath_prepend(str(ROOT))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    path = tmp_path / "hello.yaml"
    path.write_text(HELLO)
    return path


@pytest.fixture
def invalid(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(INVALID)
    return path


def invalid_line(path: Path) -> str:
    return f"{path}:4:5: stages[0].handlr:"


# ----------------------------------------------------------------------------- validate


class TestValidate:
    def test_a_valid_file_prints_its_name_and_stages(self, runner, hello):
        result = invoke(runner, "validate", str(hello))
        assert result.exit_code == EXIT_COMPLETED, result.output
        assert result.stdout.splitlines() == ["ok: hello (2 stages)", "  greet", "  echo"]

    def test_json(self, runner, hello):
        result = invoke(runner, "validate", str(hello), "--json")
        assert result.exit_code == EXIT_COMPLETED
        assert json.loads(result.stdout) == {"ok": True, "name": "hello",
                                             "stages": ["greet", "echo"]}  # fmt: skip

    def test_an_invalid_file_says_where_in_one_line(self, runner, invalid):
        result = invoke(runner, "validate", str(invalid))
        assert result.exit_code == EXIT_USAGE
        lines = result.output.splitlines()
        assert len(lines) == 1, result.output
        assert lines[0].startswith(f"error: {invalid_line(invalid)}")
        assert "Traceback" not in result.output

    def test_an_invalid_file_as_json(self, runner, invalid):
        result = invoke(runner, "validate", str(invalid), "--json")
        assert result.exit_code == EXIT_USAGE
        out = json.loads(result.stdout)
        assert out["ok"] is False
        error = out["error"]
        assert (error["file"], error["line"], error["column"]) == (str(invalid), 4, 5)
        assert error["field"] == "stages[0].handlr"
        assert error["message"].startswith(invalid_line(invalid))

    def test_a_missing_file(self, runner, tmp_path):
        missing = tmp_path / "nope.yaml"
        result = invoke(runner, "validate", str(missing))
        assert result.exit_code == EXIT_USAGE
        assert (
            result.output
            == f"error: {missing}:1:1: cannot read the file: No such file or directory\n"
        )

    def test_a_missing_file_as_json(self, runner, tmp_path):
        result = invoke(runner, "validate", str(tmp_path / "nope.yaml"), "--json")
        assert result.exit_code == EXIT_USAGE
        assert json.loads(result.stdout)["error"]["message"].endswith("No such file or directory")

    def test_params(self, runner, hello):
        assert invoke(runner, "validate", str(hello), "--param", "times=3").exit_code == 0
        result = invoke(runner, "validate", str(hello), "--param", "times=many")
        assert result.exit_code == EXIT_USAGE
        assert "times" in result.output
        assert "many" in result.output
        assert "Traceback" not in result.output

    def test_an_unknown_param(self, runner, hello):
        result = invoke(runner, "validate", str(hello), "-p", "tims=3")
        assert result.exit_code == EXIT_USAGE
        assert "tims" in result.output

    def test_a_malformed_param(self, runner, hello):
        result = invoke(runner, "validate", str(hello), "--param", "times")
        assert result.exit_code == EXIT_USAGE
        assert result.output == "error: malformed --param 'times': expected KEY=VALUE\n"

    def test_a_param_for_a_python_target(self, runner, tmp_path):
        (tmp_path / "flow.py").write_text(PYFLOW)
        result = invoke(runner, "validate", f"{tmp_path / 'flow.py'}:pipeline", "-p", "a=1")
        assert result.exit_code == EXIT_USAGE
        assert "--param gives a pipeline file's template parameters" in result.output

    def test_a_python_target_still_validates(self, runner, tmp_path):
        (tmp_path / "flow.py").write_text(PYFLOW)
        result = invoke(runner, "validate", f"{tmp_path / 'flow.py'}:pipeline")
        assert result.exit_code == EXIT_COMPLETED, result.output
        assert result.stdout.splitlines()[0] == "ok: py (1 stages)"

    def test_an_unknown_target(self, runner):
        result = invoke(runner, "validate", "no_such_module_xyz:pipeline")
        assert result.exit_code == EXIT_USAGE
        assert "no module named 'no_such_module_xyz'" in result.output

    def test_json_and_toml_files(self, runner, tmp_path):
        doc = {"name": "j", "stages": [{"id": "g", "handler": f"{HANDLERS}.greet",
                                        "with": {"name": "x"}}]}  # fmt: skip
        (tmp_path / "p.json").write_text(json.dumps(doc))
        (tmp_path / "p.toml").write_text(
            f'name = "t"\n[[stages]]\nid = "g"\nhandler = "{HANDLERS}.greet"\n'
            '[stages.with]\nname = "x"\n'
        )
        for name, shown in (("p.json", "ok: j (1 stages)"), ("p.toml", "ok: t (1 stages)")):
            result = invoke(runner, "validate", str(tmp_path / name))
            assert result.exit_code == EXIT_COMPLETED, result.output
            assert result.stdout.splitlines()[0] == shown


# ----------------------------------------------------------------------------- run


class TestRun:
    def test_a_file_runs_and_prints_its_outputs(self, runner, hello, url):
        result = invoke(runner, "run", str(hello), "--store", url, "--data", '{"name": "bob"}',
                        "-p", "times=3")  # fmt: skip
        assert result.exit_code == EXIT_COMPLETED, result.output
        lines = result.stdout.splitlines()
        assert "stages: 2 completed" in lines
        assert lines[-3:] == ["outputs:", "  text: hello bob", "  times: 3"]

    def test_json_has_the_outputs(self, runner, hello, url):
        result = invoke(runner, "run", str(hello), "--store", url, "--json", "-d", "name=ann",
                        "--run-id", "r1")  # fmt: skip
        assert result.exit_code == EXIT_COMPLETED, result.output
        out = json.loads(result.stdout)
        assert out["status"] == "completed"
        assert out["outputs"] == {"text": "hello ann", "times": 1}

    def test_data_from_a_file(self, runner, hello, url, tmp_path):
        (tmp_path / "data.json").write_text('{"name": "cy", "n": 5}')
        result = invoke(runner, "run", str(hello), "--store", url, "--json",
                        "--data", f"@{tmp_path / 'data.json'}")  # fmt: skip
        assert result.exit_code == EXIT_COMPLETED, result.output
        assert json.loads(result.stdout)["stages"]["echo"]["status"] == "completed"

    def test_a_data_file_that_is_not_utf8(self, runner, hello, url, tmp_path):
        (tmp_path / "data.json").write_bytes(b'{"name": "caf\xe9"}')
        result = invoke(runner, "run", str(hello), "--store", url,
                        "--data", f"@{tmp_path / 'data.json'}")  # fmt: skip
        assert result.exit_code == EXIT_USAGE
        assert "not UTF-8 text" in result.output

    def test_outputs_that_cannot_be_read_fail_the_command(self, runner, url, tmp_path):
        (tmp_path / "o.yaml").write_text(
            f"name: o\ninputs: {{who: {{type: any, default: null}}}}\nstages:\n  - id: a\n"
            f"    handler: {HANDLERS}.echo\n    with: {{v: 1}}\noutputs:\n"
            "  deep: ${{ $inputs.who.name }}\n"
        )
        result = invoke(runner, "run", str(tmp_path / "o.yaml"), "--store", url)
        assert result.exit_code == EXIT_FAILED
        assert "outputs of 'o'" in result.output

    def test_the_run_is_durable_on_the_store(self, runner, hello, url):
        invoke(runner, "run", str(hello), "--store", url, "-d", "name=d", "--run-id", "r2",
               "-p", "times=2")  # fmt: skip
        shown = invoke(runner, "show", "r2", "--store", url, "--json")
        assert shown.exit_code == EXIT_COMPLETED, shown.output
        assert json.loads(shown.stdout)["status"] == "completed"

    def test_data_is_checked_against_inputs_first(self, runner, hello, url, tmp_path):
        result = invoke(runner, "run", str(hello), "--store", url, "-d", "name=a", "-d", "n=x")
        assert result.exit_code == EXIT_USAGE
        assert result.output.startswith("error: --data: data of pipeline 'hello': n: ")
        assert "'x'" in result.output
        assert not (tmp_path / "runs.db").exists()  # nothing ran, no store made

    def test_a_missing_required_input(self, runner, hello, url):
        result = invoke(runner, "run", str(hello), "--store", url)
        assert result.exit_code == EXIT_USAGE
        assert "name" in result.output
        assert result.output.startswith("error: --data:")

    @pytest.mark.parametrize(
        ("given", "said"),
        [
            ("{not json", "--data '{not json': not valid JSON"),
            ("[1, 2]", "malformed --data '[1, 2]'"),
            ("@missing.json", "--data @missing.json: cannot read it"),
            ("noequals", "malformed --data 'noequals': expected KEY=VALUE, a JSON object"),
        ],
    )
    def test_bad_data(self, runner, hello, url, given, said):
        result = invoke(runner, "run", str(hello), "--store", url, "--data", given)
        assert result.exit_code == EXIT_USAGE
        assert result.output.startswith(f"error: {said}"), result.output

    def test_data_file_not_an_object(self, tmp_path):
        (tmp_path / "d.json").write_text("[1]")
        with pytest.raises(CliError, match="must be a JSON object, not list"):
            parse_data([f"@{tmp_path / 'd.json'}"])

    def test_data_items_merge_in_order(self):
        assert parse_data(['{"a": 1, "b": 2}', "b=3", "c=x"]) == {"a": 1, "b": 3, "c": "x"}

    def test_a_failing_file_exits_1_and_prints_no_outputs(self, runner, url, tmp_path):
        (tmp_path / "f.yaml").write_text(FAILING)
        result = invoke(runner, "run", str(tmp_path / "f.yaml"), "--store", url)
        assert result.exit_code == EXIT_FAILED
        assert "outputs:" not in result.stdout
        assert "boom: " in result.stdout

    def test_an_invalid_file(self, runner, invalid, url):
        result = invoke(runner, "run", str(invalid), "--store", url)
        assert result.exit_code == EXIT_USAGE
        assert result.output.startswith(f"error: {invalid_line(invalid)}")
        assert len(result.output.splitlines()) == 1

    def test_resume_finds_the_file_and_its_params_from_elsewhere(
        self, runner, url, tmp_path, monkeypatch
    ):
        (tmp_path / "f.yaml").write_text(FAILING)
        invoke(runner, "run", "f.yaml", "--store", url, "--run-id", "rf")
        elsewhere = tmp_path / "sub"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        result = invoke(runner, "resume", "rf", "--store", url)
        assert result.exit_code == EXIT_FAILED, result.output
        assert "resuming 'failing'" in result.stdout

    def test_the_label_keeps_the_params(self, hello):
        label = file_label(str(hello), {"times": 4})
        assert label == f"{hello.resolve()}?times=4"
        graph, _ = load_target(label)
        assert graph.name == "hello"

    def test_the_stored_label(self, runner, hello, url, tmp_path):
        invoke(runner, "run", str(hello), "--store", url, "-d", "name=z", "--run-id", "rl",
               "-p", "times=7")  # fmt: skip
        import asyncio

        async def labels() -> dict:
            store = SQLAlchemyStore(url.replace("sqlite:", "sqlite+aiosqlite:"))
            try:
                return dict((await store.get_run("rl")).labels)
            finally:
                await store.aclose()

        assert asyncio.run(labels())["stageflow.target"] == f"{hello.resolve()}?times=7"

    def test_a_python_target_still_runs(self, runner, url, tmp_path):
        (tmp_path / "flow.py").write_text(PYFLOW)
        result = invoke(runner, "run", f"{tmp_path / 'flow.py'}:pipeline", "--store", url,
                        "--json", "-d", '{"k": 1}')  # fmt: skip
        assert result.exit_code == EXIT_COMPLETED, result.output
        assert "outputs" not in json.loads(result.stdout)


# ----------------------------------------------------------------------------- graph, schema


class TestGraphAndSchema:
    def test_graph_of_a_file(self, runner, hello):
        result = invoke(runner, "graph", str(hello))
        assert result.exit_code == EXIT_COMPLETED, result.output
        assert result.stdout.splitlines()[:3] == ["flowchart TD", '    s0["greet"]',
                                                  '    s1["echo"]']  # fmt: skip

    def test_graph_dot(self, runner, hello):
        result = invoke(runner, "graph", str(hello), "--format", "dot", "-p", "times=2")
        assert result.exit_code == EXIT_COMPLETED
        assert result.stdout.startswith("digraph")

    def test_graph_of_an_invalid_file(self, runner, invalid):
        result = invoke(runner, "graph", str(invalid))
        assert result.exit_code == EXIT_USAGE
        assert result.output.startswith(f"error: {invalid_line(invalid)}")

    def test_schema(self, runner):
        from stageflow.adapters.declarative import pipeline_schema

        result = invoke(runner, "schema")
        assert result.exit_code == EXIT_COMPLETED
        assert json.loads(result.stdout) == pipeline_schema()
        assert result.stdout.startswith("{\n  ")

    def test_schema_to_a_file(self, runner, tmp_path):
        result = invoke(runner, "schema", "--output", str(tmp_path / "s.json"))
        assert result.exit_code == EXIT_COMPLETED
        assert "$defs" in json.loads((tmp_path / "s.json").read_text())

    def test_schema_to_a_file_that_cannot_be_written(self, runner, tmp_path):
        result = invoke(runner, "schema", "--output", str(tmp_path / "no" / "s.json"))
        assert result.exit_code == EXIT_USAGE
        assert "cannot write it" in result.output


# ----------------------------------------------------------------------------- pipelines


class TestPipelines:
    def test_a_folder(self, runner, hello, tmp_path):
        (tmp_path / "notes.txt").write_text("not a pipeline")
        result = invoke(runner, "pipelines", str(tmp_path), "--json")
        assert result.exit_code == EXIT_COMPLETED, result.output
        (row,) = json.loads(result.stdout)
        assert (row["name"], row["category"], row["stages"]) == ("hello", "demo", 2)
        assert row["description"] == "Greets and echoes."

    def test_a_folder_as_a_table(self, runner, hello, tmp_path):
        result = invoke(runner, "pipelines", str(tmp_path))
        assert result.exit_code == EXIT_COMPLETED
        header, row = result.stdout.splitlines()
        assert header.split() == ["name", "category", "stages", "description"]
        assert row.split() == ["hello", "demo", "2", "Greets", "and", "echoes."]

    def test_a_file_that_fails_is_listed_with_its_error(self, runner, hello, invalid, tmp_path):
        result = invoke(runner, "pipelines", str(tmp_path), "--json")
        assert result.exit_code == EXIT_FAILED
        rows = {row["name"]: row for row in json.loads(result.stdout)}
        assert rows["hello"]["error"] is None
        assert rows["bad.yaml"]["error"].startswith(invalid_line(invalid))

    def test_a_missing_folder(self, runner, tmp_path):
        result = invoke(runner, "pipelines", str(tmp_path / "nope"))
        assert result.exit_code == EXIT_USAGE
        assert (
            result.output
            == f"error: {tmp_path / 'nope'}: not found (a folder, a pipeline file, or mod:attr)\n"
        )

    def test_errors_in_a_table_and_templates_listed(self, runner, hello, invalid, tmp_path):
        (tmp_path / "tpl.yaml").write_text(
            f"name: tpl\nparameters: {{n: integer}}\nstages:\n  - id: a\n"
            f"    handler: {HANDLERS}.echo\n    with: {{n: $params.n}}\n"
        )
        result = invoke(runner, "pipelines", str(tmp_path))
        assert result.exit_code == EXIT_FAILED
        assert "error:" in result.stdout
        assert "a template: give its parameters" in result.stdout

    def test_an_empty_folder(self, runner, tmp_path):
        result = invoke(runner, "pipelines", str(tmp_path))
        assert result.exit_code == EXIT_COMPLETED
        assert f"no pipelines in {tmp_path}" in result.stderr

    def test_a_catalog_factory_that_raises(self, runner, tmp_path):
        (tmp_path / "fac.py").write_text("def make():\n    raise RuntimeError('nope')\n")
        result = invoke(runner, "pipelines", f"{tmp_path / 'fac.py'}:make")
        assert result.exit_code == EXIT_USAGE
        assert "raised RuntimeError: nope" in result.output

    def test_a_catalog_object(self, runner, tmp_path):
        (tmp_path / "cat.py").write_text(
            PYFLOW + "\nfrom stageflow import Catalog\n"
            "catalog = Catalog().add('one', pipeline, description='first', category='c')\n"
        )
        result = invoke(runner, "pipelines", f"{tmp_path / 'cat.py'}:catalog", "--json")
        assert result.exit_code == EXIT_COMPLETED, result.output
        (row,) = json.loads(result.stdout)
        assert (row["name"], row["category"], row["description"], row["stages"]) == (
            "one", "c", "first", 1)  # fmt: skip

    def test_not_a_catalog(self, runner, tmp_path):
        (tmp_path / "cat.py").write_text("catalog = 3\n")
        result = invoke(runner, "pipelines", f"{tmp_path / 'cat.py'}:catalog")
        assert result.exit_code == EXIT_USAGE
        assert result.output.startswith("error: ")
        assert "Traceback" not in result.output

    def test_an_unknown_target(self, runner):
        result = invoke(runner, "pipelines", "no_such_module_xyz:catalog")
        assert result.exit_code == EXIT_USAGE
        assert "no module named 'no_such_module_xyz'" in result.output

    def test_the_entry_points_by_default(self, runner, tmp_path, monkeypatch):
        """A real installed distribution (a .dist-info on sys.path) declaring two entry
        points: one good, one whose module does not import."""
        (tmp_path / "mypipes.py").write_text(PYFLOW)
        info = tmp_path / "mypipes-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypipes\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(
            "[stageflow.pipelines]\npy = mypipes:pipeline\nbroken = nosuchmod_q:pipeline\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        result = invoke(runner, "pipelines", "--json")
        assert result.exit_code == EXIT_FAILED, result.output
        rows = {row["name"]: row for row in json.loads(result.stdout)}
        assert rows["py"]["stages"] == 1
        assert rows["py"]["error"] is None
        assert "ModuleNotFoundError" in rows["broken"]["error"]


# ----------------------------------------------------------------------------- serve/mcp


class TestCatalogOfFiles:
    """``--pipelines`` (serve, mcp, info) takes a pipeline file or a folder of them."""

    def test_a_file_is_a_catalog_of_one(self, hello):
        catalog = load_object(str(hello), "--pipelines")
        assert catalog.names == ("hello",)  # type: ignore[attr-defined]
        entry = catalog["hello"]  # type: ignore[index]
        assert entry.category == "demo"
        assert entry.data is not None

    def test_a_folder(self, hello, tmp_path):
        catalog = load_object(str(tmp_path), "--pipelines")
        assert catalog.names == ("hello",)  # type: ignore[attr-defined]

    def test_a_folder_with_an_invalid_file(self, hello, invalid, tmp_path):
        with pytest.raises(CliError, match=r"bad\.yaml:4:5"):
            load_object(str(tmp_path), "--pipelines")

    def test_serve_prepares_a_file(self, hello, url):
        from stageflow.cli._serve import load_catalog

        assert load_catalog(str(hello)).names == ("hello",)


# ----------------------------------------------------------------------------- export

EXPORTABLE = """
from stageflow import Pipeline, StageKind


async def first(ctx):
    return {"n": 1}


def big(ctx):
    return ctx.inputs.get_from("first", "n") > 0


async def second(ctx):
    return {"m": ctx.inputs.get_from("first", "n") + 1}


pipeline = (
    Pipeline("py")
    .with_stage("first", first, StageKind.ENRICH, timeout=3, retry=2)
    .with_stage("second", second, dependencies=("first",), when=big, tags={"x"})
)
"""


class TestExport:
    @pytest.fixture
    def module(self, tmp_path, monkeypatch):
        (tmp_path / "exportme.py").write_text(EXPORTABLE)
        monkeypatch.syspath_prepend(str(tmp_path))
        return "exportme:pipeline"

    def test_a_python_pipeline_becomes_a_file_that_validates_and_runs_alike(
        self, runner, module, tmp_path, url
    ):
        out = tmp_path / "py.yaml"
        result = invoke(runner, "export", module, "--output", str(out))
        assert result.exit_code == EXIT_COMPLETED, result.output
        text = out.read_text()
        assert text.startswith("# exported by: stageflow export exportme:pipeline\n")
        assert "handler: exportme.first" in text
        assert "python: exportme.big" in text
        from stageflow._durable import fingerprint, structure
        from stageflow.adapters.declarative import load_pipeline

        original = load_target(module)[0]
        assert fingerprint(structure(load_pipeline(out).graph)) == fingerprint(structure(original))
        done = invoke(runner, "run", str(out), "--store", url, "--json")
        assert done.exit_code == EXIT_COMPLETED, done.output
        stages = json.loads(done.stdout)["stages"]
        assert [stages[n]["status"] for n in ("first", "second")] == ["completed"] * 2

    def test_json_by_the_output_suffix(self, runner, module, tmp_path):
        out = tmp_path / "py.json"
        assert invoke(runner, "export", module, "-o", str(out)).exit_code == EXIT_COMPLETED
        assert json.loads(out.read_text())["stages"][0]["handler"] == "exportme.first"

    def test_printed_as_json(self, runner, module):
        result = invoke(runner, "export", module, "--format", "json")
        assert json.loads(result.stdout)["name"] == "py"

    def test_a_stage_without_a_dotted_path_is_named(self, runner, tmp_path):
        (tmp_path / "closure.py").write_text(
            "from stageflow import Pipeline\n"
            "pipeline = Pipeline('c').with_stage('a', lambda ctx: {'x': 1})\n"
        )
        result = invoke(runner, "export", f"{tmp_path / 'closure.py'}:pipeline")
        assert result.exit_code == EXIT_USAGE
        assert "stage 'a': its handler" in result.output
        assert "no importable path" in result.output

    def test_a_target_by_path_notes_where_its_module_is(self, runner, tmp_path):
        (tmp_path / "bypath.py").write_text(EXPORTABLE)
        result = invoke(runner, "export", f"{tmp_path / 'bypath.py'}:pipeline")
        assert result.exit_code == EXIT_COMPLETED
        assert "handler: bypath.first" in result.stdout
        assert f"PYTHONPATH={tmp_path}" in result.stderr

    def test_a_file_exports_as_it_is_declared(self, runner, hello):
        result = invoke(runner, "export", str(hello), "--param", "times=3")
        assert result.exit_code == EXIT_COMPLETED, result.output
        assert "times: 3" in result.stdout  # the template instantiated
        assert "text: $greet.greeting" in result.stdout

    def test_an_unknown_format(self, runner, module):
        result = invoke(runner, "export", module, "--format", "toml")
        assert result.exit_code == EXIT_USAGE


def test_help_lists_the_commands(runner):
    result = invoke(runner, "--help")
    for name in ("validate", "run", "graph", "schema", "export", "pipelines"):
        assert name in result.stdout
    shown = textwrap.dedent(invoke(runner, "run", "--help").stdout)
    assert "--param" in shown


# ----------------------------------------------------------------------------- a real process


class TestProcess:
    """The console script itself, in its own process, from the folder holding the handlers
    (as a user runs it: `stageflow run review.yaml` beside their package)."""

    SCRIPT = Path(sys.executable).with_name("stageflow")

    def _cli(self, *args: str, cwd: Path = ROOT):
        import os
        import subprocess

        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STAGEFLOW_STORE")}
        return subprocess.run(
            [str(self.SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    def test_run_a_file_with_data_and_params(self, tmp_path):
        (tmp_path / "hello.yaml").write_text(HELLO)
        url = f"sqlite:///{tmp_path}/runs.db"
        done = self._cli("run", str(tmp_path / "hello.yaml"), "--store", url,
                         "--data", '{"name": "eve"}', "--param", "times=2")  # fmt: skip
        assert done.returncode == EXIT_COMPLETED, done.stderr
        assert done.stdout.splitlines()[-3:] == ["outputs:", "  text: hello eve", "  times: 2"]

    def test_an_invalid_file_is_one_line_on_stderr(self, tmp_path):
        (tmp_path / "bad.yaml").write_text(INVALID)
        done = self._cli("validate", str(tmp_path / "bad.yaml"))
        assert done.returncode == EXIT_USAGE
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"error: {tmp_path / 'bad.yaml'}:4:5: stages[0].handlr:")
