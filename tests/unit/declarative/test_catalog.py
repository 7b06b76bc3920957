"""A catalog of pipeline files and entry points (load_catalog / FileCatalog)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stageflow import Engine, RunStatus
from stageflow.adapters.declarative import FileCatalog, load_catalog
from stageflow.errors import ConfigurationError, PipelineFileError, UnknownPipelineError
from stageflow.testing import run_virtual

H = "tests.unit.declarative.handlers"
ROOT = Path(__file__).resolve().parents[3]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """a.yaml uses b.yaml's pipeline by name (read after it); c.yaml is a template."""
    write(tmp_path, "a.yaml", f"""\
        name: outer
        category: etl
        description: Runs inner as a subgraph.
        inputs: {{n: {{type: integer, default: 3}}}}
        stages:
          - id: seed
            handler: {H}.numbers
            with: {{n: $inputs.n}}
          - id: nested
            subgraph: inner
            dependencies: [seed]
        """)  # fmt: skip
    write(tmp_path, "b.yaml", f"""\
        name: inner
        stages:
          - id: one
            handler: {H}.start
        """)  # fmt: skip
    write(tmp_path, "c.yaml", f"""\
        name: sized
        parameters: {{size: integer}}
        stages:
          - id: make
            handler: {H}.numbers
            with: {{n: $params.size}}
        """)  # fmt: skip
    write(tmp_path, "notes.txt", "not a pipeline")
    return tmp_path


def test_a_folder_s_files_are_entries_that_find_each_other_by_name(folder: Path) -> None:
    catalog = load_catalog(folder)
    assert catalog.names == ("inner", "outer")  # loaded as named: inner first, for outer
    entry = catalog["outer"]
    assert (entry.category, entry.description) == ("etl", "Runs inner as a subgraph.")
    assert entry.validate_data({}) == {"n": 3}
    result = run_virtual(Engine().run(entry.graph, data={"n": 2}))
    assert result.status is RunStatus.COMPLETED
    assert result["nested.one"].ok
    assert catalog.source("outer") == str(folder / "a.yaml")
    loaded = catalog.loaded("outer")
    assert loaded is not None
    assert loaded.file == str(folder / "a.yaml")


def test_a_template_with_a_required_parameter_is_no_entry(folder: Path) -> None:
    catalog = load_catalog(folder)
    assert catalog.templates == ("sized",)
    assert "sized" not in catalog
    made = catalog.template("sized", {"size": 4})
    assert run_virtual(Engine().run(made.graph))["make"].data["values"] == [0, 1, 2, 3]
    with pytest.raises(ConfigurationError) as caught:
        catalog.template("sized", {"size": "big"})
    assert caught.value.field == "parameters.size"


def test_a_subgraph_may_instantiate_a_template_of_the_catalog(folder: Path) -> None:
    write(folder, "d.yaml", """\
        name: user
        stages:
          - id: five
            subgraph: {pipeline: sized, parameters: {size: 5}}
        """)  # fmt: skip
    result = run_virtual(Engine().run(load_catalog(folder)["user"].graph))
    assert result["five.make"].data["values"] == [0, 1, 2, 3, 4]


def test_a_single_file_and_several_sources(folder: Path, tmp_path_factory: pytest.TempPathFactory
                                           ) -> None:  # fmt: skip
    other = tmp_path_factory.mktemp("other")
    stages = f'[{{"id": "a", "handler": "{H}.start"}}]'
    write(other, "e.json", f'{{"name": "json-one", "stages": {stages}}}')
    catalog = load_catalog(folder / "b.yaml", other)
    assert catalog.names == ("inner", "json-one")


def test_a_pipeline_of_another_catalog_entry_is_unknown_with_a_hint(folder: Path) -> None:
    catalog = load_catalog(folder)
    with pytest.raises(UnknownPipelineError, match="outer"):
        catalog["outr"]
    with pytest.raises(UnknownPipelineError):
        catalog.template("nothing")
    with pytest.raises(UnknownPipelineError):
        catalog.source("nothing")


# ----------------------------------------------------------------------------- errors


def test_a_file_that_does_not_load_is_its_placed_error(folder: Path) -> None:
    write(folder, "z.yaml", "name: broken\nstages:\n  - id: a\n    handlr: x.y\n")
    with pytest.raises(PipelineFileError) as caught:
        load_catalog(folder)
    assert (caught.value.file, caught.value.line) == (str(folder / "z.yaml"), 4)


def test_not_strict_keeps_what_loads_and_lists_the_errors(folder: Path) -> None:
    write(folder, "z.yaml", "name: broken\nstages:\n  - id: a\n    handlr: x.y\n")
    write(folder, "y.yaml", "name: [unparsable\n")
    catalog = load_catalog(folder, strict=False)
    assert catalog.names == ("inner", "outer")
    assert sorted(Path(p).name for p in catalog.errors) == ["y.yaml", "z.yaml"]
    assert isinstance(catalog.errors[str(folder / "z.yaml")], PipelineFileError)


def test_a_name_given_twice_names_both_files(folder: Path) -> None:
    write(folder, "b2.yaml", f"name: inner\nstages:\n  - {{id: a, handler: {H}.start}}\n")
    with pytest.raises(ConfigurationError, match="two pipelines are named 'inner'") as caught:
        load_catalog(folder)
    assert str(folder / "b.yaml") in str(caught.value)
    assert str(folder / "b2.yaml") in str(caught.value)


def test_files_that_include_each_other_are_refused_with_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", "name: ping\nstages:\n  - {id: x, subgraph: pong}\n")
    write(tmp_path, "q.yaml", "name: pong\nstages:\n  - {id: y, subgraph: ping}\n")
    with pytest.raises(ConfigurationError, match="include each other: ping -> pong -> ping"):
        load_catalog(tmp_path)


@pytest.mark.parametrize(
    ("source", "said"),
    [("missing-folder", "not found"), ("notes.txt", "neither a folder nor a pipeline file")],
)
def test_a_source_that_is_no_folder_or_pipeline_file(folder: Path, source: str,
                                                     said: str) -> None:  # fmt: skip
    with pytest.raises(ConfigurationError, match=said) as caught:
        load_catalog(folder / source)
    assert caught.value.field == "sources"


def test_a_source_that_is_no_path() -> None:
    with pytest.raises(ConfigurationError, match="a folder or a file path") as caught:
        load_catalog(42)  # type: ignore[arg-type]
    assert caught.value.value == 42


# ----------------------------------------------------------------------------- entry points

ENTRY_MODULE = f"""
from pathlib import Path

from stageflow import Catalog, Pipeline
from {H} import start

pipeline = Pipeline("py-one").with_stage("a", start)
catalog = Catalog({{"cat-one": Pipeline("c").with_stage("a", start)}})
FOLDER = Path(__file__).parent / "shipped"
ODD = 42


def factory():
    return Pipeline("made").with_stage("a", start)


def broken():
    raise RuntimeError("no luck")
"""


@pytest.fixture
def distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real installed distribution: a .dist-info on sys.path, declaring entry points."""
    (tmp_path / "mypipes_c.py").write_text(ENTRY_MODULE)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    write(shipped, "s.yaml", f"name: shipped-one\nstages:\n  - {{id: a, handler: {H}.start}}\n")
    info = tmp_path / "mypipes_c-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypipes_c\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[stageflow.pipelines]\npy = mypipes_c:pipeline\ncat = mypipes_c:catalog\n"
        "files = mypipes_c:FOLDER\nmade = mypipes_c:factory\n"
        "[other.group]\nbroken = mypipes_c:broken\nodd = mypipes_c:ODD\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_points_give_pipelines_catalogs_folders_and_factories(distribution: Path) -> None:
    catalog = load_catalog(entry_points=True)
    assert set(catalog.names) == {"py-one", "cat-one", "shipped-one", "made"}
    assert "entry point 'py'" in catalog.source("py-one")
    assert run_virtual(Engine().run(catalog["shipped-one"].graph)).status is RunStatus.COMPLETED


def test_an_entry_point_that_fails_is_named(distribution: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"entry point 'broken'.*RuntimeError: no luck"):
        load_catalog(entry_points="other.group")
    lenient = load_catalog(entry_points="other.group", strict=False)
    assert len(lenient) == 0
    said = {where.split()[2]: str(error) for where, error in lenient.errors.items()}
    assert "RuntimeError: no luck" in said["'broken'"]
    assert "not a Pipeline, a StageGraph, a Catalog" in said["'odd'"]


def test_files_and_entry_points_together(folder: Path, distribution: Path) -> None:
    catalog = load_catalog(folder, entry_points=True)
    assert {"outer", "inner", "py-one"} <= set(catalog.names)
    assert isinstance(catalog, FileCatalog)
    assert "templates=['sized']" in repr(catalog)
