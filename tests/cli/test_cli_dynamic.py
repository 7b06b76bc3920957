"""What ``stageflow run`` and ``resume`` show of dynamic stages: a map's items counted on
its row (``score 412/1000``), a loop's iteration (``refine iteration 3``), and the stages
of subgraphs and loop iterations on rows of their own."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from stageflow import Engine, Event, Pipeline, StageContext, StageGraph
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.cli import EXIT_COMPLETED, EXIT_FAILED, app
from stageflow.cli._progress import ProgressView
from stageflow.testing import run_virtual

FLOW = """
import os

from stageflow import Pipeline


async def split(ctx):
    return {"docs": ["a", "b", "c"]}


async def score(ctx):
    marker = ctx.data.get("marker")
    if ctx.item == "c" and marker and os.path.exists(marker):
        os.remove(marker)  # fails once: a resume completes it
        raise ValueError("bad c")
    return {"s": ctx.item}


async def fetch(ctx):
    return {"rows": 3}


async def draft(ctx):
    return {"n": ctx.loop.iteration}


etl = Pipeline("etl").with_stage("fetch", fetch).with_stage("load", fetch, dependencies=["fetch"])
body = Pipeline("body").with_stage("draft", draft)
pipeline = (
    Pipeline("dynamic")
    .with_stage("split", split)
    .with_map("score", score, over="split.docs", dependencies=["split"], max_parallel=1,
              key=lambda doc: f"doc-{doc}")
    .with_subgraph("etl", etl)
    .with_loop("refine", body, until=lambda out: out["n"] >= 3, max_iterations=5)
)
"""


pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "dynamic.py"
    path.write_text(FLOW)
    return path


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_flows_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _view(graph: StageGraph, *, lines: bool = False) -> tuple[ProgressView, Console]:
    console = Console(record=True, width=160, force_terminal=False)
    return ProgressView(graph.names, console, lines=lines), console


def _rendered(view: ProgressView, console: Console) -> str:
    console.print(view)
    return console.export_text()


def _rows(text: str) -> list[str]:
    """The stage column of each row of the table."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["stage", "status"])
    rows = []
    for line in lines[start + 1 :]:
        if line.lstrip().startswith("stages"):
            break
        rows.append(line.split()[0])
    return rows


def _bar(text: str) -> str:
    (line,) = [line for line in text.splitlines() if line.lstrip().startswith("stages")]
    return line


def _event(view: ProgressView, type_: str, stage: str, data: dict[str, Any] | None = None) -> None:
    view.try_emit(Event(type_, "r", "p", stage, 1, 1.0, 1, data or {}))


async def _split(ctx: StageContext) -> dict[str, Any]:
    return {"docs": ["a", "b", "c"]}


async def _one(ctx: StageContext) -> dict[str, int]:
    await asyncio.sleep(1)
    loop = ctx.loop
    return {"n": 0 if loop is None else loop.iteration}


# ----------------------------------------------------------------------------- maps


class TestMaps:
    def test_a_maps_row_counts_the_items_that_ended_out_of_all(self) -> None:
        graph = (
            Pipeline("p")
            .with_stage("split", _split)
            .with_map("score", _one, over="split.docs", dependencies=["split"])
        )
        view, console = _view(graph.build())

        _event(view, "stage.started", "score", {"kind": "work"})
        _event(view, "map.started", "score", {"items": 1000})
        for k in range(412):
            _event(view, "item.started", "score", {"item": str(k), "index": k})
            _event(view, "item.completed", "score", {"item": str(k), "index": k, "duration": 1})
        running = _rendered(view, console)
        _event(view, "item.failed", "score", {"item": "412", "index": 412, "reason": "E: x"})
        _event(view, "item.skipped", "score", {"item": "413", "index": 413, "reason": "no"})
        more = _rendered(view, console)

        assert re.search(r"\nscore\s+running 412/1000\s+1\s", running)
        assert re.search(r"\nscore\s+running 414/1000 \(1 failed, 1 skipped\)\s", more)
        assert _rows(more) == ["split", "score"]  # items have no rows
        assert view.stages["score"].progress() == "414/1000 (1 failed, 1 skipped)"

    def test_a_run_counts_its_items_as_they_end_and_the_bar_its_stages(self) -> None:
        seen: list[str] = []
        view, console = _view(Pipeline("p").with_stage("split", _split).build())

        async def score(ctx: StageContext) -> dict[str, Any]:
            await asyncio.sleep(ctx.item_index + 1)
            seen.append(view.stages["score"].progress())
            if ctx.item == "b":
                raise ValueError("bad b")
            return {}

        graph = (
            Pipeline("p")
            .with_stage("split", _split)
            .with_map(
                "score", score, over="split.docs", dependencies=["split"], on_item_error="skip"
            )
            .build()
        )
        view, console = _view(graph)

        result = run_virtual(Engine(sink=view).run(graph))

        assert result.ok
        assert seen == ["0/3", "1/3", "2/3 (1 failed)"]
        text = _rendered(view, console)
        assert re.search(r"\nscore\s+done 3/3 \(1 failed\)\s+1\s+3\.00s", text)
        assert "2/2" in _bar(text)

    def test_piped_a_failed_item_has_a_line_and_the_map_says_how_its_items_ended(
        self,
    ) -> None:
        async def score(ctx: StageContext) -> dict[str, Any]:
            await asyncio.sleep(ctx.item_index + 1)
            if ctx.item == "b":
                raise ValueError("bad b")
            return {}

        graph = (
            Pipeline("p")
            .with_stage("split", _split)
            .with_map(
                "score",
                score,
                over="split.docs",
                dependencies=["split"],
                key=lambda doc: f"doc-{doc}",
                on_item_error="collect",
            )
            .build()
        )
        view, console = _view(graph, lines=True)

        assert run_virtual(Engine(sink=view).run(graph)).ok

        lines = console.export_text().splitlines()
        assert lines == [
            "done      split  1 attempt  0.00s",
            "failed    score[doc-b]  1 attempt  2.00s  ValueError: bad b",
            "done      score  1 attempt  3.00s  3/3 (1 failed)",
        ]


# ----------------------------------------------------------------------------- loops


class TestLoopsAndSubgraphs:
    def test_a_loops_row_shows_the_iteration_running_and_then_how_many_ran(self) -> None:
        shown: list[tuple[str, list[str]]] = []
        holder: dict[str, Any] = {}

        async def draft(ctx: StageContext) -> dict[str, int]:
            await asyncio.sleep(1)
            view, console = holder["view"]
            text = _rendered(view, console)
            (row,) = [line for line in text.splitlines() if line.startswith("refine ")]
            shown.append((" ".join(row.split()[:4]), _rows(text)))
            loop = ctx.loop
            assert loop is not None
            return {"n": loop.iteration}

        body = (
            Pipeline("body")
            .with_stage("draft", draft)
            .with_stage("critique", _one, dependencies=["draft"])
        )
        graph = (
            Pipeline("p")
            .with_loop("refine", body, until=lambda out: out["n"] >= 3, max_iterations=5)
            .build()
        )
        holder["view"] = view, console = _view(graph)

        assert run_virtual(Engine(sink=view).run(graph)).ok

        # while iteration n runs, the table shows its stages only, not the earlier ones'
        assert shown == [
            (f"refine running iteration {n}", ["refine", f"refine[{n}].draft"]) for n in (1, 2, 3)
        ]
        text = _rendered(view, console)
        assert re.search(r"\nrefine\s+done 3 iterations\s+1\s+6\.00s", text)
        assert _rows(text) == ["refine", "refine[3].draft", "refine[3].critique"]
        assert "1/1" in _bar(text)  # the bar counts the graph's own stage
        assert {n for n in view.stages if n.startswith("refine[")} == {  # all kept
            f"refine[{i}].{s}" for i in (1, 2, 3) for s in ("draft", "critique")
        }

    def test_the_stages_of_a_subgraph_appear_below_it_as_stages_do(self) -> None:
        etl = (
            Pipeline("etl")
            .with_stage("fetch", _one)
            .with_stage("load", _one, dependencies=["fetch"])
        )
        graph = (
            Pipeline("p")
            .with_stage("first", _one)
            .with_subgraph("etl", etl, dependencies=["first"])
            .with_stage("last", _one, dependencies=["etl"])
            .build()
        )
        view, console = _view(graph)
        lined, lines = _view(graph, lines=True)

        assert run_virtual(Engine(sink=_Both(view, lined)).run(graph)).ok

        text = _rendered(view, console)
        assert _rows(text) == ["first", "etl", "etl.fetch", "etl.load", "last"]
        assert re.search(r"\netl\.fetch\s+done\s+1\s+1\.00s", text)
        assert "3/3" in _bar(text)
        assert lines.export_text().splitlines() == [
            "done      first  1 attempt  1.00s",
            "done      etl.fetch  1 attempt  1.00s",
            "done      etl.load  1 attempt  1.00s",
            "done      etl    1 attempt  2.00s",
            "done      last   1 attempt  1.00s",
        ]

    def test_a_retried_loop_shows_the_rows_of_the_iteration_it_is_in(self) -> None:
        graph = (
            Pipeline("p")
            .with_loop(
                "refine",
                Pipeline("b").with_stage("draft", _one),
                until=lambda out: False,
                max_iterations=3,
            )
            .build()
        )
        view, console = _view(graph)
        _event(view, "stage.started", "refine")
        for n in (1, 2, 3):
            _event(view, "loop.iteration", "refine", {"iteration": n})
            _event(view, "stage.started", f"refine[{n}].draft")
            _event(view, "stage.completed", f"refine[{n}].draft", {"duration": 1.0})
        _event(view, "attempt.started", "refine", {"attempts": 2})  # the loop starts again
        _event(view, "loop.iteration", "refine", {"iteration": 1})
        _event(view, "stage.started", "refine[1].draft")

        text = _rendered(view, console)

        assert _rows(text) == ["refine", "refine[1].draft"]
        assert re.search(r"\nrefine\[1\]\.draft\s+running\s", text)

    def test_a_map_in_a_subgraph_counts_its_items_on_its_own_row(self) -> None:
        inner = (
            Pipeline("inner")
            .with_stage("split", _split)
            .with_map("score", _one, over="split.docs", dependencies=["split"])
        )
        graph = Pipeline("p").with_subgraph("etl", inner).build()
        view, console = _view(graph)

        assert run_virtual(Engine(sink=view).run(graph)).ok

        assert re.search(r"\netl\.score\s+done 3/3\s", _rendered(view, console))

    def test_an_event_of_a_stage_no_graph_stage_holds_is_ignored(self) -> None:
        view, _ = _view(Pipeline("p").with_stage("a", _one).build())

        for stage in ("zz", "zz.a", "a", "ab.c", "a[1]"):
            _event(view, "stage.started", stage)

        assert set(view.stages) == {"a"}


class _Both:
    def __init__(self, *views: ProgressView) -> None:
        self.views = views

    def try_emit(self, event: Event) -> None:
        for view in self.views:
            view.try_emit(event)

    async def emit(self, event: Event) -> None:
        self.try_emit(event)


# ----------------------------------------------------------------------------- the command


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


class TestTheCommand:
    def test_run_prints_nested_stages_map_and_loop_progress_and_the_items(
        self, url: str, flow: Path
    ) -> None:
        result = invoke("run", f"{flow}:pipeline", "--store", url, "--run-id", "d1")

        assert result.exit_code == EXIT_COMPLETED, result.stdout
        lines = result.stdout.splitlines()
        ends = [line.split()[:2] for line in lines if line.startswith("done ")]
        assert ends[:1] == [["done", "split"]]
        assert {tuple(e) for e in ends} == {
            ("done", name) for name in (
                "split", "score", "etl", "etl.fetch", "etl.load", "refine",
                "refine[1].draft", "refine[2].draft", "refine[3].draft",
            )
        }  # fmt: skip
        (score,) = [line for line in lines if line.startswith("done      score ")]
        assert score.endswith("  3/3")
        (refine,) = [line for line in lines if line.startswith("done      refine ")]
        assert refine.endswith("  3 iterations")
        assert "items of score: 3 completed" in lines
        assert "stages: 9 completed" in lines

    def test_resume_counts_the_items_restored_from_the_store(
        self, url: str, flow: Path, tmp_path: Path
    ) -> None:
        marker = tmp_path / "fail-once"
        marker.write_text("")
        module = _module(flow)

        async def first() -> Any:
            store = SQLAlchemyStore(url)
            try:
                return await Engine(store=store).run(
                    module.pipeline.build(), {"marker": str(marker)}, run_id="d2"
                )
            finally:
                await store.aclose()

        failed = asyncio.run(first())
        assert failed.status.value == "failed"
        assert [i.status.value for i in failed["score"].items] == ["completed"] * 2 + ["failed"]

        result = invoke("resume", "d2", "--store", url, "--target", f"{flow}:pipeline")

        assert result.exit_code == EXIT_COMPLETED, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        (score,) = [line for line in lines if line.startswith("done      score ")]
        assert score.endswith("  3/3 (2 restored)")
        assert "items of score: 3 completed; 2 restored from the store" in lines

    def test_a_failed_item_fails_the_run_and_is_named(self, url: str, flow: Path, tmp_path: Path):
        marker = tmp_path / "fail-once"
        marker.write_text("")

        result = invoke(
            "run", f"{flow}:pipeline", "--store", url, "-d", f"marker={marker}", "--no-fail-fast"
        )

        assert result.exit_code == EXIT_FAILED
        lines = result.stdout.splitlines()
        assert "failed    score[doc-c]  1 attempt  0.00s  ValueError: bad c" in [
            re.sub(r"\d+\.\d\ds", "0.00s", line) for line in lines
        ]
        assert "items of score: 2 completed, 1 failed" in lines
        assert (
            "  score: MapItemError: stage 'score': item 'doc-c' (index 2) failed: ValueError: bad c"
            in lines
        )
