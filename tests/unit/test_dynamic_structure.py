"""The dynamic structure of a graph: in its fingerprint, its drawings and check_storable.

Routes, conditions, maps, loops and subgraphs are part of what a resume must find
unchanged (a graph without any of them keeps the fingerprint of older versions), are
drawn distinctly by to_mermaid()/to_dot(), and the output models of the stages inside
loop and subgraph bodies are checked before a durable run starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from stageflow import (
    CodecError,
    Engine,
    GraphMismatchError,
    Pipeline,
    StageKind,
    StageOutput,
    UnknownRunError,
)
from stageflow._durable import changes, fingerprint, structure
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import run_virtual


async def noop(ctx: Any) -> None:
    return None


def _true(_: Any) -> bool:
    return True


# ------------------------------------------------------------------ graphs


def plain() -> Any:
    return (
        Pipeline("plain")
        .with_stage("a", noop)
        .with_stage("b", noop, StageKind.TRANSFORM, dependencies=("a",))
        .with_stage("c", noop, dependencies=("a",))
        .with_stage("d", noop, dependencies=("c", "b"), optional=("b",))
        .build()
    )


def body(*, extra: bool = False) -> Any:
    pipeline = Pipeline("body").with_stage("draft", noop)
    pipeline = pipeline.with_stage("critique", noop, dependencies=("draft",))
    if extra:
        pipeline = pipeline.with_stage("polish", noop, dependencies=("critique",))
    return pipeline.build()


def etl(*, two_ends: bool = False) -> Any:
    pipeline = (
        Pipeline("etl").with_stage("fetch", noop).with_stage("parse", noop, dependencies=("fetch",))
    )
    if two_ends:
        pipeline = pipeline.with_stage("log", noop, dependencies=("fetch",))
    return pipeline.build()


def dynamic(**change: Any) -> Any:
    """A graph with every dynamic construct; ``change`` alters one declaration."""
    routes = change.get("routes", ("fast", "careful"))
    loop_options: dict[str, Any] = {
        "until": change.get("until", _true),
        "max_iterations": change.get("max_iterations", 5),
        "on_exhausted": change.get("on_exhausted", "fail"),
    }
    if "loop_output" in change:
        loop_options["output_stage"] = change["loop_output"]
    map_options: dict[str, Any] = {
        "over": change.get("over", "split.items"),
        "on_item_error": change.get("on_item_error", "fail"),
        "max_parallel": change.get("max_parallel"),
    }
    if "key" in change:
        map_options["key"] = change["key"]
    audit: dict[str, Any] = {"dependencies": ("split",)}
    if change.get("when", True):
        audit["when"] = change.get("predicate", lambda ctx: True)
    sub = etl(two_ends=change.get("etl_two_ends", False))
    return (
        Pipeline("triage")
        .with_stage("split", noop)
        .with_stage("classify", noop, StageKind.ROUTE, dependencies=("split",), routes=routes)
        .with_stage("fast", noop, dependencies=("classify",))
        .with_map("careful", noop, dependencies=("classify", "split"), **map_options)
        .with_stage("audit", noop, **audit)
        .with_subgraph(
            "etl", sub, dependencies=("fast",), output_stage=change.get("etl_output", "parse")
        )
        .with_loop(
            "refine",
            body(extra=change.get("body_extra", False)),
            dependencies=("etl", "careful"),
            optional=("careful",),
            **loop_options,
        )
        .with_stage("report", noop, dependencies=("refine", "audit"))
        .build()
    )


DYNAMIC_STRUCTURE = {
    "split": [],
    "classify": {"dependencies": ["split"], "routes": ["careful", "fast"]},
    "fast": ["classify"],
    "careful": {
        "dependencies": ["classify", "split"],
        "map": {"over": "split.items", "key": False, "on_item_error": "fail", "max_parallel": None},
    },
    "audit": {"dependencies": ["split"], "when": True},
    "etl": {
        "dependencies": ["fast"],
        "subgraph": {"output_stage": "parse", "body": {"fetch": [], "parse": ["fetch"]}},
    },
    "refine": {
        "dependencies": ["careful", "etl"],
        "loop": {
            "max_iterations": 5,
            "on_exhausted": "fail",
            "output_stage": "critique",
            "body": {"draft": [], "critique": ["draft"]},
        },
    },
    "report": ["audit", "refine"],
}


# ------------------------------------------------------------------ fingerprint


class TestPlainGraphsKeepTheirFingerprint:
    def test_the_structure_and_fingerprint_of_a_plain_graph_are_as_before(self):
        # Both literals were computed by stageflow before dynamic stages reached the
        # fingerprint: runs stored by older versions must still resume.
        shape = structure(plain())

        assert shape == {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
        assert fingerprint(shape) == (
            "sha256:3a03930c6cf69e5ac6c0f9386e2f56d30662595ef2fb627e5be6f9ba175970f7"
        )

    def test_a_plain_run_stores_the_structure_text_of_older_versions(self):
        store = MemoryStore()
        graph = plain()

        async def main():
            await Engine(store=store).run(graph, run_id="r1")
            record = await store.get_run("r1")
            again = await Engine(store=store).resume("r1", plain())
            return record, again

        record, again = run_virtual(main())
        assert record.structure == '{"a":[],"b":["a"],"c":["a"],"d":["b","c"]}'
        assert record.fingerprint == fingerprint(structure(graph))
        assert again.ok


class TestDynamicStructure:
    def test_the_structure_covers_routes_conditions_maps_loops_and_subgraphs(self):
        assert structure(dynamic()) == DYNAMIC_STRUCTURE

    def test_it_is_json_and_compares_equal_once_stored(self):
        shape = structure(dynamic())
        stored = json.loads(json.dumps(shape, separators=(",", ":")))

        assert fingerprint(stored) == fingerprint(shape)
        assert changes(stored, shape) == []

    def test_callables_and_route_order_do_not_change_the_fingerprint(self):
        # A predicate, an until, a key or an over callable is code, not structure: a
        # resume in another process builds new ones.
        first = fingerprint(structure(dynamic(key=str, over=lambda ctx: [1])))
        again = fingerprint(
            structure(
                dynamic(
                    key=lambda item: f"k{item}",
                    over=lambda ctx: [2],
                    predicate=lambda ctx: False,
                    until=lambda output: False,
                    routes=("careful", "fast"),
                )
            )
        )

        assert first == again

    @pytest.mark.parametrize(
        ("change", "said"),
        [
            (
                {"routes": ("fast",)},
                ["stage 'classify' now routes to ['fast'] instead of ['careful', 'fast']"],
            ),
            ({"when": False}, ["stage 'audit' no longer has a condition (when=)"]),
            (
                {"over": "classify.items"},
                ["map 'careful' now maps over 'classify.items' instead of 'split.items'"],
            ),
            (
                {"over": lambda ctx: []},
                ["map 'careful' now maps over a callable instead of 'split.items'"],
            ),
            ({"key": str}, ["map 'careful' now keys its items with key= instead of by index"]),
            ({"on_item_error": "skip"}, ["map 'careful' on_item_error 'skip' instead of 'fail'"]),
            ({"max_parallel": 4}, ["map 'careful' max_parallel 4 instead of None"]),
            ({"max_iterations": 3}, ["loop 'refine' max_iterations 3 instead of 5"]),
            (
                {"on_exhausted": "complete"},
                ["loop 'refine' on_exhausted 'complete' instead of 'fail'"],
            ),
            (
                {"loop_output": "draft"},
                ["loop 'refine' output_stage 'draft' instead of 'critique'"],
            ),
            (
                {"body_extra": True, "loop_output": "critique"},
                ["stage 'refine[*].polish' added"],
            ),
            ({"etl_output": "fetch"}, ["subgraph 'etl' output_stage 'fetch' instead of 'parse'"]),
            ({"etl_two_ends": True}, ["stage 'etl.log' added"]),
        ],
    )
    def test_each_dynamic_change_changes_the_fingerprint_and_is_said(self, change, said):
        before, after = structure(dynamic()), structure(dynamic(**change))

        assert fingerprint(after) != fingerprint(before)
        assert changes(before, after) == said

    def test_a_stage_turned_dynamic_or_plain_is_said(self):
        before = {"a": [], "b": ["a"], "c": ["a"], "d": ["a"]}
        after = structure(
            Pipeline("p")
            .with_stage("a", noop, StageKind.ROUTE, routes=("b",))
            .with_stage("b", noop, dependencies=("a",), when=_true)
            .with_map("c", noop, over="a.items", dependencies=("a",))
            .with_subgraph("d", etl(), dependencies=("a",))
            .build()
        )

        assert changes(before, after) == [
            "stage 'a' now routes to ['b'] (it was no ROUTE stage)",
            "stage 'b' now has a condition (when=)",
            "stage 'c' is now a map",
            "stage 'd' is now a subgraph",
        ]
        assert changes(after, before) == [
            "stage 'a' no longer routes (it routed to ['b'])",
            "stage 'b' no longer has a condition (when=)",
            "stage 'c' is no longer a map",
            "stage 'd' is no longer a subgraph",
        ]

    def test_a_subgraph_turned_loop_and_nested_bodies_are_said(self):
        inner = Pipeline("inner").with_subgraph("etl", etl()).build()
        changed = Pipeline("inner").with_subgraph("etl", etl(two_ends=True), output_stage="parse")

        def outer(graph: Any, *, loop: bool) -> Any:
            if loop:
                return Pipeline("o").with_loop("x", graph, until=_true, max_iterations=2).build()
            return Pipeline("o").with_subgraph("x", graph).build()

        assert changes(
            structure(outer(inner, loop=True)), structure(outer(changed.build(), loop=True))
        ) == ["stage 'x[*].etl.log' added"]
        assert changes(structure(outer(inner, loop=False)), structure(outer(inner, loop=True))) == [
            "stage 'x' is now a loop instead of a subgraph"
        ]


class TestResumeRefusesAChangedDynamicStructure:
    @staticmethod
    def looping(calls: list[str], **loop: Any) -> Any:
        async def draft(ctx):
            calls.append(f"draft{ctx.loop.iteration}")
            await asyncio.sleep(1)
            return {"n": ctx.loop.iteration}

        async def classify(ctx):
            return StageOutput.route("refine")

        inner = Pipeline("body").with_stage("draft", draft).build()
        options = {"until": lambda output: output["n"] >= 4, "max_iterations": 5, **loop}
        return (
            Pipeline("durable")
            .with_stage("classify", classify, StageKind.ROUTE, routes=("refine", "other"))
            .with_loop("refine", inner, dependencies=("classify",), **options)
            .with_stage("other", noop, dependencies=("classify",))
            .build()
        )

    def test_a_changed_loop_is_refused_and_the_same_one_resumes(self):
        store = MemoryStore()
        calls: list[str] = []

        async def main():
            task = asyncio.create_task(Engine(store=store).run(self.looping(calls), run_id="r1"))
            await asyncio.sleep(2.5)  # virtual time: in iteration 3
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            before = await store.stage_records("r1")
            errors = []
            for changed in (
                self.looping(calls, max_iterations=3),
                self.looping(calls, on_exhausted="complete"),
            ):
                with pytest.raises(GraphMismatchError) as info:
                    await Engine(store=store).resume("r1", changed)
                errors.append(info.value)
            after = await store.stage_records("r1")
            resumed = await Engine(store=store).resume("r1", self.looping(calls))
            return before, after, errors, resumed

        before, after, errors, resumed = run_virtual(main())

        assert before == after  # a refused resume writes nothing
        assert errors[0].changes == ("loop 'refine' max_iterations 3 instead of 5",)
        assert errors[1].changes == ("loop 'refine' on_exhausted 'complete' instead of 'fail'",)
        assert "loop 'refine' max_iterations 3 instead of 5" in str(errors[0])
        assert errors[0].run_id == "r1"
        assert resumed.ok
        assert resumed["refine"].data == {"n": 4}
        # iteration 3 was cut midway: it alone runs again, then iteration 4 ends the loop
        assert calls == ["draft1", "draft2", "draft3", "draft3", "draft4"]

    def test_changed_routes_are_refused(self):
        store = MemoryStore()
        graph = self.looping([])
        narrower = (
            Pipeline("durable")
            .with_stage("classify", noop, StageKind.ROUTE, routes=("refine",))
            .with_loop(
                "refine",
                Pipeline("body").with_stage("draft", noop).build(),
                dependencies=("classify",),
                until=_true,
                max_iterations=5,
            )
            .with_stage("other", noop, dependencies=("classify",))
            .build()
        )

        async def main():
            await Engine(store=store).run(graph, run_id="r1")
            with pytest.raises(GraphMismatchError) as info:
                await Engine(store=store).resume("r1", narrower)
            return info.value

        error = run_virtual(main())
        assert error.changes == (
            "stage 'classify' now routes to ['refine'] instead of ['other', 'refine']",
        )


# ------------------------------------------------------------------ drawing


class TestDrawing:
    def test_mermaid_draws_each_dynamic_construct(self):
        assert dynamic().to_mermaid() == (
            "flowchart TD\n"
            '    s0["split"]\n'
            '    s1{"classify"}\n'
            '    s2["fast"]\n'
            '    s3[["careful: map over split.items"]]\n'
            '    s4["audit"]\n'
            '    subgraph s5["etl"]\n'
            '        s5_0["etl.fetch"]\n'
            '        s5_1["etl.parse"]\n'
            "        s5_0 --> s5_1\n"
            "    end\n"
            '    subgraph s6["refine: loop ≤5"]\n'
            '        s6_0["refine.draft"]\n'
            '        s6_1["refine.critique"]\n'
            "        s6_0 --> s6_1\n"
            "    end\n"
            '    s7["report"]\n'
            "    s0 --> s1\n"
            "    s1 -->|route| s2\n"
            "    s1 -->|route| s3\n"
            "    s0 --> s3\n"
            "    s0 -->|when| s4\n"
            "    s2 --> s5\n"
            "    s5 --> s6\n"
            "    s3 -.-> s6\n"
            "    s6 --> s7\n"
            "    s4 --> s7\n"
        )

    def test_dot_draws_each_dynamic_construct(self):
        assert dynamic().to_dot() == (
            'digraph "triage" {\n'
            "    rankdir=LR;\n"
            "    compound=true;\n"
            "    node [shape=box];\n"
            '    "split" [tooltip="work"];\n'
            '    "classify" [tooltip="route", shape=diamond];\n'
            '    "fast" [tooltip="work"];\n'
            '    "careful" [tooltip="work", shape=box3d, label="careful: map over split.items"];\n'
            '    "audit" [tooltip="work"];\n'
            '    subgraph "cluster_etl" {\n'
            '        label="etl";\n'
            '        "etl.fetch" [tooltip="work"];\n'
            '        "etl.parse" [tooltip="work"];\n'
            '        "etl.fetch" -> "etl.parse";\n'
            "    }\n"
            '    subgraph "cluster_refine" {\n'
            '        label="refine: loop ≤5";\n'
            '        "refine.draft" [tooltip="work"];\n'
            '        "refine.critique" [tooltip="work"];\n'
            '        "refine.draft" -> "refine.critique";\n'
            "    }\n"
            '    "report" [tooltip="work"];\n'
            '    "split" -> "classify";\n'
            '    "classify" -> "fast" [label="route"];\n'
            '    "classify" -> "careful" [label="route"];\n'
            '    "split" -> "careful";\n'
            '    "split" -> "audit" [label="when"];\n'
            '    "fast" -> "etl.fetch" [lhead="cluster_etl"];\n'
            '    "etl.parse" -> "refine.draft" [ltail="cluster_etl", lhead="cluster_refine"];\n'
            '    "careful" -> "refine.draft" [style=dashed, lhead="cluster_refine"];\n'
            '    "refine.critique" -> "report" [ltail="cluster_refine"];\n'
            '    "audit" -> "report";\n'
            "}\n"
        )

    @staticmethod
    def nested() -> Any:
        """A loop whose body holds a subgraph, a root with when=, a callable map."""
        inner = (
            Pipeline("inner")
            .with_stage("pick", noop, StageKind.ROUTE, routes=("etl",), when=_true)
            .with_subgraph("etl", etl(), dependencies=("pick",), when=_true)
            .with_map("score", noop, over=lambda ctx: [], dependencies=("etl",))
            .build()
        )
        return (
            Pipeline("nested")
            .with_stage("start", noop)
            .with_loop("refine", inner, dependencies=("start",), until=_true, max_iterations=2)
            .with_stage("end_", noop, dependencies=("refine",))
            .build()
        )

    def test_nested_bodies_are_drawn_inside_each_other_in_mermaid(self):
        assert self.nested().to_mermaid() == (
            "flowchart TD\n"
            '    s0["start"]\n'
            '    subgraph s1["refine: loop ≤2"]\n'
            '        s1_0{"refine.pick (when)"}\n'
            '        subgraph s1_1["refine.etl"]\n'
            '            s1_1_0["refine.etl.fetch"]\n'
            '            s1_1_1["refine.etl.parse"]\n'
            "            s1_1_0 --> s1_1_1\n"
            "        end\n"
            '        s1_2[["refine.score: map"]]\n'
            "        s1_0 -->|route, when| s1_1\n"
            "        s1_1 --> s1_2\n"
            "    end\n"
            '    s2["end_"]\n'
            "    s0 --> s1\n"
            "    s1 --> s2\n"
        )

    def test_nested_bodies_are_drawn_inside_each_other_in_dot(self):
        assert self.nested().to_dot() == (
            'digraph "nested" {\n'
            "    rankdir=LR;\n"
            "    compound=true;\n"
            "    node [shape=box];\n"
            '    "start" [tooltip="work"];\n'
            '    subgraph "cluster_refine" {\n'
            '        label="refine: loop ≤2";\n'
            '        "refine.pick" [tooltip="route", shape=diamond, label="refine.pick (when)"];\n'
            '        subgraph "cluster_refine.etl" {\n'
            '            label="refine.etl";\n'
            '            "refine.etl.fetch" [tooltip="work"];\n'
            '            "refine.etl.parse" [tooltip="work"];\n'
            '            "refine.etl.fetch" -> "refine.etl.parse";\n'
            "        }\n"
            '        "refine.score" [tooltip="work", shape=box3d, label="refine.score: map"];\n'
            '        "refine.pick" -> "refine.etl.fetch" [label="route, when", '
            'lhead="cluster_refine.etl"];\n'
            '        "refine.etl.parse" -> "refine.score" [ltail="cluster_refine.etl"];\n'
            "    }\n"
            '    "end_" [tooltip="work"];\n'
            '    "start" -> "refine.pick" [lhead="cluster_refine"];\n'
            '    "refine.score" -> "end_" [ltail="cluster_refine"];\n'
            "}\n"
        )

    def test_a_plain_graph_draws_as_before(self):
        graph = plain()

        assert graph.to_mermaid() == (
            "flowchart TD\n"
            '    s0["a"]\n    s1["b"]\n    s2["c"]\n    s3["d"]\n'
            "    s0 --> s1\n    s0 --> s2\n    s2 --> s3\n    s1 -.-> s3\n"
        )
        assert "compound" not in graph.to_dot()
        assert "label" not in graph.to_dot()


# ------------------------------------------------------------------ check_storable


@dataclasses.dataclass
class ByNumber:
    names: dict[int, str]


@dataclasses.dataclass
class Named:
    names: dict[str, str]


class TestCheckStorableLooksInsideBodies:
    @staticmethod
    def graph(model: type, wrap: Callable[[Pipeline, Any], Pipeline]) -> Any:
        calls: list[str] = []

        async def stage(ctx):
            calls.append(ctx.stage)
            return {"names": {}}

        inner = Pipeline("inner").with_stage("s", stage, output=model).build()
        return wrap(Pipeline("outer").with_stage("first", stage), inner).build(), calls

    WRAPS = {
        "etl.s": lambda p, g: p.with_subgraph("etl", g, dependencies=("first",)),
        "refine[*].s": lambda p, g: p.with_loop(
            "refine", g, dependencies=("first",), until=_true, max_iterations=2
        ),
        "refine[*].etl.s": lambda p, g: p.with_loop(
            "refine",
            Pipeline("mid").with_subgraph("etl", g).build(),
            dependencies=("first",),
            until=_true,
            max_iterations=2,
        ),
    }

    @pytest.mark.parametrize("name", list(WRAPS))
    def test_an_unstorable_model_in_a_body_is_refused_before_anything_runs(self, name):
        graph, calls = self.graph(ByNumber, self.WRAPS[name])
        store = MemoryStore()

        with pytest.raises(CodecError) as caught:
            run_virtual(Engine(store=store).run(graph, run_id="r1"))

        error = caught.value
        assert error.stage == name
        assert error.field == f"the output of stage {name!r}['names']"
        assert "dict[int, str]" in str(error)
        assert calls == []
        with pytest.raises(UnknownRunError):
            run_virtual(store.get_run("r1"))

    @pytest.mark.parametrize("name", list(WRAPS))
    def test_a_storable_model_in_a_body_runs(self, name):
        graph, calls = self.graph(Named, self.WRAPS[name])

        result = run_virtual(Engine(store=MemoryStore()).run(graph, run_id="r1"))

        assert result.ok
        assert len(calls) == 2
