"""The testing kit on a base install: a fresh venv with stageflow and its runtime deps only.

The venv is real (``venv``, no system site-packages, no pip) and holds exactly what
``pip install stageflow`` would put there: stageflow from this working tree and the
distributions its ``[project] dependencies`` need, transitively, found from their installed
metadata. They are linked file by file from this venv (their RECORD lists the files; a
namespace package such as ``opentelemetry`` gets only the api's files), so the test needs no
network and no package index, and runs in about a second. Hypothesis, SQLAlchemy, Typer,
Rich and the OpenTelemetry SDK are absent there: not blocked, not installed.

The child (``_base_install_child.py``) uses the kit and runs the documentation pages whose
first examples use it; it writes what it saw as JSON, and the tests below judge that.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import stageflow.testing

from ..docs.test_examples import extract_blocks

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("_base_install_child.py")
PAGES = ("docs/concepts.md", "docs/durability.md", "docs/resilience.md")
INSTALL_HINT = "pip install 'stageflow[testing]'"

pytestmark = pytest.mark.slow


def _project() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, Any] = tomllib.load(file)["project"]
    return project


def runtime_distributions(extras: tuple[str, ...] = ()) -> dict[str, Any]:
    """The installed distributions that ``pip install stageflow[extras]`` needs, by name."""
    project = _project()
    found: dict[str, Any] = {}
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(r) for e in extras for r in project["optional-dependencies"][e]]
    wanted: dict[str, set[str]] = {}  # the extras asked of each distribution
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        new = set(requirement.extras) - wanted.get(name, set())
        if name in found and not new:
            continue
        wanted[name] = wanted.get(name, set()) | new
        found[name] = dist = distribution(requirement.name)
        for text in dist.requires or ():
            r = Requirement(text)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in {"", *new}):
                todo.append(r)
    return found


def _link_distribution(dist: Any, site: Path) -> None:
    """Link each file of ``dist``'s RECORD into ``site``, keeping the tree."""
    for file in dist.files or ():
        if ".." in file.parts or "__pycache__" in file.parts:
            continue  # scripts outside site-packages; bytecode is rebuilt or not needed
        source = Path(dist.locate_file(file))
        target = site / file
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.exists() and not target.exists():
            target.symlink_to(source)


def make_venv(where: Path, extras: tuple[str, ...] = ()) -> Path:
    """A venv holding stageflow (this working tree) and what its install with ``extras``
    needs, nothing else; its python."""
    venv.EnvBuilder(symlinks=True, with_pip=False).create(where)
    python = where / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    for dist in runtime_distributions(extras).values():
        _link_distribution(dist, site)
    (site / "stageflow").symlink_to(ROOT / "stageflow")
    info = site / f"stageflow-{stageflow.__version__}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: stageflow\nVersion: {stageflow.__version__}\n",
        encoding="utf-8",
    )
    return python


def _docs_blocks(pages: tuple[str, ...]) -> dict[str, list[tuple[int, str]]]:
    blocks_of = {}
    for page in pages:
        path = ROOT / page
        blocks = extract_blocks(path.read_text(encoding="utf-8"), path)
        blocks_of[page] = [(block.line, block.source) for block in blocks]
    return blocks_of


def _report(tmp: Path, extras: tuple[str, ...] = (), pages: tuple[str, ...] = PAGES) -> Any:
    """What the child saw in a fresh venv of stageflow with ``extras``, running ``pages``."""
    python = make_venv(tmp / "venv", extras)
    docs = tmp / "docs.json"
    docs.write_text(json.dumps(_docs_blocks(pages)), encoding="utf-8")
    work = tmp / "work"  # whatever a docs example writes lands here
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [python, "-I", "-B", "-W", "error", CHILD, docs, tmp / "report.json"],
        check=False,
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((tmp / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _report(tmp_path_factory.mktemp("base-install"))


def _extras_named_before(page: str, line: int) -> set[str]:
    """The extras the page names (``stageflow[x]``) above ``line``."""
    text = "\n".join((ROOT / page).read_text(encoding="utf-8").splitlines()[: line - 1])
    return {e for found in re.findall(r"stageflow\[([a-z,]+)\]", text) for e in found.split(",")}


class TestTheVenv:
    def test_it_holds_stageflow_and_its_runtime_dependencies_only(self, report):
        expected = {canonicalize_name(n) for n in runtime_distributions()} | {"stageflow"}

        seen = {canonicalize_name(n) for n in report["environment"]["distributions"]}

        assert seen == expected
        assert {"pydantic", "opentelemetry-api"} <= seen

    def test_hypothesis_and_the_other_extras_are_not_installed(self, report):
        seen = {canonicalize_name(n) for n in report["environment"]["distributions"]}

        assert report["environment"]["hypothesis_found"] is False
        assert not seen & {"hypothesis", "sqlalchemy", "typer", "rich", "opentelemetry-sdk"}
        assert Path(report["environment"]["prefix"]) != Path(sys.prefix)

    def test_nothing_of_an_extra_was_imported(self, report):
        extras = {"hypothesis", "sqlalchemy", "aiosqlite", "asyncpg", "typer", "rich", "ray"}

        assert not set(report["modules"]) & extras
        assert "stageflow" in report["modules"]


class TestTheKitWithoutHypothesis:
    def test_a_star_import_gives_all_of_the_kit(self, report):
        assert report["star_import"] == sorted(stageflow.testing.__all__)

    def test_a_pipeline_runs_on_virtual_time_with_a_recording_sink(self, report):
        assert report["pipeline"] == {
            "status": "completed",
            "duration": 4200.0,
            "index": {"indexed": 3},
            "index_events": ["stage.started", "stage.completed"],
            "last_event": "run.completed",
        }

    def test_a_manual_clock_drives_a_retry_backoff(self, report):
        assert report["manual_clock"] == {"ok": True, "calls": [0.0, 30.0]}

    def test_shapes_build_pipelines(self, report):
        assert report["shapes"] == {
            "ancestors": ["fetch", "parse"],
            "descendants": ["index", "parse"],
            "ran": ["fetch", "index", "parse"],
        }

    def test_the_store_contract_suites_run(self, report):
        assert report["store_contract"] == "passed"

    def test_each_way_to_the_strategies_raises_an_import_error_naming_the_extra(self, report):
        for statement, error in report["strategies"].items():
            assert error is not None, f"{statement} worked without Hypothesis"
            assert error["type"] == "ImportError", statement
            assert INSTALL_HINT in error["message"], statement
            assert "Hypothesis" in error["message"], statement


class TestTheFirstExamples:
    @pytest.mark.parametrize("page", PAGES)
    def test_run_on_a_base_install_or_the_page_names_the_extra_first(self, report, page):
        outcomes = report["docs"][page]
        assert outcomes, f"{page} has no runnable example"
        *before, last = outcomes
        assert all(o.get("ok") for o in before)
        if last.get("ok"):
            return  # the whole page runs on a base install
        assert "missing" in last, f"{page}:{last['line']}: {last.get('error')}"
        assert _extras_named_before(page, last["line"]), (
            f"{page}:{last['line']} imports {last['missing']}, which a base install lacks:"
            " say which extra it needs (stageflow[...]) before it"
        )

    def test_concepts_and_resilience_start_on_a_base_install(self, report):
        for page in ("docs/concepts.md", "docs/resilience.md"):
            assert report["docs"][page][0].get("ok"), page

    def test_durability_starts_with_the_sql_store_and_names_the_sqlite_extra(self, report):
        first = report["docs"]["docs/durability.md"][0]

        assert "missing" in first
        assert "sqlite" in _extras_named_before("docs/durability.md", first["line"])

    def test_the_sqlite_extra_is_enough_for_the_first_durability_example(self, tmp_path):
        page = "docs/durability.md"
        report = _report(tmp_path, ("sqlite",), (page,))
        seen = {canonicalize_name(n) for n in report["environment"]["distributions"]}
        assert {"sqlalchemy", "aiosqlite", "greenlet"} <= seen  # the sqlite extra, installed
        assert "asyncpg" not in seen

        assert report["docs"][page][0].get("ok"), report["docs"][page][0]
