"""The example pipeline files run, durably, on a real SQLite file.

examples/declarative/review.yaml (extract -> verify -> report -> publish, or a person's
review first) and examples/declarative/ingest.yaml (a paging loop, a map, a subgraph) are
loaded as a user loads them and run by :class:`stageflow.Engine` on a ``SQLAlchemyStore``.
Each "process" is an engine on a store of its own, closed before the next one opens, so
that a resume knows nothing but the database file. The ingest runs, which back off, run
on virtual time.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stageflow import (
    Engine,
    InputValidationError,
    RunStatus,
    StageKind,
    StageStatus,
)
from stageflow.adapters.declarative import LoadedPipeline, load_pipeline, loads_pipeline
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import PipelineFileError
from stageflow.testing import RecordingSink, run_virtual

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "declarative"

SOUND = (
    "The Golden Gate Bridge opened in 1937 [1]. Its main span is 1280 metres long [2]. "
    "It is painted International Orange."
)
DOUBTFUL = (
    "The Golden Gate Bridge opened in 1937 [1]. It reportedly sways 8 metres in a storm. "
    "Some say it was painted orange by mistake in 1935."
)


def in_process(
    url: str, act: Callable[[Engine], Awaitable[Any]], *, virtual: bool = False, **engine: Any
) -> Any:
    """``act(engine)`` in a "process" of its own: a new store and engine, closed after.

    ``virtual``: on virtual time, for the runs that back off. Only where every stage with a
    timeout is an ``async def``: a plain ``def`` runs in a thread, and virtual time would
    jump to its timeout while the thread works.
    """

    async def main() -> Any:
        store = SQLAlchemyStore(url)
        try:
            return await act(Engine(store=store, **engine))
        finally:
            await store.aclose()

    return run_virtual(main()) if virtual else asyncio.run(main())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


# --------------------------------------------------------------------------- review.yaml


@pytest.fixture(scope="module")
def review() -> LoadedPipeline:
    return load_pipeline(EXAMPLES / "review.yaml")


class TestReviewPipeline:
    def test_the_file_loads_with_what_it_says_about_itself(self, review: LoadedPipeline) -> None:
        assert (review.name, review.version, review.category) == ("review", "1.0", "editorial")
        assert review.tags == ("fact-check", "human-in-the-loop")
        assert review.validate_data({"document": SOUND}) == {
            "document": SOUND,
            "title": "Untitled",
            "threshold": 0.8,
        }

    def test_references_add_the_dependencies_the_file_leaves_out(
        self, review: LoadedPipeline
    ) -> None:
        graph = review.graph
        assert graph.names == (
            "extract", "verify", "report", "gate", "publish", "brief", "review",
            "publish-reviewed",
        )  # fmt: skip
        assert graph["verify"].dependencies == ("extract",)  # from over: $extract.claims
        assert graph["report"].dependencies == ("verify",)  # from with: $verify.results
        assert graph["gate"].dependencies == ("report",)  # from its routes' when:
        assert graph["gate"].kind == StageKind.ROUTE
        assert set(graph["review"].dependencies) == {"brief"}  # from its prompt
        assert set(graph["publish-reviewed"].dependencies) == {"review", "brief"}

    def test_a_document_whose_claims_hold_is_published_without_a_review(
        self, review: LoadedPipeline, url: str
    ) -> None:
        data = {"document": SOUND, "title": "The Golden Gate"}

        result = in_process(url, lambda e: e.run(review.graph, data=data, run_id="sound"))

        assert result.status is RunStatus.COMPLETED
        assert result["gate"].reason == "routed to publish"
        assert result["verify"].data["results"] == [
            {"id": "c1", "score": 0.95, "supported": True, "cited": True},
            {"id": "c2", "score": 0.95, "supported": True, "cited": True},
        ]
        assert result["publish"].data == {
            "url": "https://news.example/the-golden-gate",
            "summary": "The Golden Gate: 2 of 2 claims supported (score 0.95)",
            "reviewer": "auto",
            "note": "",
        }
        assert result["brief"].reason == "not routed by 'gate'"
        assert result["review"].status is StageStatus.SKIPPED
        assert result["publish-reviewed"].status is StageStatus.SKIPPED
        assert review.outputs(result, data) == {
            "title": "The Golden Gate",
            "score": 0.95,
            "claims": 2,
        }

    def test_a_doubtful_document_waits_for_a_reviewer_then_is_published(
        self, review: LoadedPipeline, url: str
    ) -> None:
        data = {"document": DOUBTFUL, "title": "The Golden Gate"}
        graph = review.graph

        waiting = in_process(url, lambda e: e.run(graph, data=data, run_id="doubtful"))

        assert waiting.status is RunStatus.WAITING
        assert waiting["report"].data["score"] == 0.45
        assert waiting["gate"].reason == "routed to brief"
        (pending,) = waiting.waiting_for
        assert pending.name == "review"
        assert pending.prompt == (
            "Publish The Golden Gate? 2 claims do not hold: (1) It reportedly sways 8 metres "
            "in a storm. (2) Some say it was painted orange by mistake in 1935."
        )
        assert pending.schema["required"] == ["approved", "reviewer"]
        assert pending.deadline is not None  # timeout: a week
        assert waiting["publish-reviewed"].status is StageStatus.PENDING

        with pytest.raises(InputValidationError) as refused:  # the schema, from the file
            in_process(url, lambda e: e.send("doubtful", "review", {"approved": True},
                                             graph=graph))  # fmt: skip
        assert refused.value.field == "reviewer"
        in_process(url, lambda e: e.send("doubtful", "review",
                                         {"approved": True, "reviewer": "ada", "note": "sourced"},
                                         graph=graph))  # fmt: skip
        sink = RecordingSink()
        done = in_process(url, lambda e: e.resume("doubtful", graph), sink=sink)

        assert done.status is RunStatus.COMPLETED
        assert done["review"].data == {"approved": True, "reviewer": "ada", "note": "sourced"}
        assert done["publish-reviewed"].data == {
            "url": "https://news.example/the-golden-gate",
            "summary": "The Golden Gate: 1 of 3 claims supported (score 0.45)",
            "reviewer": "ada",
            "note": "sourced",
        }
        assert done["publish"].reason == "not routed by 'gate'"
        for stage in ("extract", "verify", "report", "gate", "brief"):
            assert "stage.restored" in sink.types(stage)  # what ran before the wait
        assert "stage.restored" not in sink.types("publish-reviewed")
        assert review.outputs(done, data) == {"title": "The Golden Gate", "score": 0.45,
                                              "claims": 3}  # fmt: skip

    def test_a_rejected_document_is_not_published(self, review: LoadedPipeline, url: str) -> None:
        graph = review.graph
        data = {"document": DOUBTFUL}
        in_process(url, lambda e: e.run(graph, data=data, run_id="rejected"))
        rejection = {"approved": False, "reviewer": "bo"}
        in_process(url, lambda e: e.send("rejected", "review", rejection, graph=graph))

        done = in_process(url, lambda e: e.resume("rejected", graph))

        assert done.status is RunStatus.COMPLETED
        assert done["publish-reviewed"].status is StageStatus.SKIPPED
        assert done["publish-reviewed"].reason == "condition false"
        assert done["publish"].status is StageStatus.SKIPPED

    def test_the_threshold_input_decides_the_branch(self, review: LoadedPipeline, url: str) -> None:
        data = {"document": DOUBTFUL, "threshold": 0.4}

        result = in_process(url, lambda e: e.run(review.graph, data=data, run_id="lenient"))

        assert result.status is RunStatus.COMPLETED
        assert result["gate"].reason == "routed to publish"
        assert result["publish"].data["url"] == "https://news.example/untitled"


# --------------------------------------------------------------------------- ingest.yaml


@pytest.fixture(scope="module")
def ingest() -> LoadedPipeline:
    return load_pipeline(EXAMPLES / "ingest.yaml")


class TestIngestPipeline:
    def test_it_pages_until_no_page_is_left_then_cleans_and_loads(
        self, ingest: LoadedPipeline, url: str
    ) -> None:
        result = in_process(url, lambda e: e.run(ingest.graph, run_id="nightly"), virtual=True)

        assert result.status is RunStatus.COMPLETED
        assert [result[f"fetch[{i}].page"].data["more"] for i in (1, 2, 3)] == [True, True, False]
        assert "fetch[4].page" not in result.stages
        assert ingest.outputs(result) == {
            "pages": 3,
            "fetched": 7,
            "loaded": 6,
            "batch": result["load.write"].data["batch"],
            "rejected": ["OWL-3"],  # its price is "n/a": collected, not fatal
            "table": "warehouse.products",
        }
        assert result["clean"].data["errors"][0]["key"] == "OWL-3"
        assert result["load.rows"].data["rejected"] == 1

    def test_a_throttled_page_is_retried_after_its_backoff(
        self, ingest: LoadedPipeline, url: str
    ) -> None:
        sink = RecordingSink()
        result = in_process(
            url, lambda e: e.run(ingest.graph, run_id="nightly"), sink=sink, virtual=True
        )

        assert result["fetch[2].page"].attempts == 2  # Unavailable, then the page
        assert [result[f"fetch[{i}].page"].attempts for i in (1, 3)] == [1, 1]
        (retrying,) = [e for e in sink.events if e.type == "stage.retrying"]
        assert retrying.stage == "fetch[2].page"
        assert (retrying.data["error"], retrying.data["delay"]) == ("Unavailable", 0.5)  # base

    def test_a_completed_run_reads_back_from_the_file(
        self, ingest: LoadedPipeline, url: str
    ) -> None:
        first = in_process(url, lambda e: e.run(ingest.graph, run_id="nightly"), virtual=True)
        sink = RecordingSink()

        again = in_process(
            url, lambda e: e.resume("nightly", ingest.graph), sink=sink, virtual=True
        )

        assert ingest.outputs(again) == ingest.outputs(first)
        leaves = ("fetch[1].page", "fetch[2].page", "fetch[3].page", "clean", "load.rows",
                  "load.write")  # fmt: skip
        for stage in leaves:
            assert "stage.restored" in sink.types(stage)  # nothing ran again
        assert "stage.retrying" not in {e.type for e in sink.events}

    def test_inputs_change_the_paging(self, ingest: LoadedPipeline, url: str) -> None:
        data = {"page_size": 10, "table": "staging.products"}

        result = in_process(
            url, lambda e: e.run(ingest.graph, data=data, run_id="big-pages"), virtual=True
        )

        assert ingest.outputs(result, data)["pages"] == 1
        assert ingest.outputs(result, data)["table"] == "staging.products"
        assert result["load.write"].data["table"] == "staging.products"

    def test_the_max_pages_parameter_bounds_the_loop(self, url: str) -> None:
        bounded = load_pipeline(EXAMPLES / "ingest.yaml", parameters={"max_pages": 2})

        result = in_process(url, lambda e: e.run(bounded.graph, run_id="bounded"),
                            fail_fast=False, virtual=True)  # fmt: skip

        assert result.status is RunStatus.FAILED
        assert result["fetch"].status is StageStatus.FAILED
        assert "LoopExhaustedError" in (result["fetch"].reason or "")
        assert result["clean"].status is StageStatus.SKIPPED


# --------------------------------------------------------------------------- the page

PAGE = Path(__file__).resolve().parents[2] / "docs" / "declarative.md"
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>\w*)[^\n]*\n(?P<body>.*?)^(?P=indent)```$",
                    re.M | re.S)  # fmt: skip


def _blocks(text: str) -> list[tuple[str, str]]:
    """(language, dedented source) of each fenced block of a Markdown text, in order."""
    found = []
    for match in _BLOCK.finditer(text):
        indent = match["indent"]
        lines = match["body"].splitlines(keepends=True)
        found.append((match["info"], "".join(line.removeprefix(indent) for line in lines)))
    return found


class TestTheDeclarativePage:
    def test_each_yaml_example_is_the_text_the_python_block_after_it_runs(self) -> None:
        blocks = _blocks(PAGE.read_text(encoding="utf-8"))
        checked = 0
        for i, (language, source) in enumerate(blocks):
            if language != "yaml" or source.startswith(("--8<--", "# yaml-language-server")):
                continue
            following = next(s for lang, s in blocks[i + 1 :] if lang == "python")
            assert source in following, source
            checked += 1
        assert checked >= 10

    def test_the_example_files_are_included_in_the_page_as_they_are(self) -> None:
        text = PAGE.read_text(encoding="utf-8")
        for name in ("review.yaml", "ingest.yaml"):
            assert f'--8<-- "examples/declarative/{name}"' in text


# --------------------------------------------------------------------------- found writing them

H = "examples.declarative.handlers"


class TestWhatWritingTheExamplesPinned:
    def test_a_reference_reads_a_field_of_a_nested_model_a_handler_returned(self) -> None:
        loaded = loads_pipeline(f"""
name: nested
stages:
  - id: extract
    handler: examples.declarative.review_handlers.Claims
    with: {{claims: [{{id: c1, text: t}}], words: 1}}
    output: examples.declarative.review_handlers.Claims
  - id: first
    handler: {H}.echo
    with: {{id: "$extract.claims[0].id"}}
""")
        result = asyncio.run(Engine().run(loaded.graph))

        assert result["first"].data == {"id": "c1"}

    def test_kind_on_a_map_stage_is_refused(self) -> None:
        text = f"""
name: kinds
stages:
  - {{id: words, handler: {H}.split, with: {{text: "a b"}}}}
  - {{id: loud, kind: agent, handler: {H}.upper, over: $words.words, with: {{word: $item}}}}
"""
        with pytest.raises(PipelineFileError) as caught:
            loads_pipeline(text)
        assert (caught.value.field, caught.value.line, caught.value.value) == (
            "stages[1].kind",
            5,
            "agent",
        )

    def test_a_method_called_on_a_reference_is_a_method_call(self) -> None:
        loaded = loads_pipeline(f"""
name: methods
stages:
  - {{id: words, handler: {H}.split, with: {{text: "a b"}}}}
  - id: any
    handler: {H}.echo
    with: {{found: "${{{{ $words.words.exists(w, w == 'b') }}}}"}}
""")
        assert asyncio.run(Engine().run(loaded.graph))["any"].data == {"found": True}
