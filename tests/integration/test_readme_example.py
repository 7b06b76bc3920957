"""The README's example, end to end (a module-level copy: keep it in sync with README.md)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from stageflow import Engine, Pipeline, StageKind, StageOutput
from stageflow.testing import RecordingSink

_COUNT_THREADS: list[threading.Thread] = []


async def fetch(ctx):  # a plain async function is a stage
    return {"pages": 3}  # a Mapping means StageOutput.ok(**mapping)


class Summarize:  # a class with execute() is a stage too
    async def execute(self, ctx):
        pages = ctx.inputs.get_from("fetch", "pages", default=0)
        return StageOutput.ok(summary=f"{pages} pages on {ctx.data['topic']}")


def count_words(ctx):  # a plain def runs in a worker thread
    _COUNT_THREADS.append(threading.current_thread())
    return {"words": len(ctx.inputs.get_from("summarize", "summary").split())}


pipeline = (
    Pipeline("research")
    .with_stage("fetch", fetch, StageKind.WORK)
    .with_stage("summarize", Summarize, StageKind.TRANSFORM, dependencies=("fetch",))
    .with_stage("count", count_words, dependencies=("summarize",))
)


class TestReadmeExample:
    def test_runs_as_the_readme_says(self):
        graph = pipeline.build()  # frozen, validated StageGraph

        result = asyncio.run(Engine(max_parallel=8).run(graph, data={"topic": "owls"}))

        assert result.status == "completed"
        assert result["summarize"].data["summary"] == "3 pages on owls"
        assert result["count"].data == {"words": 4}
        assert _COUNT_THREADS
        assert _COUNT_THREADS[-1] is not threading.main_thread()

    def test_events_follow_the_chain(self):
        sink = RecordingSink()

        result = asyncio.run(Engine(sink=sink).run(pipeline.build(), data={"topic": "owls"}))

        assert result.ok
        assert [(e.type, e.stage) for e in sink.events] == [
            ("run.started", None),
            ("stage.started", "fetch"),
            ("stage.completed", "fetch"),
            ("stage.started", "summarize"),
            ("stage.completed", "summarize"),
            ("stage.started", "count"),
            ("stage.completed", "count"),
            ("run.completed", None),
        ]

    def test_the_readme_still_contains_this_example(self):
        readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")

        for line in (
            "return StageOutput.ok(summary=f\"{pages} pages on {ctx.data['topic']}\")",
            '.with_stage("summarize", Summarize, StageKind.TRANSFORM, dependencies=("fetch",))',
            'assert result["summarize"].data["summary"] == "3 pages on owls"',
        ):
            assert line in readme
