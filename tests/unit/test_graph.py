"""StageGraph: frozen, validated, with the indices a run needs precomputed."""

from __future__ import annotations

import pytest

from stageflow import EmptyPipelineError, GraphError, Pipeline, StageGraph, StageKind, StageSpec

from ._helpers import noop, run


def _diamond() -> StageGraph:
    #     a
    #    / \
    #   b   c
    #    \ /
    #     d
    return (
        Pipeline("diamond")
        .with_stage("a", noop)
        .with_stage("b", noop, dependencies=("a",))
        .with_stage("c", noop, dependencies=("a",))
        .with_stage("d", noop, dependencies=("b", "c"))
        .build()
    )


def _small() -> StageGraph:
    return (
        Pipeline("flow")
        .with_stage("a", noop)
        .with_stage("b", noop, StageKind.TRANSFORM, dependencies=("a",))
        .with_stage("c", noop, dependencies=("a", "b"), optional=("b",))
        .build()
    )


class TestStageGraph:
    def test_indices_follow_declaration_order(self):
        graph = _diamond()

        assert dict(graph.index) == {"a": 0, "b": 1, "c": 2, "d": 3}
        assert graph.names == ("a", "b", "c", "d")

    def test_successors_predecessors_in_degree_and_roots_of_a_diamond(self):
        graph = _diamond()

        assert graph.successors == ((1, 2), (3,), (3,), ())
        assert graph.predecessors == ((), (0,), (0,), (1, 2))
        assert graph.in_degree == (0, 1, 1, 2)
        assert graph.roots == (0,)

    def test_several_roots_are_listed_in_declaration_order(self):
        graph = (
            Pipeline()
            .with_stage("z", noop)
            .with_stage("m", noop, dependencies=("z",))
            .with_stage("a", noop)
            .build()
        )

        assert graph.roots == (0, 2)

    def test_predecessors_keep_the_declared_dependency_order(self):
        graph = (
            Pipeline()
            .with_stage("a", noop)
            .with_stage("b", noop)
            .with_stage("c", noop, dependencies=("b", "a"))
            .build()
        )

        assert graph.predecessors[2] == (1, 0)
        assert graph["c"].dependencies == ("b", "a")

    def test_a_dependency_may_be_declared_after_its_dependent(self):
        graph = (
            Pipeline()
            .with_stage("report", noop, dependencies=("fetch",))
            .with_stage("fetch", noop)
            .build()
        )

        assert graph.roots == (1,)
        assert graph.successors == ((), (0,))
        assert run(graph).ok

    def test_a_forward_reference_still_runs_the_dependency_first(self):
        order: list[str] = []

        async def record(ctx):
            order.append(ctx.stage)

        graph = (
            Pipeline()
            .with_stage("c", record, dependencies=("b",))
            .with_stage("b", record, dependencies=("a",))
            .with_stage("a", record)
            .build()
        )
        run(graph)

        assert order == ["a", "b", "c"]

    def test_is_frozen(self):
        graph = _diamond()

        for attribute in ("name", "stages", "index", "roots", "in_degree", "brand_new"):
            with pytest.raises(AttributeError, match="frozen"):
                setattr(graph, attribute, None)
        assert graph.name == "diamond"

    def test_attributes_cannot_be_deleted(self):
        graph = _diamond()

        with pytest.raises(AttributeError):
            del graph.name
        assert graph.name == "diamond"

    def test_its_containers_are_immutable(self):
        graph = _diamond()

        with pytest.raises(TypeError):
            graph.index["e"] = 4  # type: ignore[index]
        assert isinstance(graph.stages, tuple)
        assert all(isinstance(s, tuple) for s in graph.successors)
        assert all(isinstance(p, tuple) for p in graph.predecessors)

    def test_cannot_be_constructed_directly(self):
        with pytest.raises(TypeError, match=r"Pipeline\(\.\.\.\)\.build\(\)"):
            StageGraph()

    def test_building_twice_gives_equal_but_distinct_graphs(self):
        pipeline = Pipeline().with_stage("a", noop)

        first, second = pipeline.build(), pipeline.build()

        assert first is not second
        assert first.stages == second.stages

    def test_getitem_returns_the_spec_and_refuses_unknown_names(self):
        graph = _diamond()

        assert isinstance(graph["b"], StageSpec)
        assert graph["b"].name == "b"
        assert graph["b"] is graph.stages[1]
        with pytest.raises(KeyError):
            graph["zzz"]

    def test_contains_len_and_iteration(self):
        graph = _diamond()

        assert "a" in graph
        assert "zzz" not in graph
        assert 0 not in graph
        assert len(graph) == 4
        assert [spec.name for spec in graph] == ["a", "b", "c", "d"]

    def test_descendants_are_every_direct_or_indirect_dependent(self):
        graph = _diamond()

        assert graph.descendants("a") == frozenset({"b", "c", "d"})
        assert graph.descendants("b") == frozenset({"d"})
        assert graph.descendants("d") == frozenset()
        with pytest.raises(KeyError):
            graph.descendants("zzz")

    def test_an_empty_pipeline_is_refused_at_build(self):
        with pytest.raises(EmptyPipelineError) as caught:
            Pipeline("empty").build()

        assert isinstance(caught.value, GraphError)
        assert caught.value.pipeline == "empty"
        assert str(caught.value) == (
            "pipeline 'empty' has no stages: add one with with_stage() before build()"
        )

    def test_an_empty_composition_is_refused_too(self):
        with pytest.raises(EmptyPipelineError):
            Pipeline("a").compose(Pipeline("b")).build()

    def test_repr(self):
        assert repr(_diamond()) == "<StageGraph 'diamond' with 4 stages>"


class TestStageGraphDrawing:
    def test_to_mermaid_draws_optional_dependencies_dotted(self):
        assert _small().to_mermaid() == (
            "flowchart TD\n"
            '    s0["a"]\n'
            '    s1["b"]\n'
            '    s2["c"]\n'
            "    s0 --> s1\n"
            "    s0 --> s2\n"
            "    s1 -.-> s2\n"
        )

    def test_to_dot_draws_optional_dependencies_dashed(self):
        assert _small().to_dot() == (
            'digraph "flow" {\n'
            "    rankdir=LR;\n"
            "    node [shape=box];\n"
            '    "a" [tooltip="work"];\n'
            '    "b" [tooltip="transform"];\n'
            '    "c" [tooltip="work"];\n'
            '    "a" -> "b";\n'
            '    "a" -> "c";\n'
            '    "b" -> "c" [style=dashed];\n'
            "}\n"
        )

    def test_a_graph_without_edges_draws_its_nodes_only(self):
        graph = Pipeline("lone").with_stage("a", noop).build()

        assert graph.to_mermaid() == 'flowchart TD\n    s0["a"]\n'
        assert graph.to_dot() == (
            'digraph "lone" {\n    rankdir=LR;\n    node [shape=box];\n'
            '    "a" [tooltip="work"];\n}\n'
        )
